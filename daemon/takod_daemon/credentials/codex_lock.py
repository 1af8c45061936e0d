"""Codex's auth.json locks, taken the way Codex 0.169 takes them.

Seen with strace on the real codex 0.169 (codex 0.160 takes no lock and
rewrites ``auth.json`` in place): after its token request, Codex commits a
refresh under two ``flock(LOCK_EX)`` locks on plain files in ``$CODEX_HOME``:
first ``auth.lock`` (blocking), then ``auth.json.lock`` (non-blocking), then
re-reads ``auth.json``, writes ``.auth-XXXXXX`` and renames it over
``auth.json``. Taking both, in that order, makes a Codex commit wait for
ours. Codex sends its own request *before* locking, so the lock cannot stop
Codex from posting a token it read earlier; refreshing well before Codex's
5-minute window is what keeps Codex from needing to (docs/refresh.md).

Blocking: the daemon calls it from worker threads.
"""

from __future__ import annotations

import errno
import fcntl
import os
import random
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from takod_daemon.credentials.pi_lock import LockError, LockTimeout

LOCK_FILES = ("auth.lock", "auth.json.lock")  # Codex's order
_FIRST_BACKOFF_S = 0.01
_MAX_BACKOFF_S = 0.5


def lock_paths(codex_home: Path) -> list[Path]:
    """The lock files Codex flocks for ``codex_home``, in the order it takes them."""
    return [codex_home / name for name in LOCK_FILES]


@contextmanager
def codex_lock(codex_home: Path, *, timeout: float) -> Iterator[None]:
    """Hold Codex's auth locks for the ``with`` body; waits up to ``timeout``
    seconds, then raises ``LockTimeout``. ``LockError`` (reason ``unavailable``)
    when a lock file cannot be opened (missing or read-only ``codex_home``)."""
    deadline = time.monotonic() + timeout
    with ExitStack() as stack:
        for path in lock_paths(codex_home):
            fd = _open(path)
            stack.callback(os.close, fd)  # closing the descriptor releases the flock
            _flock(fd, path, deadline, timeout)
        yield


def _open(path: Path) -> int:
    try:
        # O_NOFOLLOW: a symlink planted at the lock path never makes us create a file elsewhere.
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise LockError(path, "unavailable", f"cannot open Codex's lock ({exc.strerror})") from None


def _flock(fd: int, path: Path, deadline: float, timeout: float) -> None:
    backoff = _FIRST_BACKOFF_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise LockError(path, "unavailable", f"cannot lock ({exc.strerror})") from None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise LockTimeout(path, "timeout", f"held by another process for more than {timeout:g} s")
        time.sleep(min(remaining, backoff * random.uniform(1.0, 2.0)))
        backoff = min(backoff * 2, _MAX_BACKOFF_S)
