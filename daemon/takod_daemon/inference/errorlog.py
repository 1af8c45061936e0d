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

from ..redact import redact_value

MAX_BYTES = 1024 * 1024
_lock = threading.Lock()


def error_log_path(workspace: Path) -> Path:
    return workspace / ".tako" / "logs" / "error.log"


def append(workspace: Path, record: dict[str, Any], max_bytes: int = MAX_BYTES) -> None:
    """Append one failure record (blocking; call from a worker thread)."""
    path = error_log_path(workspace)
    line = msgspec.json.encode({"ts": time.time(), **redact_value(record)}) + b"\n"
    with _lock:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            if path.stat().st_size + len(line) > max_bytes:
                os.replace(path, path.with_name(path.name + ".1"))
        except FileNotFoundError:
            pass
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
