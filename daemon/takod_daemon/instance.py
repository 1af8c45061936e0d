"""Single instance per socket: an exclusive flock taken before any unlink or bind.

anyio's unix listener silently unlinks a live socket at its path, so a second
daemon must lose the lock before it gets anywhere near the socket file.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from takod.paths import DirProblem, ensure_private_dir


class AlreadyRunning(Exception):
    def __init__(self, pid: int | None):
        super().__init__(f"takod is already running (pid {pid})" if pid else "takod is already running")
        self.pid = pid


class UnsafeDirectory(Exception):
    def __init__(self, problem: DirProblem):
        super().__init__(f"refusing to start: socket directory {problem}")
        self.problem = problem


class InstanceLock:
    """Holds ``<socket>.lock`` (with our pid in it) for the daemon's lifetime."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def acquire(self, wait: float = 0.0) -> None:
        """Take the lock, retrying for up to ``wait`` seconds while another daemon holds it."""
        problem = ensure_private_dir(self.path.parent)
        if problem is not None:
            raise UnsafeDirectory(problem)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.1)
                    continue
                pid = _read_pid(fd)
                os.close(fd)
                raise AlreadyRunning(pid) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays for the next start
            self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    except (ValueError, OSError):
        return None
