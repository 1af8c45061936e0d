"""What a takod killed with SIGKILL leaves behind, and how the next one clears it:
pi lock directories it held (reclaimed at once when still exactly as left, else
left to go stale the way pi expects) and temp files of interrupted writes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from takod_daemon.credentials import pi_lock as pl
from takod_daemon.credentials.files import DEAD_TEMP_AGE_S, atomic_write
from tests.unit.test_pi_lock import auth  # noqa: F401 - the fixture: an auth.json in a private dir

REPO = Path(__file__).resolve().parents[2]

HOLDER = """
import sys
from pathlib import Path
from takod_daemon.credentials import pi_lock
pi_lock.keep_records(Path(sys.argv[2]))
with pi_lock.pi_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.read()
"""


def killed_holder(auth: Path, records: Path) -> Path:
    """A process that took the lock with records kept, killed while holding it."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(auth), str(records)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO / "daemon")})
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"locked\n"
    finally:
        proc.kill()
        proc.wait()
    lock_dir = Path(str(auth) + ".lock")
    assert lock_dir.is_dir() and list(records.glob("*.json"))
    return lock_dir


def test_a_lock_left_by_a_killed_takod_is_reclaimed_at_once(auth: Path, tmp_path: Path) -> None:
    records = tmp_path / "records"
    lock_dir = killed_holder(auth, records)
    with pytest.raises(pl.LockBusy):  # without the records it would take 30 s to go stale
        with pl.pi_lock(auth, timeout=0):
            pass
    assert pl.reclaim_own(records) == [lock_dir]
    assert not lock_dir.exists() and not list(records.iterdir())
    with pl.pi_lock(auth, timeout=0):
        pass


def test_a_lock_touched_since_is_someone_elses_and_left_alone(auth: Path, tmp_path: Path) -> None:
    records = tmp_path / "records"
    lock_dir = killed_holder(auth, records)
    st = lock_dir.stat()
    os.utime(lock_dir, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # a pi that took it over keeps it fresh
    assert pl.reclaim_own(records) == []
    assert lock_dir.is_dir()
    assert not list(records.iterdir())  # the record of a dead process is dropped either way


def test_a_lock_remade_by_someone_else_is_left_alone(auth: Path, tmp_path: Path) -> None:
    records = tmp_path / "records"
    lock_dir = killed_holder(auth, records)
    time.sleep(0.01)
    lock_dir.rmdir()
    lock_dir.mkdir()  # pi broke it (stale) and holds its own now
    assert pl.reclaim_own(records) == []
    assert lock_dir.is_dir()


def test_a_lock_of_a_live_holder_is_never_reclaimed(auth: Path, tmp_path: Path) -> None:
    records = tmp_path / "records"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(auth), str(records)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO / "daemon")})
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"locked\n"
        assert pl.reclaim_own(records) == []
        assert Path(str(auth) + ".lock").is_dir() and list(records.glob("*.json"))
    finally:
        proc.kill()
        proc.wait()


def test_a_released_lock_leaves_no_record(auth: Path, tmp_path: Path) -> None:
    records = tmp_path / "records"
    pl.keep_records(records)
    try:
        with pl.pi_lock(auth):
            assert len(list(records.glob("*.json"))) == 1
        assert list(records.iterdir()) == []
    finally:
        pl.keep_records(None)


def test_temp_files_of_killed_writes_are_removed_by_the_next_write(tmp_path: Path) -> None:
    target = tmp_path / "auth.json"
    dead = tmp_path / ".auth.json.abc123.tmp"
    young = tmp_path / ".auth.json.def456.tmp"  # perhaps a write in progress in another thread
    other = tmp_path / ".settings.json.abc123.tmp"
    for path in (dead, young, other):
        path.write_text("{")
    old = time.time() - DEAD_TEMP_AGE_S - 5
    os.utime(dead, (old, old))
    os.utime(other, (old, old))
    atomic_write(target, b"{}\n")
    assert target.read_bytes() == b"{}\n"
    assert not dead.exists()
    assert young.exists() and other.exists()
