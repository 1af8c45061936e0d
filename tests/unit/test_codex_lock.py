"""Codex's auth locks (credentials/codex_lock.py), as Codex 0.169 takes them: flock on
``auth.lock`` then ``auth.json.lock`` in ``$CODEX_HOME``."""

from __future__ import annotations

import fcntl
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from takod_daemon.credentials.codex_lock import codex_lock, lock_paths
from takod_daemon.credentials.pi_lock import LockError, LockTimeout

HOLD = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.readline()
"""


def hold(path: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_both_locks_are_taken_in_codexs_order_as_private_files(tmp_path: Path) -> None:
    assert [p.name for p in lock_paths(tmp_path)] == ["auth.lock", "auth.json.lock"]
    with codex_lock(tmp_path, timeout=1):
        for path in lock_paths(tmp_path):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            fd = os.open(path, os.O_RDWR)
            try:
                with pytest.raises(BlockingIOError):  # another process's flock would wait
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            finally:
                os.close(fd)
    fd = os.open(lock_paths(tmp_path)[0], os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released on exit
    finally:
        os.close(fd)


@pytest.mark.parametrize("name", ["auth.lock", "auth.json.lock"])
def test_a_codex_commit_in_progress_is_waited_for_then_given_up(tmp_path: Path, name: str) -> None:
    holder = hold(tmp_path / name)
    try:
        with pytest.raises(LockTimeout):
            with codex_lock(tmp_path, timeout=0.2):
                pass
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(10)
    with codex_lock(tmp_path, timeout=1):
        pass


def test_a_symlink_at_the_lock_path_is_never_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    (tmp_path / "auth.lock").symlink_to(target)
    with pytest.raises(LockError) as err:
        with codex_lock(tmp_path, timeout=0.1):
            pass
    assert err.value.reason == "unavailable"
    assert not target.exists()
