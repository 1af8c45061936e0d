"""pi's auth.json lock, taken exactly the way pi takes it (proper-lockfile 4.1.2).

The lock is a *directory* ``<auth.json>.lock`` created with ``mkdir`` and removed
with ``rmdir``; ownership is nothing but the directory's mtime, which the holder
keeps fresh. There is no PID file and no flock, and a plain file at that path
would break pi for good, so we never create one and never delete one.

Rules we follow (research pi-auth.md §3.3, §10):

* Lock path: ``realpath(auth.json) + ".lock"`` (current pi, and legacy pi's
  refresh lock). Legacy pi's startup lock uses the un-resolved path, so when
  ``auth.json`` is reached through a symlink we hold both, realpath first.
* A competitor's lock is broken only when its mtime is older than 30 s, pi's
  longest stale threshold: a live pi lock (touched every 5 s or 15 s) is never
  broken.
* While held, our mtime is re-touched every few seconds, well inside the 10 s
  after which pi's startup locker would consider it stale.
* Hold it as briefly as possible: a legacy pi that starts while the lock is held
  for more than ~0.2 s comes up without credentials (#1871).
* A takod killed while holding the lock leaves the directory behind, and pi
  (and we) would wait 30 s for it to go stale. With :func:`keep_records` the
  daemon notes each lock it holds (path, inode, the mtime it last gave it, its
  pid); the next daemon removes at once a directory that is still exactly as the
  dead one left it (:func:`reclaim_own`): same inode, same mtime to the
  nanosecond, so no pi has touched or re-made it since.

Everything here is blocking; the daemon calls it from worker threads.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import stat
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

# pi's async (refresh) lockers call a lock stale after 30 s, its sync ones after
# 10 s. Breaking only after 30 s never breaks a live lock of either kind.
STALE_AFTER_S = 30.0
# Must stay well below pi's 10 s sync staleness, or a starting pi steals our lock.
TOUCH_EVERY_S = 2.5
DEFAULT_TIMEOUT_S = 10.0
_FIRST_BACKOFF_S = 0.01
_MAX_BACKOFF_S = 1.0


class LockError(Exception):
    """pi's lock could not be taken or kept. ``reason`` is a stable snake_case word."""

    def __init__(self, lock_dir: Path, reason: str, detail: str):
        super().__init__(f"{lock_dir}: {detail}")
        self.lock_dir = lock_dir
        self.reason = reason
        self.detail = detail


class LockBusy(LockError):
    """Someone else holds the lock (and it is not stale)."""


class LockTimeout(LockBusy):
    """Someone else held the lock for longer than we were willing to wait."""


class LockNotDirectory(LockError):
    """Something other than a directory sits at the lock path. We leave it alone:
    a person has to remove it (pi itself fails permanently while it is there)."""


class LockLost(LockError):
    """Our lock directory vanished or someone else re-touched it: we no longer own it."""


def lock_dirs(auth_path: Path) -> list[Path]:
    """The lock directories pi uses for ``auth_path``, in the order we take them."""
    real = os.path.realpath(auth_path)
    literal = os.path.abspath(auth_path)  # node's path.resolve: absolute, symlinks kept
    dirs = [Path(real + ".lock")]
    if literal != real:
        dirs.append(Path(literal + ".lock"))
    return dirs


# --- records of the locks this process holds ----------------------------------------------

_records: Path | None = None


def keep_records(directory: Path | None) -> None:
    """Note every lock taken from now on in ``directory`` (None: stop noting)."""
    global _records
    if directory is not None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    _records = directory


def _record_path(directory: Path, lock_dir: Path) -> Path:
    return directory / (hashlib.sha256(str(lock_dir).encode()).hexdigest()[:16] + ".json")


def _record(lock_dir: Path, mtime_ns: int) -> None:
    directory = _records
    if directory is None:
        return
    try:
        st = os.lstat(lock_dir)
        doc = {"lock": str(lock_dir), "dev": st.st_dev, "ino": st.st_ino, "mtime_ns": mtime_ns, "pid": os.getpid()}
        path = _record_path(directory, lock_dir)
        tmp = path.with_suffix(f".{threading.get_ident()}.new")
        # O_NOFOLLOW: a link planted in the state dir never redirects this write.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(doc))
        os.replace(tmp, path)  # whole or absent: a half record is never read
    except OSError:
        pass  # without a record the lock just goes stale the slow way


def _forget(lock_dir: Path) -> None:
    if _records is not None:
        try:
            _record_path(_records, lock_dir).unlink()
        except OSError:
            pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reclaim_own(directory: Path) -> list[Path]:
    """Remove the lock directories a dead takod left behind, exactly as it left
    them; forget every record of a dead process. Returns the locks removed."""
    removed: list[Path] = []
    try:
        entries = sorted(directory.glob("*.json"))
    except OSError:
        return removed
    for path in entries:
        try:
            doc = json.loads(path.read_text())
            lock_dir, pid = Path(doc["lock"]), int(doc["pid"])
            if pid == os.getpid() or _pid_alive(pid):
                continue  # a live holder (another daemon with this state dir): its lock is its own
            st = os.lstat(lock_dir)
            if (stat.S_ISDIR(st.st_mode) and (st.st_dev, st.st_ino) == (doc["dev"], doc["ino"])
                    and st.st_mtime_ns == doc["mtime_ns"]):
                os.rmdir(lock_dir)
                removed.append(lock_dir)
        except (OSError, ValueError, KeyError, TypeError):
            pass  # gone, re-made by someone else, or a record we cannot read: leave the lock be
        try:
            path.unlink()
        except OSError:
            pass
    for half in directory.glob("*.new"):  # a record being written when the process died
        try:
            half.unlink()
        except OSError:
            pass
    return removed


class HeldPiLock:
    """A held pi lock. Keeps its directories' mtimes fresh from a background
    thread and can prove, just before a write, that they are still ours."""

    def __init__(self, owned: dict[Path, int], touch_every: float):
        self._owned = owned  # lock dir -> the mtime (ns) we last gave it
        self._guard = threading.Lock()
        self._lost: LockLost | None = None
        self._stop = threading.Event()
        self._toucher = threading.Thread(
            target=self._touch_loop, args=(touch_every,), name="pi-lock-touch", daemon=True
        )
        self._toucher.start()

    @property
    def dirs(self) -> list[Path]:
        """The lock directories held, in acquisition order."""
        return list(self._owned)

    def ensure_held(self) -> None:
        """Raise ``LockLost`` unless every lock directory is still ours. Call it
        right before writing the file the lock guards."""
        with self._guard:
            if self._lost is not None:
                raise self._lost
            for lock_dir, mtime_ns in self._owned.items():
                problem = _ownership_problem(lock_dir, mtime_ns)
                if problem:
                    self._lost = LockLost(lock_dir, "lost", problem)
                    raise self._lost

    def _touch_loop(self, every: float) -> None:
        while not self._stop.wait(every):
            with self._guard:
                if self._stop.is_set() or self._lost is not None:
                    return
                for lock_dir, mtime_ns in self._owned.items():
                    problem = _ownership_problem(lock_dir, mtime_ns)
                    if problem:
                        self._lost = LockLost(lock_dir, "lost", problem)
                        return
                    try:
                        self._owned[lock_dir] = _touch(lock_dir)
                        _record(lock_dir, self._owned[lock_dir])
                    except OSError as exc:
                        self._lost = LockLost(lock_dir, "lost", f"cannot touch ({exc.strerror})")
                        return

    def release(self) -> None:
        """Stop touching and remove every lock directory that is still ours."""
        self._stop.set()
        self._toucher.join()
        with self._guard:
            for lock_dir, mtime_ns in reversed(self._owned.items()):
                # A directory that is no longer ours belongs to whoever re-took it.
                if _ownership_problem(lock_dir, mtime_ns) is None:
                    _remove_quietly(lock_dir)
                _forget(lock_dir)


@contextmanager
def pi_lock(
    auth_path: Path,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    touch_every: float = TOUCH_EVERY_S,
) -> Iterator[HeldPiLock]:
    """Hold pi's lock on ``auth_path`` for the ``with`` body.

    Waits up to ``timeout`` seconds (0 = one attempt) with jittered exponential
    backoff, then raises ``LockTimeout`` (or ``LockBusy`` for a single attempt).
    ``LockNotDirectory`` if a non-directory is in the way, ``LockError`` with
    reason ``unavailable`` if the directory cannot be created at all (missing or
    read-only parent). The parent directory of ``auth_path`` must exist.
    """
    deadline = time.monotonic() + timeout
    owned: dict[Path, int] = {}
    try:
        for lock_dir in lock_dirs(auth_path):
            owned[lock_dir] = _acquire(lock_dir, deadline, timeout)
    except BaseException:
        for lock_dir in reversed(owned):
            _remove_quietly(lock_dir)
            _forget(lock_dir)
        raise
    held = HeldPiLock(owned, touch_every)
    try:
        yield held
    finally:
        held.release()


@contextmanager
def pi_locks(auth_paths: Iterable[Path], *, timeout: float = DEFAULT_TIMEOUT_S) -> Iterator[dict[Path, HeldPiLock]]:
    """Hold pi's lock on every one of ``auth_paths`` at once, for the ``with``
    body: {path as given: its held lock}. Taken in one global order (by lock
    directory), so two holders of overlapping sets never wait on each other in
    a circle; ``timeout`` bounds the whole wait."""
    deadline = time.monotonic() + timeout
    by_dir: dict[Path, list[Path]] = {}
    for path in dict.fromkeys(auth_paths):
        by_dir.setdefault(lock_dirs(path)[0], []).append(path)
    held: dict[Path, HeldPiLock] = {}
    with ExitStack() as stack:
        for lock_dir in sorted(by_dir):
            paths = by_dir[lock_dir]
            lock = stack.enter_context(pi_lock(paths[0], timeout=max(0.0, deadline - time.monotonic())))
            held.update(dict.fromkeys(paths, lock))
        yield held


def _acquire(lock_dir: Path, deadline: float, timeout: float) -> int:
    backoff = _FIRST_BACKOFF_S
    while True:
        mtime_ns = _try_acquire(lock_dir)
        if mtime_ns is not None:
            _record(lock_dir, mtime_ns)
            return mtime_ns
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            if timeout <= 0:
                raise LockBusy(lock_dir, "busy", "held by another process")
            raise LockTimeout(lock_dir, "timeout", f"held by another process for more than {timeout:g} s")
        time.sleep(min(remaining, backoff * random.uniform(1.0, 2.0)))
        backoff = min(backoff * 2, _MAX_BACKOFF_S)


def _try_acquire(lock_dir: Path) -> int | None:
    """One attempt, as proper-lockfile makes it: mkdir; on EEXIST break the lock
    only if stale, then mkdir once more. The new mtime (ns), or None if busy."""
    for may_break in (True, False):
        try:
            os.mkdir(lock_dir, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise LockError(lock_dir, "unavailable", f"cannot create lock ({exc.strerror})") from None
        else:
            try:
                return _touch(lock_dir)
            except OSError as exc:
                _remove_quietly(lock_dir)
                raise LockError(lock_dir, "unavailable", f"cannot touch lock ({exc.strerror})") from None
        try:
            st = os.lstat(lock_dir)
        except FileNotFoundError:
            continue  # released meanwhile: try again, without breaking anything
        if not stat.S_ISDIR(st.st_mode):
            raise LockNotDirectory(
                lock_dir, "not_a_directory", "is not a directory; pi cannot lock while it is there, remove it"
            )
        if not may_break or st.st_mtime >= time.time() - STALE_AFTER_S:
            return None
        try:
            os.rmdir(lock_dir)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise LockError(lock_dir, "unavailable", f"cannot remove stale lock ({exc.strerror})") from None
    return None


def _touch(lock_dir: Path) -> int:
    """Set the directory's mtime to now; return it as the filesystem stored it."""
    os.utime(lock_dir)
    return os.stat(lock_dir).st_mtime_ns


def _ownership_problem(lock_dir: Path, mtime_ns: int) -> str | None:
    try:
        st = os.lstat(lock_dir)
    except FileNotFoundError:
        return "lock directory was removed by someone else"
    except OSError as exc:
        return f"cannot check lock ({exc.strerror})"
    if not stat.S_ISDIR(st.st_mode) or st.st_mtime_ns != mtime_ns:
        return "lock was taken over by someone else"
    return None


def _remove_quietly(lock_dir: Path) -> None:
    # Release must not mask the error that ended the critical section; a lock we
    # fail to remove goes stale and is reclaimed after STALE_AFTER_S.
    try:
        os.rmdir(lock_dir)
    except OSError:
        pass
