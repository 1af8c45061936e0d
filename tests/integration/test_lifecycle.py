"""The daemon's life: many clients, one instance, safe directories, signals, stop, logs, idle cost."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from takod.client import ConnectionLost
from tests.harness import DaemonProcess, wait_for
from tests.procfs import cpu_ticks
from tests.rawrpc import WAIT, RawConn, error_of, served, start_slow_request


def run_foreground(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the daemon as a user would by hand, for a start that is expected to end at once."""
    return subprocess.run(
        [sys.executable, "-m", "takod_daemon", "--log", "json"],
        env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )


def first_event(client: Any) -> tuple[str, Any]:
    for method, params in client.notifications(timeout=WAIT):
        return method, params
    raise AssertionError("no notification in time")


# many clients, one daemon -------------------------------------------------------


def test_many_concurrent_clients(daemon: DaemonProcess) -> None:
    def session(n: int) -> list[Any]:
        with daemon.client(name=f"t{n}") as c:
            return [c.call("ping" if i % 2 else "status") for i in range(20)]

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(session, range(50)))
    for answers in results:
        assert answers[1::2] == ["pong"] * 10
        assert all(a["daemon"]["pid"] == daemon.pid for a in answers[0::2])
    with daemon.client() as c:
        wait_for(lambda: c.call("status")["daemon"]["connections"] == 1, timeout=WAIT)


def test_second_daemon_on_the_same_socket_says_already_running(daemon: DaemonProcess, daemon_env: dict[str, str]) -> None:
    inode = daemon.socket.stat().st_ino
    second = run_foreground(daemon_env)
    assert second.returncode == 0
    assert f"already running (pid {daemon.pid})" in second.stderr
    assert daemon.socket.stat().st_ino == inode  # the live socket was not replaced
    assert served(daemon.socket)
    assert daemon.proc is not None and daemon.proc.poll() is None


def test_stale_socket_from_a_killed_daemon_is_replaced(daemon: DaemonProcess, home: Path, daemon_env: dict[str, str]) -> None:
    daemon.signal(signal.SIGKILL)
    daemon.wait()
    assert stat.S_ISSOCK(daemon.socket.lstat().st_mode)  # left behind
    with pytest.raises(ConnectionRefusedError):
        RawConn(daemon.socket)
    successor = DaemonProcess(home, daemon_env).start()
    try:
        assert served(successor.socket)
        wait_for(lambda: '"event": "removed stale socket"' in successor.log_text())
    finally:
        successor.stop()


# directories and the socket path ----------------------------------------------------


@pytest.mark.parametrize("which", ["socket", "state"])
def test_directory_with_group_or_other_bits_refuses_to_start(home: Path, daemon_env: dict[str, str], which: str) -> None:
    bad = Path(daemon_env["TAKOD_SOCKET"]).parent if which == "socket" else Path(daemon_env["TAKOD_STATE_DIR"])
    bad.mkdir(mode=0o755)
    os.chmod(bad, 0o755)
    result = run_foreground(daemon_env)
    assert result.returncode == 2
    assert f"{which} directory" in result.stderr
    assert "has mode 0755, must be 0700" in result.stderr
    assert f"chmod 700 '{bad}'" in result.stderr
    assert stat.S_IMODE(bad.stat().st_mode) == 0o755  # never "fixed" behind the user's back
    assert not Path(daemon_env["TAKOD_SOCKET"]).exists()


def test_socket_directory_owned_by_another_user_refuses_to_start(home: Path, daemon_env: dict[str, str]) -> None:
    bad = Path(daemon_env["TAKOD_SOCKET"]).parent
    bad.mkdir(mode=0o700)
    os.chown(bad, 65534, 65534)
    result = run_foreground(daemon_env)
    assert result.returncode == 2
    assert f"is owned by uid 65534, not {os.getuid()}" in result.stderr
    # Never "sudo chown" a directory another user made: point takod elsewhere instead.
    assert "sudo chown" not in result.stderr and "TAKOD_SOCKET" in result.stderr
    assert bad.stat().st_uid == 65534


def test_socket_directory_that_is_a_symlink_refuses_to_start(home: Path, daemon_env: dict[str, str]) -> None:
    real = home / "elsewhere"
    real.mkdir(mode=0o700)
    link = Path(daemon_env["TAKOD_SOCKET"]).parent
    link.symlink_to(real)
    result = run_foreground(daemon_env)
    assert result.returncode == 2
    assert "is a symlink" in result.stderr and str(link) in result.stderr
    assert list(real.iterdir()) == []


def test_regular_file_at_the_socket_path_is_a_clear_error(home: Path, daemon_env: dict[str, str]) -> None:
    path = Path(daemon_env["TAKOD_SOCKET"])
    path.parent.mkdir(mode=0o700)
    path.write_text("precious")
    result = run_foreground(daemon_env)
    assert result.returncode == 1
    assert f"{path} exists and is not a socket" in result.stderr
    assert path.read_text() == "precious"


# signals and stop ---------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_tells_subscribers_answers_in_flight_and_removes_the_socket(daemon: DaemonProcess, signum: int) -> None:
    with daemon.client() as watcher, RawConn(daemon.socket) as busy:
        sub = watcher.call("subscribe", {"topics": ["daemon"]})
        start_slow_request(busy, 7)  # in flight until we answer, which we never do
        daemon.signal(signum)

        method, params = first_event(watcher)
        assert method == "takod.event"
        assert params == [sub["sub_id"], 1, "daemon", {"state": "stopping", "reason": signal.Signals(signum).name}]
        with pytest.raises(ConnectionLost):
            list(watcher.notifications(timeout=WAIT))

        response = busy.response(7)
        assert response[3] is None and error_of(response) == (0, "shutting_down")
        assert busy.read_to_close() == []
    assert daemon.wait() == 0
    assert not daemon.socket.exists()
    assert '"event": "stopping"' in daemon.log_text()


def test_sighup_reloads_and_keeps_running(daemon: DaemonProcess) -> None:
    with daemon.client() as watcher:
        sub = watcher.call("subscribe", {"topics": ["daemon"]})
        daemon.signal(signal.SIGHUP)
        assert first_event(watcher) == ("takod.event", [sub["sub_id"], 1, "daemon", {"state": "reloaded"}])
        daemon.signal(signal.SIGHUP)
        assert first_event(watcher) == ("takod.event", [sub["sub_id"], 2, "daemon", {"state": "reloaded"}])
        assert watcher.call("ping") == "pong"
    assert daemon.proc is not None and daemon.proc.poll() is None


def test_shutdown_method_stops_the_daemon(daemon: DaemonProcess) -> None:
    with daemon.client() as watcher:
        sub = watcher.call("subscribe", {"topics": ["daemon"]})
        with daemon.client() as c:
            assert c.call("shutdown") == {"stopping": True, "pid": daemon.pid}
        method, params = first_event(watcher)
        assert (method, params) == ("takod.event", [sub["sub_id"], 1, "daemon", {"state": "stopping", "reason": "shutdown requested"}])
    assert daemon.wait() == 0
    assert not daemon.socket.exists()
    with pytest.raises(FileNotFoundError):
        RawConn(daemon.socket)


# logs and idle cost ---------------------------------------------------------------------


def test_logs_are_json_lines_in_the_state_dir(daemon: DaemonProcess) -> None:
    assert served(daemon.socket)
    log = daemon.state_dir / "daemon.log"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    daemon.stop()
    lines = log.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"event", "level", "timestamp"} <= set(r) for r in records)
    ready = [r for r in records if r["event"] == "takod ready"]
    assert len(ready) == 1 and ready[0]["pid"] == daemon.pid and ready[0]["socket"] == str(daemon.socket)
    assert any(r["event"] == "stopping" and r["reason"] == "SIGTERM" for r in records)


def test_idle_daemon_uses_no_cpu(daemon: DaemonProcess) -> None:
    assert served(daemon.socket)
    before = cpu_ticks(daemon.pid)
    time.sleep(2)  # not a timing assertion: a window in which an idle daemon should do (almost) nothing
    used = cpu_ticks(daemon.pid) - before
    # A periodic probe costs a tick or three; a polling or spinning loop costs tens to 200.
    assert used <= 8, f"idle daemon used {used} CPU ticks in 2 s"
