"""FileWatcher against real files and the real watcher (inotify; one test polls).

The consumer here behaves as the daemon must: it re-reads every reported file.
Tests wait (bounded) until its view matches what is on disk; the bound only
stops a broken watcher from hanging the suite and is never a latency check.
"""

from __future__ import annotations

import os
import shutil
import struct
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from watchfiles import Change

from takod_daemon import watch
from takod_daemon.watch import FileWatcher, normalise_paths, plan_watch

WAIT = 10.0
UNSEEN = object()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Consumer:
    """Records each report and re-reads the reported files."""

    def __init__(self) -> None:
        self.batches: list[frozenset[Path]] = []
        self.seen: dict[Path, bytes | None] = {}
        self.gate: anyio.Event | None = None  # when set up, each call waits for it

    async def __call__(self, paths: frozenset[Path]) -> None:
        self.batches.append(paths)
        if self.gate is not None:
            await self.gate.wait()
        for path in paths:
            try:
                self.seen[path] = path.read_bytes()
            except FileNotFoundError:
                self.seen[path] = None

    def mark(self) -> int:
        return len(self.batches)

    def reported_since(self, mark: int) -> set[Path]:
        return set().union(*self.batches[mark:])

    async def until(self, predicate: Callable[[], bool]) -> None:
        with anyio.fail_after(WAIT):
            while not predicate():
                await anyio.sleep(0.01)

    async def until_seen(self, path: Path, content: bytes | None) -> None:
        await self.until(lambda: self.seen.get(path, UNSEEN) == content)


@asynccontextmanager
async def watching(*paths: Path) -> AsyncIterator[tuple[FileWatcher, Consumer]]:
    watcher = FileWatcher(paths)
    consumer = Consumer()
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(WAIT):
            await tg.start(watcher.run, consumer)
        yield watcher, consumer
        tg.cancel_scope.cancel()


def replace_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# -- planning (pure, given which directories exist) ---------------------------


def test_plan_watches_parent_or_nearest_existing_ancestor(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    near = tmp_path / "d" / "a.json"
    far = tmp_path / "x" / "y" / "b.json"

    plan = plan_watch([near, far])

    assert plan.roots == {tmp_path / "d", tmp_path}
    assert plan.direct == {near}
    assert plan.missing == {tmp_path / "x"}
    assert plan.wants(Change.modified, str(near))
    assert not plan.wants(Change.modified, str(tmp_path / "d" / "sibling.json"))
    assert not plan.wants(Change.added, str(tmp_path / "other"))


def test_plan_interprets_events(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    near = tmp_path / "d" / "a.json"
    far = tmp_path / "x" / "y" / "b.json"
    plan = plan_watch([near, far])

    assert plan.interpret(Change.modified, near) == ({near}, False)
    assert plan.interpret(Change.added, tmp_path / "x") == ({far}, True)
    assert plan.interpret(Change.deleted, tmp_path / "d") == ({near}, True)
    # Polling marks a directory modified whenever something inside it changes.
    assert plan.interpret(Change.modified, tmp_path / "d") == (set(), False)


def test_paths_must_be_absolute_and_are_normalised() -> None:
    with pytest.raises(ValueError, match="absolute"):
        FileWatcher(["relative/auth.json"])
    assert normalise_paths(["/a/b/../c/auth.json"]) == {Path("/a/c/auth.json")}


# -- raw inotify events (pure) ------------------------------------------------


def raw_event(wd: int, mask: int, name: bytes = b"") -> bytes:
    """One event as the kernel lays it out: the name NUL-padded to a multiple of 16 bytes."""
    padded = name + b"\0" * (16 - len(name) % 16) if name else b""
    return struct.pack("iIII", wd, mask, 0, len(padded)) + padded


def test_parse_events_maps_masks_to_changes() -> None:
    roots = {1: "/h/.codex", 2: "/h/.pi/agent"}
    data = b"".join([
        raw_event(1, watch.IN_CLOSE_WRITE, b"auth.json"),
        raw_event(1, watch.IN_MODIFY, b"auth.json"),
        raw_event(2, watch.IN_MOVED_TO, b"auth.json"),
        raw_event(2, watch.IN_CREATE | 0x40000000, b"lockdir"),  # IN_ISDIR does not matter
        raw_event(2, watch.IN_DELETE, b"old.json"),
        raw_event(2, watch.IN_MOVED_FROM, b"auth.json.tmp"),
        raw_event(1, watch.IN_ATTRIB, b"mode.json"),
    ])
    assert watch.parse_events(data, roots) == {
        (Change.modified, "/h/.codex/auth.json"),
        (Change.added, "/h/.pi/agent/auth.json"),
        (Change.added, "/h/.pi/agent/lockdir"),
        (Change.deleted, "/h/.pi/agent/old.json"),
        (Change.deleted, "/h/.pi/agent/auth.json.tmp"),
        (Change.modified, "/h/.codex/mode.json"),
    }


def test_parse_events_root_gone_overflow_and_strays() -> None:
    roots = {1: "/h/.codex", 2: "/h"}
    assert watch.parse_events(raw_event(1, watch.IN_DELETE_SELF) + raw_event(1, watch.IN_IGNORED), roots) == {
        (Change.deleted, "/h/.codex")
    }
    assert watch.parse_events(raw_event(2, watch.IN_MOVE_SELF), roots) == {(Change.deleted, "/h")}
    # The directory's own metadata changing means nothing.
    assert watch.parse_events(raw_event(1, watch.IN_ATTRIB), roots) == set()
    # Lost events: every root counts as gone, so every file is re-read and the watch re-armed.
    assert watch.parse_events(raw_event(-1, watch.IN_Q_OVERFLOW), roots) == {
        (Change.deleted, "/h/.codex"), (Change.deleted, "/h")
    }
    # A watch already replaced, and a trailing partial header, are skipped.
    assert watch.parse_events(raw_event(9, watch.IN_MODIFY, b"x") + b"\0" * 7, roots) == set()
    # Names are bytes: one that is not UTF-8 still maps to a path.
    assert watch.parse_events(raw_event(1, watch.IN_MODIFY, b"caf\xe9"), roots) == {
        (Change.modified, "/h/.codex/caf\udce9")
    }


def test_overflow_rearms_and_reports_every_file(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    near, far = tmp_path / "d" / "a.json", tmp_path / "x" / "b.json"
    plan = plan_watch([near, far])
    roots = dict(enumerate(sorted(map(str, plan.roots))))
    changes = watch.parse_events(raw_event(-1, watch.IN_Q_OVERFLOW), roots)
    hits = [plan.interpret(change, Path(raw)) for change, raw in changes if plan.wants(change, raw)]
    assert set().union(*(files for files, _ in hits)) == {near, far}
    assert all(rearm for _, rearm in hits)


# -- behaviour -----------------------------------------------------------------


@pytest.mark.anyio
class TestFileWatcher:
    async def test_reports_existing_files_once_armed(self, tmp_path: Path) -> None:
        auth = tmp_path / "auth.json"
        auth.write_bytes(b"v1")
        async with watching(auth) as (_, consumer):
            await consumer.until_seen(auth, b"v1")

    async def test_in_place_write(self, tmp_path: Path) -> None:
        auth = tmp_path / "auth.json"
        auth.write_bytes(b"v1")
        async with watching(auth) as (_, consumer):
            await consumer.until_seen(auth, b"v1")
            with auth.open("r+b") as f:  # same inode
                f.write(b"v2")
            await consumer.until_seen(auth, b"v2")

    async def test_atomic_replace_is_seen_every_time(self, tmp_path: Path) -> None:
        auth = tmp_path / "auth.json"
        auth.write_bytes(b"v0")
        async with watching(auth) as (_, consumer):
            await consumer.until_seen(auth, b"v0")
            for n in (1, 2, 3):  # a watch on the file itself dies after the first
                replace_atomically(auth, b"v%d" % n)
                await consumer.until_seen(auth, b"v%d" % n)

    async def test_delete_and_recreate(self, tmp_path: Path) -> None:
        auth = tmp_path / "auth.json"
        auth.write_bytes(b"v1")
        async with watching(auth) as (_, consumer):
            await consumer.until_seen(auth, b"v1")
            auth.unlink()
            await consumer.until_seen(auth, None)
            auth.write_bytes(b"v2")
            await consumer.until_seen(auth, b"v2")

    @pytest.mark.parametrize("pause", [0.0, 0.3], ids=["at-once", "level-by-level"])
    async def test_file_in_directories_created_later(self, tmp_path: Path, pause: float) -> None:
        auth = tmp_path / "ws" / ".tako" / "pi" / "agent" / "auth.json"
        async with watching(auth) as (_, consumer):
            for level in (auth.parents[3], auth.parents[2], auth.parents[1], auth.parent):
                level.mkdir()
                await anyio.sleep(pause)  # pacing only: gives each level its own re-arm
            auth.write_bytes(b"v1")
            await consumer.until_seen(auth, b"v1")
            # The watch now sits on the file's own directory.
            replace_atomically(auth, b"v2")
            await consumer.until_seen(auth, b"v2")
            auth.write_bytes(b"v3")
            await consumer.until_seen(auth, b"v3")

    @pytest.mark.parametrize("how", ["rmtree", "rename", "swap"])
    @pytest.mark.parametrize("pause", [True, False], ids=["settled", "at-once"])
    async def test_watched_directory_deleted_and_recreated(
        self, tmp_path: Path, how: str, pause: bool
    ) -> None:
        codex = tmp_path / ".codex"
        auth = codex / "auth.json"
        codex.mkdir()
        auth.write_bytes(b"v1")
        async with watching(auth) as (_, consumer):
            await consumer.until_seen(auth, b"v1")
            if how == "rmtree":
                shutil.rmtree(codex)
            else:
                codex.rename(tmp_path / ".codex.bak")
            if pause:
                await consumer.until_seen(auth, None)
            if how == "swap":  # another directory, already holding the file, moved into place
                staged = tmp_path / ".codex.new"
                staged.mkdir()
                (staged / "auth.json").write_bytes(b"v2")
                staged.rename(codex)
            else:
                codex.mkdir()
                auth.write_bytes(b"v2")
            await consumer.until_seen(auth, b"v2")
            # The new directory is watched, not just noticed.
            auth.write_bytes(b"v3")
            await consumer.until_seen(auth, b"v3")

    async def test_unwatched_sibling_is_not_reported(self, tmp_path: Path) -> None:
        auth = tmp_path / "auth.json"
        marker = tmp_path / "settings.json"
        sibling = tmp_path / "auth.json.bak"
        auth.write_bytes(b"a")
        marker.write_bytes(b"m1")
        async with watching(auth, marker) as (_, consumer):
            await consumer.until(lambda: consumer.reported_since(0) == {auth, marker})
            mark = consumer.mark()
            for n in range(5):
                sibling.write_bytes(b"%d" % n)
            replace_atomically(tmp_path / "other.json", b"x")
            # Events in one directory arrive in order: once the marker's change
            # is in, any report the sibling caused would be in too.
            marker.write_bytes(b"m2")
            await consumer.until_seen(marker, b"m2")
            assert consumer.batches[mark:] and all(b == {marker} for b in consumer.batches[mark:])

    async def test_set_paths_adds_and_removes_at_runtime(self, tmp_path: Path) -> None:
        first = tmp_path / "first.json"
        first.write_bytes(b"f1")
        later = tmp_path / "new" / "sub" / "later.json"
        async with watching() as (watcher, consumer):
            watcher.set_paths([first])
            await consumer.until_seen(first, b"f1")
            first.write_bytes(b"f2")
            await consumer.until_seen(first, b"f2")

            watcher.set_paths([first, later])
            later.parent.mkdir(parents=True)
            later.write_bytes(b"l1")
            await consumer.until_seen(later, b"l1")

            watcher.set_paths([later])
            mark = consumer.mark()
            first.write_bytes(b"f3")
            later.write_bytes(b"l2")
            await consumer.until_seen(later, b"l2")
            assert first not in consumer.reported_since(mark)
            assert watcher.paths == {later}

    async def test_dropped_path_is_not_reported_for_changes_already_seen(
        self, tmp_path: Path
    ) -> None:
        first = tmp_path / "first.json"
        kept = tmp_path / "kept.json"
        first.write_bytes(b"f1")
        kept.write_bytes(b"k1")
        async with watching(first, kept) as (watcher, consumer):
            await consumer.until_seen(first, b"f1")
            consumer.gate = anyio.Event()
            mark = consumer.mark()
            first.write_bytes(b"f2")
            await consumer.until(lambda: consumer.mark() > mark)  # now held at the gate
            first.write_bytes(b"f3")
            # Pacing only: lets the change above reach the watcher while the
            # consumer is held. Should it come later, the test cannot fail.
            await anyio.sleep(0.5)
            watcher.set_paths([kept])
            mark = consumer.mark()
            consumer.gate.set()
            consumer.gate = None
            kept.write_bytes(b"k2")
            await consumer.until_seen(kept, b"k2")
            assert first not in consumer.reported_since(mark)

    async def test_cancel_returns_promptly(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # A worker thread that only returned at its timeout would overrun the
        # bound below; the stop event must end it instead.
        monkeypatch.setattr(watch, "RUST_TIMEOUT_MS", 30_000)
        auth = tmp_path / "auth.json"
        auth.write_bytes(b"v1")
        with anyio.fail_after(WAIT):
            async with watching(auth, tmp_path / "missing" / "x.json") as (_, consumer):
                await consumer.until_seen(auth, b"v1")
        assert anyio.to_thread.current_default_thread_limiter().borrowed_tokens == 0

    async def test_rapid_writes_coalesce(self, tmp_path: Path) -> None:
        auth = tmp_path / "auth.json"
        auth.write_bytes(b"start")
        writes = 50
        async with watching(auth) as (_, consumer):
            await consumer.until_seen(auth, b"start")
            mark = consumer.mark()
            for n in range(writes):
                auth.write_bytes(b"%d" % n)
                await anyio.sleep(0.005)  # spread out, as a busy writer would
            await consumer.until_seen(auth, b"%d" % (writes - 1))
            assert len(consumer.batches[mark:]) < writes // 2

    @pytest.mark.parametrize("polling, threads", [(False, 0), (True, 1)], ids=["inotify", "watchfiles"])
    async def test_threads_held_for_all_directories(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, polling: bool, threads: int
    ) -> None:
        # inotify is read on the event loop; watchfiles holds one worker thread for every directory.
        if polling:
            monkeypatch.setenv("WATCHFILES_FORCE_POLLING", "1")
        elif not watch.use_inotify():
            pytest.skip("no inotify here")
        paths = [tmp_path / name / "auth.json" for name in ("a", "b", "c")]
        for path in paths:
            path.parent.mkdir()
            path.write_bytes(b"x")
        limiter = anyio.to_thread.current_default_thread_limiter()
        async with watching(*paths, tmp_path / "missing" / "d" / "auth.json") as (_, consumer):
            await consumer.until(lambda: consumer.reported_since(0) == set(paths))
            held = set()
            for _ in range(20):
                held.add(limiter.borrowed_tokens)
                await anyio.sleep(0.01)
            assert max(held) == threads

    async def test_forced_polling_still_works(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("WATCHFILES_FORCE_POLLING", "1")
        monkeypatch.setenv("WATCHFILES_POLL_DELAY_MS", "100")
        stamp = iter(range(1_000_000_000, 2_000_000_000, 10))

        def save(path: Path, data: bytes) -> None:
            # Polling compares whole-second mtimes: give each version its own.
            replace_atomically(path, data)
            second = next(stamp)
            os.utime(path, (second, second))

        codex = tmp_path / ".codex"
        auth = codex / "auth.json"
        async with watching(auth) as (_, consumer):
            codex.mkdir()
            save(auth, b"v1")
            await consumer.until_seen(auth, b"v1")
            save(auth, b"v2")
            await consumer.until_seen(auth, b"v2")
            shutil.rmtree(codex)
            await consumer.until_seen(auth, None)
            codex.mkdir()
            save(auth, b"v3")
            await consumer.until_seen(auth, b"v3")
            save(auth, b"v4")
            await consumer.until_seen(auth, b"v4")

    async def test_directory_vanishing_while_arming(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        codex = tmp_path / ".codex"
        auth = codex / "auth.json"
        codex.mkdir()
        plans = 0

        def plan_then_remove(files: Iterable[Path], **kwargs: Any) -> watch.WatchPlan:
            # The directory goes right after it was first planned.
            nonlocal plans
            plans += 1
            plan = plan_watch(files, **kwargs)
            if plans == 1:
                codex.rmdir()
            return plan

        monkeypatch.setattr(watch, "plan_watch", plan_then_remove)
        async with watching(auth) as (_, consumer):
            codex.mkdir()
            auth.write_bytes(b"v1")
            await consumer.until_seen(auth, b"v1")
            auth.write_bytes(b"v2")
            await consumer.until_seen(auth, b"v2")
        assert plans > 1
