"""Watch a changing set of files through their directories.

Why directories: an OS watch on a file follows its inode, so it goes dead after
the first atomic save (temp file + rename), and a path that does not exist
cannot be watched at all. So each file is watched through its parent directory,
filtered by exact name. A missing directory is watched through its nearest
existing ancestor, and the watch is re-armed when the missing child appears or a
watched directory goes away (the OS drops a deleted directory's watch).

Reports are hints: the consumer re-reads the reported files and decides for
itself what, if anything, changed. Under ``WATCHFILES_FORCE_POLLING``,
watchfiles compares whole-second mtimes, so changes less than a second apart
can show up as one, or a same-second rewrite not at all.

On Linux the directories are watched with inotify on the event loop itself
(``Inotify``): watchfiles' worker thread sleeps ``step`` ms and takes the GIL
every step even when nothing changes, 20 wake-ups a second in an idle daemon
(bench/idle.py). Elsewhere, or when polling is forced, watchfiles does it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import anyio
import structlog
from anyio.abc import TaskStatus
from anyio.lowlevel import checkpoint_if_cancelled
from watchfiles import Change, awatch

log = structlog.get_logger("takod.watch")

OnChange = Callable[[frozenset[Path]], Awaitable[None]]

# Shutdown goes through awatch's stop_event, so this only bounds how long the
# worker thread can outlive an event loop that vanished without cancelling us.
RUST_TIMEOUT_MS = 1000

# inotify(7): what a watched directory reports, and about itself.
IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x2, 0x4, 0x8
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
IN_DELETE_SELF, IN_MOVE_SELF = 0x400, 0x800
IN_Q_OVERFLOW, IN_IGNORED, IN_ONLYDIR = 0x4000, 0x8000, 0x01000000
IN_NONBLOCK, IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
DIR_MASK = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
            | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of NUL-padded name


@dataclass(frozen=True)
class WatchPlan:
    """Which directories to watch for a set of files, and what events there mean.

    ``reports`` maps an event path to the files it may have changed: a file maps
    to itself, a missing child directory on the way to files maps to them, and a
    watched root maps to every file under it (losing it takes them along).
    ``direct`` are the files whose own directory is watched; ``missing`` the
    not-yet-existing children of roots that lead to the other files.
    """

    roots: frozenset[Path]
    direct: frozenset[Path]
    missing: frozenset[Path]
    reports: Mapping[Path, frozenset[Path]]

    def wants(self, change: Change, path: str) -> bool:
        """watchfiles filter: keep only events on paths this plan cares about."""
        return Path(path) in self.reports

    def interpret(self, change: Change, path: Path) -> tuple[frozenset[Path], bool]:
        """What an event on a wanted path means: the files it may have changed,
        and whether the directories to watch have changed (re-plan and re-arm).

        A root merely ``modified`` means nothing: polling reports that for every
        change inside it. Otherwise a root went away, taking its files and its
        OS watch with it. A missing child appearing is a step towards its files.
        """
        if path in self.roots:
            if change == Change.modified:
                return frozenset(), False
            return self.reports[path], True
        return self.reports[path], path in self.missing


Placement = tuple[Path, "Path | None"]  # a file's watched root, and the missing child of it on the way (if any)


def plan_watch(
    files: Iterable[Path], is_dir: Callable[[str], bool] = os.path.isdir,
    known: dict[str, Path | None] | None = None, placed: dict[Path, Placement] | None = None,
) -> WatchPlan:
    """Plan the watch for absolute, normalised ``files`` given which directories exist.

    Each file is watched through the nearest existing directory on its way up.
    Runs on the event loop whenever the watched set changes (a workspace loads),
    so the walk is on strings, and the OS is asked once per directory. ``known``
    (directory -> its Path if it exists, else None) and ``placed`` (file -> its
    placement) carry those answers from one plan to the next while the caller
    knows the directories have not changed.
    """
    known = {} if known is None else known
    placed = {} if placed is None else placed

    def existing(directory: str) -> Path | None:
        if directory not in known:
            known[directory] = Path(directory) if is_dir(directory) else None
        return known[directory]

    roots: set[Path] = set()
    direct: set[Path] = set()
    missing: set[Path] = set()
    reports: dict[Path, set[Path]] = {}
    for file in files:
        where = placed.get(file)
        if where is None:
            parent = up = os.path.dirname(str(file))
            below = ""  # the child of ``up`` on the way down to ``parent``
            while (found := existing(up)) is None and up != "/":
                up, below = os.path.dirname(up), up
            where = placed[file] = (found or Path("/"), None if up == parent else Path(below))
        root, child = where
        roots.add(root)
        reports.setdefault(root, set()).add(file)
        if child is None:
            direct.add(file)
            reports.setdefault(file, set()).add(file)
        else:
            missing.add(child)
            reports.setdefault(child, set()).add(file)
    return WatchPlan(
        roots=frozenset(roots),
        direct=frozenset(direct),
        missing=frozenset(missing),
        reports={path: frozenset(hit) for path, hit in reports.items()},
    )


def normalise_paths(paths: Iterable[str | os.PathLike[str]]) -> frozenset[Path]:
    """Absolute, normalised paths; a relative path is an error (the daemon's cwd means nothing)."""
    out: set[Path] = set()
    for raw in paths:
        text = os.fspath(raw)
        if not os.path.isabs(text):
            raise ValueError(f"watched path must be absolute: {text}")
        normal = os.path.normpath(text)
        # Most arrive normalised already (state.py): keep the Path, its hash is cached.
        out.add(raw if isinstance(raw, Path) and normal == text else Path(normal))
    return frozenset(out)


def _libc_inotify() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _libc_inotify()


def use_inotify() -> bool:
    """inotify on the event loop, unless it is missing or watchfiles' polling is asked for."""
    return _LIBC is not None and not os.environ.get("WATCHFILES_FORCE_POLLING")


def parse_events(data: bytes, roots: Mapping[int, str]) -> set[tuple[Change, str]]:
    """watchfiles-style ``(change, path)`` pairs from raw inotify events on the watched ``roots`` (wd -> path).

    A root that goes, or lost events (queue overflow), report the root as deleted,
    which makes the watch be planned and armed again with every file reported.
    """
    out: set[tuple[Change, str]] = set()
    pos = 0
    while pos + _EVENT.size <= len(data):
        wd, mask, _cookie, length = _EVENT.unpack_from(data, pos)
        name = data[pos + _EVENT.size: pos + _EVENT.size + length].rstrip(b"\0")
        pos += _EVENT.size + length
        if mask & IN_Q_OVERFLOW:
            out |= {(Change.deleted, root) for root in roots.values()}
            continue
        root = roots.get(wd)
        if root is None:
            continue
        if not name:  # about the directory itself
            if mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED):
                out.add((Change.deleted, root))
            continue
        path = os.path.join(root, os.fsdecode(name))
        if mask & (IN_CREATE | IN_MOVED_TO):
            out.add((Change.added, path))
        elif mask & (IN_DELETE | IN_MOVED_FROM):
            out.add((Change.deleted, path))
        else:
            out.add((Change.modified, path))
    return out


class Inotify:
    """One inotify instance watching directories, read on the event loop: no thread, no timer."""

    def __init__(self) -> None:
        assert _LIBC is not None
        fd = _LIBC.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            code = ctypes.get_errno()
            raise OSError(code, f"inotify_init1: {os.strerror(code)}")
        self.fd = fd
        self.roots: dict[int, str] = {}
        self.wds: dict[Path, int] = {}

    def add(self, directory: Path) -> None:
        """Watch ``directory``; a missing one raises FileNotFoundError, as awatch does."""
        assert _LIBC is not None
        wd = _LIBC.inotify_add_watch(self.fd, os.fsencode(directory), DIR_MASK)
        if wd < 0:
            code = ctypes.get_errno()
            if code == errno.ENOTDIR:
                code = errno.ENOENT  # replaced by a file: as good as gone
            raise OSError(code, os.strerror(code), str(directory))
        self.roots[wd] = str(directory)
        self.wds[directory] = wd

    def remove(self, directory: Path) -> None:
        """Stop watching ``directory``; its events still queued are dropped when read."""
        assert _LIBC is not None
        wd = self.wds.pop(directory)
        del self.roots[wd]
        _LIBC.inotify_rm_watch(self.fd, wd)  # EINVAL if the kernel dropped it already: fine

    def _drain(self) -> bytes:
        chunks = []
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    async def batch(self, step_ms: int, debounce_ms: int) -> set[tuple[Change, str]]:
        """The next changes: from the first event until ``step_ms`` pass without another
        (or ``debounce_ms`` since the first), as watchfiles groups them."""
        data = b""
        while not data:
            await anyio.wait_readable(self.fd)
            data = self._drain()
        deadline = anyio.current_time() + debounce_ms / 1000
        while (left := deadline - anyio.current_time()) > 0:
            with anyio.move_on_after(min(step_ms / 1000, left)) as quiet:
                await anyio.wait_readable(self.fd)
            if quiet.cancelled_caught:
                break
            data += self._drain()
        return parse_events(data, self.roots)

    def close(self) -> None:
        os.close(self.fd)


class FileWatcher:
    """Reports which of a set of files may have changed.

    The files are absolute paths whose directories need not exist yet. On
    Linux ``run`` holds one inotify descriptor read on the event loop, and no
    thread; elsewhere, while anything is watched, one worker thread (one
    ``awatch`` over all directories). With nothing to watch it holds neither.
    """

    def __init__(
        self,
        paths: Iterable[str | os.PathLike[str]] = (),
        *,
        step_ms: int = 50,
        debounce_ms: int = 200,
    ) -> None:
        self._paths = normalise_paths(paths)
        self._step_ms = step_ms
        self._debounce_ms = debounce_ms
        self._rearm: anyio.Event | None = None  # set: tear down the current watch, plan again
        self._pending: set[Path] = set()
        self._pending_ready = anyio.Event()
        self._task_status: TaskStatus[None] | None = None
        # Linux: one inotify instance kept across changes of the watched set, so a
        # new workspace costs watches for its own directories only, not a fresh
        # instance re-reporting every file (which re-read every workspace's facts).
        self._ino: Inotify | None = None
        self._ino_direct: frozenset[Path] = frozenset()  # files reported since their watch was armed
        self._ino_stale = False  # a root went away or events were lost: start a fresh instance
        # Which directories exist, as the kept instance's plans found them. Every existing
        # one planned is a watched root, and the first missing one below each is reported
        # when it appears, so the answers hold until an event says directories changed.
        self._ino_dirs: dict[str, Path | None] = {}
        self._ino_placed: dict[Path, Placement] = {}

    @property
    def paths(self) -> frozenset[Path]:
        """The files currently watched."""
        return self._paths

    def set_paths(self, paths: Iterable[str | os.PathLike[str]]) -> None:
        """Replace the watched files; takes effect at once if ``run`` is going.

        Call from the event loop that runs ``run``. Files dropped here are no
        longer reported, even for changes already seen.
        """
        new = normalise_paths(paths)
        if new == self._paths:
            return
        self._paths = new
        if self._rearm is not None:
            self._rearm.set()

    async def run(
        self,
        on_change: OnChange,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Watch until cancelled, awaiting ``on_change(files)`` with files that may have changed.

        Calls are serial; hints that arrive during a call are merged into the
        next one. Whenever a watch is (re)armed, every file whose directory it
        covers is reported, since it may have changed while unwatched; so the
        first call doubles as the initial load. ``task_status.started()`` fires
        once the first watch is in place. Run one at a time per watcher.

        An exception from ``on_change``, or an ``OSError`` when the OS refuses a
        watch (permissions, inotify limits), ends ``run`` inside an
        ``ExceptionGroup``, as anyio task groups raise.
        """
        self._pending.clear()
        self._pending_ready = anyio.Event()
        self._task_status = task_status
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._deliver, on_change)
                await self._watch_forever()
        finally:
            self._drop_inotify()

    def _drop_inotify(self) -> None:
        if self._ino is not None:
            self._ino.close()
            self._ino = None
            self._ino_direct = frozenset()
        self._forget_dirs()

    def _forget_dirs(self) -> None:
        self._ino_dirs, self._ino_placed = {}, {}

    def _ready(self) -> None:
        if self._task_status is not None:
            self._task_status.started()
            self._task_status = None

    def _hint(self, files: frozenset[Path]) -> None:
        if files:
            self._pending |= files
            self._pending_ready.set()

    async def _deliver(self, on_change: OnChange) -> None:
        while True:
            await self._pending_ready.wait()
            self._pending_ready = anyio.Event()
            batch = frozenset(self._pending & self._paths)
            self._pending.clear()
            if batch:
                await on_change(batch)

    async def _watch_forever(self) -> None:
        while True:
            # Ending a watch need not pass a checkpoint; take any pending
            # cancellation here rather than arm a new watch first.
            await checkpoint_if_cancelled()
            self._rearm = rearm = anyio.Event()
            if not use_inotify():
                plan = plan_watch(self._paths)
            else:
                if len(self._ino_placed) > 2 * len(self._paths) + 64:
                    self._forget_dirs()  # mostly files no longer watched: start over rather than grow
                plan = plan_watch(self._paths, known=self._ino_dirs, placed=self._ino_placed)
            if not plan.roots:  # no paths: hold no thread until some arrive
                self._ready()
                await rearm.wait()
                continue
            try:
                await self._watch(plan, rearm)
            except* FileNotFoundError:
                # A directory vanished between planning and arming. Plan again,
                # after a pause so that a path failing for good cannot spin.
                log.debug("watch_root_vanished")
                self._forget_dirs()
                await anyio.sleep(self._step_ms / 1000)

    async def _watch(self, plan: WatchPlan, rearm: anyio.Event) -> None:
        if use_inotify():
            await self._watch_inotify(plan, rearm)
            return
        changes = awatch(
            *plan.roots,
            watch_filter=plan.wants,
            recursive=False,
            step=self._step_ms,
            debounce=self._debounce_ms,
            rust_timeout=RUST_TIMEOUT_MS,
            stop_event=rearm,
        )
        async with anyio.create_task_group() as tg:
            # No await between here and the loop: awatch's first step arms the
            # OS watch before it first yields control, so _armed runs only once
            # the watch is in place.
            tg.start_soon(self._armed, plan, rearm, plan.direct, lambda: plan_watch(self._paths) == plan)
            async for batch in changes:
                for change, raw in batch:
                    files, outdated = plan.interpret(change, Path(raw))
                    self._hint(files)
                    if outdated:
                        rearm.set()
            tg.cancel_scope.cancel()

    async def _watch_inotify(self, plan: WatchPlan, rearm: anyio.Event) -> None:
        """Bring the kept inotify instance to ``plan``: unwatch the roots it dropped,
        watch the new ones, and report only files it did not cover before. A root
        that went away (or lost events) starts a fresh instance instead."""
        if self._ino_stale:
            self._drop_inotify()
            self._ino_stale = False
        if self._ino is None:
            self._ino = Inotify()
        ino = self._ino
        gone = set(ino.wds) - plan.roots
        if gone:
            # inotify_rm_watch waits for the kernel's RCU grace period (a millisecond or
            # more each): off the event loop, as ctypes lets go of the GIL meanwhile.
            await anyio.to_thread.run_sync(lambda: [ino.remove(root) for root in gone])
        added = plan.roots - set(ino.wds)
        for root in sorted(added):
            ino.add(root)
        fresh = frozenset(f for f in plan.direct if f.parent in added or f not in self._ino_direct)

        def still_holds() -> bool:
            # The roots kept from before report their changes; a new root's missing
            # child may have appeared between planning and its watch.
            return not any(child.parent in added and os.path.isdir(child) for child in plan.missing)

        async with anyio.create_task_group() as tg:
            tg.start_soon(self._armed, plan, rearm, fresh, still_holds)
            tg.start_soon(_cancel_when, rearm, tg.cancel_scope)
            while True:
                for change, raw in await ino.batch(self._step_ms, self._debounce_ms):
                    if not plan.wants(change, raw):
                        continue
                    path = Path(raw)
                    files, outdated = plan.interpret(change, path)
                    self._hint(files)
                    if outdated:
                        if path in plan.roots:
                            self._ino_stale = True  # its watch is gone or moved
                        self._forget_dirs()  # directories came or went: ask the OS again
                        rearm.set()

    async def _armed(
        self, plan: WatchPlan, rearm: anyio.Event, fresh: frozenset[Path], still_holds: Callable[[], bool]
    ) -> None:
        """Once the watch is in place: check the plan still holds and report the
        ``fresh`` files (those it newly covers), then stand by to stop the watch on cancel."""
        try:
            if not still_holds():
                self._forget_dirs()
                rearm.set()  # a directory came or went while arming
            else:
                log.debug("watch_armed", roots=sorted(map(str, plan.roots)))
                self._hint(fresh)
                self._ino_direct = plan.direct
                self._ready()
            await anyio.sleep_forever()
        finally:
            # Cancelling awatch would wait out its worker thread (up to the rust
            # timeout); the stop event ends that thread within one step.
            rearm.set()


async def _cancel_when(event: anyio.Event, scope: anyio.CancelScope) -> None:
    await event.wait()
    scope.cancel()
