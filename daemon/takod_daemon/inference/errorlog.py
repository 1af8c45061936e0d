"""``<ws>/.tako/logs/error.log``: inference failures as JSON lines, masked, size-capped.

Takobot's error log grew without bound and held raw output; this one keeps
one JSON object per failure, secrets masked, and rotates to ``error.log.1``
past a cap so it never fills a disk.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import structlog

from ..credentials.files import FileProblem, check_dirs, open_private_append
from ..redact import redact_value

log = structlog.get_logger("takod.errorlog")

MAX_BYTES = 1024 * 1024
_lock = threading.Lock()


def error_log_path(workspace: Path) -> Path:
    return workspace / ".tako" / "logs" / "error.log"


def append(workspace: Path, record: dict[str, Any], max_bytes: int = MAX_BYTES) -> None:
    """Append one failure record (blocking; call from a worker thread)."""
    path = error_log_path(workspace)
    line = msgspec.json.encode({"ts": time.time(), **redact_value(record)}) + b"\n"
    with _lock:
        try:
            check_dirs(workspace, path)
        except FileProblem as exc:
            log.warning("not writing the workspace error log", path=str(path), error=exc.detail)
            return
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            if os.lstat(path).st_size + len(line) > max_bytes:
                os.replace(path, path.with_name(path.name + ".1"))
        except FileNotFoundError:
            pass
        try:
            fd = open_private_append(path)  # never through a planted symlink or hard link
        except FileProblem as exc:
            log.warning("not writing the workspace error log", path=str(path), error=exc.detail)
            return
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
