"""pi's directory lock: our own behaviour, and interop with the proper-lockfile
that ships inside the real pi package (installed by scripts/install-test-tools.sh)."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from takod_daemon.credentials.pi_lock import (
    STALE_AFTER_S,
    LockBusy,
    LockError,
    LockLost,
    LockNotDirectory,
    LockTimeout,
    lock_dirs,
    pi_lock,
)

REPO = Path(__file__).resolve().parents[2]
PI_PACKAGE = REPO / ".tools" / "npm" / "node_modules" / "@mariozechner" / "pi-coding-agent"
HOLDER_JS = REPO / "tests" / "fakes" / "pi_lock_holder.js"
WAIT_S = 60.0  # upper bound for any wait on another process; never an assertion on speed


@pytest.fixture
def auth(tmp_path: Path) -> Path:
    path = tmp_path / "agent" / "auth.json"
    path.parent.mkdir(mode=0o700)
    path.write_text("{}")
    return path


def age(path: Path, seconds: float) -> None:
    """Make ``path`` look untouched for ``seconds`` (what a killed holder leaves behind)."""
    then = time.time() - seconds
    os.utime(path, (then, then))


# --- our own behaviour ---------------------------------------------------------------


def test_lock_is_a_directory_next_to_the_file_and_is_removed_on_exit(auth: Path) -> None:
    lock_dir = Path(str(auth) + ".lock")
    with pi_lock(auth) as held:
        assert lock_dir.is_dir()
        assert held.dirs == [lock_dir]
        held.ensure_held()
    assert not os.path.lexists(lock_dir)


def test_second_locker_is_busy_then_times_out(auth: Path) -> None:
    with pi_lock(auth):
        with pytest.raises(LockBusy) as busy:
            with pi_lock(auth, timeout=0):
                pass
        assert busy.value.reason == "busy"
        assert not isinstance(busy.value, LockTimeout)
        with pytest.raises(LockTimeout) as waited:
            with pi_lock(auth, timeout=0.2):
                pass
        assert waited.value.reason == "timeout"
        assert str(auth) in str(waited.value)
    with pi_lock(auth, timeout=0):
        pass


def test_lock_released_when_body_raises(auth: Path) -> None:
    with pytest.raises(RuntimeError):
        with pi_lock(auth):
            raise RuntimeError("boom")
    assert not os.path.lexists(str(auth) + ".lock")


def test_plain_file_at_lock_path_is_reported_and_left_alone(auth: Path) -> None:
    blocker = Path(str(auth) + ".lock")
    blocker.write_text("flock file from some other tool")
    age(blocker, STALE_AFTER_S * 10)  # even a stale one is not ours to delete
    with pytest.raises(LockNotDirectory) as exc:
        with pi_lock(auth, timeout=0):
            pass
    assert exc.value.reason == "not_a_directory"
    assert blocker.read_text() == "flock file from some other tool"


def test_symlink_at_lock_path_is_not_treated_as_a_lock(auth: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    Path(str(auth) + ".lock").symlink_to(target)
    with pytest.raises(LockNotDirectory):
        with pi_lock(auth, timeout=0):
            pass
    assert target.is_dir()


def test_fresh_lock_is_never_broken_even_when_older_than_pis_sync_staleness(auth: Path) -> None:
    lock_dir = Path(str(auth) + ".lock")
    lock_dir.mkdir()
    age(lock_dir, 20)  # stale for pi's 10 s sync locker, live for its 30 s refresh locker
    before = lock_dir.stat().st_mtime_ns
    with pytest.raises(LockTimeout):
        with pi_lock(auth, timeout=0.3):
            pass
    assert lock_dir.stat().st_mtime_ns == before


def test_stale_lock_is_reclaimed(auth: Path) -> None:
    lock_dir = Path(str(auth) + ".lock")
    lock_dir.mkdir()
    age(lock_dir, STALE_AFTER_S + 1)
    with pi_lock(auth, timeout=0) as held:
        assert lock_dir.stat().st_mtime > time.time() - STALE_AFTER_S
        held.ensure_held()
    assert not lock_dir.exists()


def test_stale_lock_with_content_is_not_forced(auth: Path) -> None:
    lock_dir = Path(str(auth) + ".lock")
    lock_dir.mkdir()
    (lock_dir / "keep").write_text("x")
    age(lock_dir, STALE_AFTER_S + 1)
    with pytest.raises(LockError) as exc:
        with pi_lock(auth, timeout=0):
            pass
    assert exc.value.reason == "unavailable"
    assert (lock_dir / "keep").read_text() == "x"


def test_missing_parent_directory_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(LockError) as exc:
        with pi_lock(tmp_path / "nope" / "auth.json", timeout=1):
            pass
    assert exc.value.reason == "unavailable"
    assert not isinstance(exc.value, LockBusy)


def test_lock_touched_by_someone_else_is_lost_and_left_to_them(auth: Path) -> None:
    lock_dir = Path(str(auth) + ".lock")
    with pi_lock(auth, touch_every=3600) as held:
        age(lock_dir, 5)  # another locker's mtime, not ours
        with pytest.raises(LockLost):
            held.ensure_held()
    assert lock_dir.is_dir()


def test_toucher_keeps_mtime_moving(auth: Path) -> None:
    lock_dir = Path(str(auth) + ".lock")
    with pi_lock(auth, touch_every=0.05) as held:
        first = lock_dir.stat().st_mtime_ns
        deadline = time.monotonic() + WAIT_S
        while lock_dir.stat().st_mtime_ns == first:
            assert time.monotonic() < deadline, "lock mtime was never refreshed"
            time.sleep(0.02)
        held.ensure_held()  # the toucher's new mtime is recognised as ours


def test_lock_taken_over_is_lost_and_not_removed(auth: Path) -> None:
    lock_dir = Path(str(auth) + ".lock")
    with pi_lock(auth, touch_every=3600) as held:
        os.rmdir(lock_dir)  # someone broke our lock ...
        lock_dir.mkdir()  # ... and took it
        age(lock_dir, 1)
        with pytest.raises(LockLost) as exc:
            held.ensure_held()
        assert exc.value.reason == "lost"
    assert lock_dir.is_dir()  # theirs: left in place


def test_symlinked_auth_locks_real_and_link_paths(tmp_path: Path) -> None:
    real = tmp_path / "real" / "auth.json"
    real.parent.mkdir()
    real.write_text("{}")
    link = tmp_path / "agent" / "auth.json"
    link.parent.mkdir()
    link.symlink_to(real)
    assert lock_dirs(link) == [Path(str(real) + ".lock"), Path(str(link) + ".lock")]
    with pi_lock(link):
        assert Path(str(real) + ".lock").is_dir()
        assert Path(str(link) + ".lock").is_dir()
        with pytest.raises(LockBusy):
            with pi_lock(real, timeout=0):
                pass
    assert not os.path.lexists(str(real) + ".lock")
    assert not os.path.lexists(str(link) + ".lock")


def test_second_lock_busy_releases_the_first(tmp_path: Path) -> None:
    real = tmp_path / "auth.json"
    real.write_text("{}")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    Path(str(link) + ".lock").mkdir()  # the legacy (link-path) lock is held
    with pytest.raises(LockBusy):
        with pi_lock(link, timeout=0):
            pass
    assert not os.path.lexists(str(real) + ".lock")


def test_threads_are_mutually_exclusive(auth: Path) -> None:
    counter = auth.parent / "counter"
    counter.write_text("0")

    def work() -> None:
        for _ in range(20):
            with pi_lock(auth, timeout=WAIT_S):
                value = int(counter.read_text())
                time.sleep(0.001)
                counter.write_text(str(value + 1))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counter.read_text() == "80"


def test_lock_of_killed_process_is_reclaimed(auth: Path) -> None:
    holder = Proc(
        [sys.executable, "-c", PY_HOLDER, str(auth)],
        env={**os.environ, "PYTHONPATH": str(REPO / "daemon")},
    )
    try:
        holder.expect("locked")
        holder.kill()
        lock_dir = Path(str(auth) + ".lock")
        assert lock_dir.is_dir()  # SIGKILL leaves it behind
        with pytest.raises(LockBusy):
            with pi_lock(auth, timeout=0):
                pass
        age(lock_dir, STALE_AFTER_S + 1)
        with pi_lock(auth, timeout=0):
            pass
    finally:
        holder.kill()


PY_HOLDER = """
import sys
from pathlib import Path
from takod_daemon.credentials.pi_lock import pi_lock
with pi_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.read()
"""


# --- interop with pi's own proper-lockfile --------------------------------------------


class Proc:
    """A child process whose stdout lines are read in the background."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None):
        self.popen = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, wanted: str) -> None:
        """Wait (bounded) for the next line and check it is ``wanted``."""
        try:
            line = self.lines.get(timeout=WAIT_S)
        except queue.Empty:
            pytest.fail(f"no {wanted!r} within {WAIT_S} s; saw {self.seen}")
        if line is None:
            stderr = self.popen.stderr.read() if self.popen.stderr else ""
            pytest.fail(f"process ended before {wanted!r}; saw {self.seen}; stderr: {stderr[-2000:]}")
        self.seen.append(line)
        assert line == wanted, f"expected {wanted!r}, got {line!r} (saw {self.seen})"

    def send(self, line: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(line + "\n")
        self.popen.stdin.flush()

    def wait(self) -> int:
        return self.popen.wait(timeout=WAIT_S)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(timeout=WAIT_S)


@pytest.fixture
def pi_node() -> list[str]:
    """argv prefix running the lock holder against the real pi's proper-lockfile."""
    hint = "real pi is not installed under .tools/npm; run scripts/install-test-tools.sh"
    node = shutil.which("node")
    if node is None or not (PI_PACKAGE / "package.json").is_file():
        if os.environ.get("CI"):
            pytest.fail(hint)
        pytest.skip(hint)
    return [node, str(HOLDER_JS), str(PI_PACKAGE)]


@pytest.mark.interop
def test_the_proper_lockfile_is_the_one_pi_ships(pi_node: list[str]) -> None:
    script = "console.log(require(require.resolve('proper-lockfile/package.json', {paths: [process.argv[1]]})).version)"
    out = subprocess.run([pi_node[0], "-e", script, str(PI_PACKAGE)], capture_output=True, text=True, timeout=WAIT_S)
    assert out.stdout.strip() == "4.1.2"  # the version research/pi-auth.md §3.3 was verified against


@pytest.mark.interop
def test_we_wait_for_a_live_pi_lock_and_never_break_it(pi_node: list[str], auth: Path) -> None:
    pi = Proc([*pi_node, "hold", str(auth)])
    try:
        pi.expect("locked")
        lock_dir = Path(str(auth) + ".lock")
        age(lock_dir, 20)  # a slow pi refresh between its 15 s touches
        before = lock_dir.stat().st_mtime_ns
        with pytest.raises(LockTimeout):
            with pi_lock(auth, timeout=0.5):
                pass
        assert lock_dir.stat().st_mtime_ns == before

        acquired = threading.Event()

        def take() -> None:
            with pi_lock(auth, timeout=WAIT_S):
                acquired.set()

        waiter = threading.Thread(target=take)
        waiter.start()
        pi.send("release")
        pi.expect("released")
        assert pi.wait() == 0
        waiter.join(WAIT_S)
        assert acquired.is_set()
    finally:
        pi.kill()


@pytest.mark.interop
def test_pi_waits_for_our_lock_and_takes_it_after_release(pi_node: list[str], auth: Path) -> None:
    with pi_lock(auth):
        pi = Proc([*pi_node, "wait", str(auth)])
        try:
            pi.expect("busy")  # pi's own startup lock sees ours as held
        except BaseException:
            pi.kill()
            raise
    try:
        pi.expect("locked")
        pi.expect("released")
        assert pi.wait() == 0
    finally:
        pi.kill()


@pytest.mark.interop
def test_legacy_pi_startup_lock_on_a_symlink_sees_our_lock(pi_node: list[str], tmp_path: Path) -> None:
    real = tmp_path / "dotfiles" / "auth.json"
    real.parent.mkdir()
    real.write_text("{}")
    link = tmp_path / "agent" / "auth.json"
    link.parent.mkdir()
    link.symlink_to(real)
    with pi_lock(link):
        pi = Proc([*pi_node, "wait", str(link)])  # lockSync(link, {realpath: false}) first
        try:
            pi.expect("busy")
        except BaseException:
            pi.kill()
            raise
    try:
        pi.expect("locked")
        pi.expect("released")
        assert pi.wait() == 0
    finally:
        pi.kill()


@pytest.mark.interop
def test_pi_and_takod_writers_never_interleave(pi_node: list[str], auth: Path) -> None:
    rounds = 15
    auth.write_text(json.dumps({"counter": 0}))
    pi = Proc([*pi_node, "count", str(auth), str(rounds)])
    try:
        for _ in range(rounds):
            with pi_lock(auth, timeout=WAIT_S) as held:
                data = json.loads(auth.read_text())
                data["counter"] += 1
                time.sleep(0.005)
                held.ensure_held()
                auth.write_text(json.dumps(data, indent=2))
        pi.expect("done")
        assert pi.wait() == 0
    finally:
        pi.kill()
    assert json.loads(auth.read_text())["counter"] == 2 * rounds


@pytest.mark.interop
def test_we_reclaim_the_lock_of_a_killed_pi(pi_node: list[str], auth: Path) -> None:
    pi = Proc([*pi_node, "hold", str(auth)])
    try:
        pi.expect("locked")
        pi.kill()  # SIGKILL: proper-lockfile's exit hook cannot run
        lock_dir = Path(str(auth) + ".lock")
        assert lock_dir.is_dir()
        with pytest.raises(LockBusy):
            with pi_lock(auth, timeout=0):
                pass
        age(lock_dir, STALE_AFTER_S + 1)
        with pi_lock(auth, timeout=0):
            pass
        assert not lock_dir.exists()
    finally:
        pi.kill()


@pytest.mark.interop
def test_pi_reclaims_the_lock_of_a_killed_takod(pi_node: list[str], auth: Path) -> None:
    holder = Proc(
        [sys.executable, "-c", PY_HOLDER, str(auth)],
        env={**os.environ, "PYTHONPATH": str(REPO / "daemon")},
    )
    try:
        holder.expect("locked")
        holder.kill()
        age(Path(str(auth) + ".lock"), STALE_AFTER_S + 1)
    finally:
        holder.kill()
    pi = Proc([*pi_node, "wait", str(auth)])
    try:
        pi.expect("free")
        pi.expect("locked")
        pi.expect("released")
        assert pi.wait() == 0
    finally:
        pi.kill()
