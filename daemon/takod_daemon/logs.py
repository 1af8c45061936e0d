"""Structured logging: readable on a terminal, JSON lines when detached.

Secrets never reach a log line: a redaction processor masks values under
secret-bearing keys and secret-looking substrings anywhere (messages and
tracebacks included), and tracebacks are rendered without local variables.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

import structlog

from .credentials.files import open_private_append
from .redact import redact_text, redact_value

MAX_LOG_BYTES = 10 * 1024 * 1024


class RotatingFileLogger:
    """Appends lines to a file, rotating to ``<file>.1`` past ``max_bytes``."""

    def __init__(self, path: Path, max_bytes: int = MAX_LOG_BYTES):
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()  # stdlib loggers may write from worker threads
        self._file = self._open()

    def _open(self) -> TextIO:
        # Never through a symlink or into a hard-linked file (raises FileProblem).
        return os.fdopen(open_private_append(self.path), "a", encoding="utf-8", buffering=1)

    def write(self, message: str) -> None:
        with self._lock:
            self._file.write(message + "\n")
            if self._file.tell() > self.max_bytes:
                self._file.close()
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))
                self._file = self._open()

    msg = debug = info = warning = warn = error = err = critical = exception = fatal = write


class StreamLogger:
    """Writes lines to a text stream (a terminal or the journal's stdout)."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, message: str) -> None:
        self.stream.write(message + "\n")
        self.stream.flush()

    msg = debug = info = warning = warn = error = err = critical = exception = fatal = write


def _redact(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    for key, value in list(event.items()):
        if key == "exception" and isinstance(value, str):
            event[key] = redact_text(value)
        elif key != "event":
            event[key] = redact_value(value, key)
        elif isinstance(value, str):
            event[key] = redact_text(value)
    return event


_JOURNAL_PRIORITY = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}


def _journal_prefix(_logger: Any, name: str, line: str) -> str:
    return f"<{_JOURNAL_PRIORITY.get(name, 6)}>{line}"


class _StdlibBridge(logging.Handler):
    """Third-party stdlib loggers (watchfiles, httpx, keyring) go through the same processors."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            logger = structlog.get_logger(record.name)
            if record.exc_info:  # e.g. asyncio's "Exception in callback": the traceback is the point
                logger.log(record.levelno, record.getMessage(), exc_info=record.exc_info)
            else:
                logger.log(record.levelno, record.getMessage())
        except Exception:  # logging must never take the daemon down
            pass


def configure(mode: str, state_dir: Path | None = None, level: str = "info") -> None:
    """``mode``: ``console`` (terminal), ``json`` (file in ``state_dir``), ``journal`` (stdout, <N> prefixes)."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,  # plain traceback text: never locals
        _redact,
    ]
    if mode == "console":
        renderer: Any = structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty() and not os.environ.get("NO_COLOR"),
            exception_formatter=structlog.dev.plain_traceback,
        )
        factory: Any = lambda *_: StreamLogger(sys.stderr)  # noqa: E731
        processors = shared + [renderer]
    elif mode == "journal":
        factory = lambda *_: StreamLogger(sys.stdout)  # noqa: E731
        processors = shared + [structlog.processors.JSONRenderer(), _journal_prefix]
    else:
        assert state_dir is not None
        file_logger = RotatingFileLogger(state_dir / "daemon.log")
        factory = lambda *_: file_logger  # noqa: E731
        processors = shared + [structlog.processors.JSONRenderer()]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    root = logging.getLogger()
    root.handlers[:] = [_StdlibBridge()]
    root.setLevel(logging.WARNING)
