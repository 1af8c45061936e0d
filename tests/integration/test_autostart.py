"""A client with no daemon running starts one itself (Watchman-style), exactly once, and says why when it cannot.

Each client runs in its own subprocess with a clean environment rooted in a
temporary HOME, as a user's CLI would; the daemons it starts are found by pid
and stopped at the end.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.harness import clean_env, wait_for
from tests.procfs import alive, daemons_for
from tests.rawrpc import WAIT, served

CLIENT = r"""
import json, os, sys
from takod import Client, ConnectError, DaemonStartError

spawn = {"yes": True, "env": None}[sys.argv[1]]
try:
    with Client(spawn=spawn, timeout=30) as c:
        status = c.call("status")
        print(json.dumps({"pid": status["daemon"]["pid"], "started": c.started_daemon, "sid": os.getsid(0)}))
except DaemonStartError as exc:
    print(json.dumps({"error": "DaemonStartError", "message": str(exc)}))
except ConnectError as exc:
    print(json.dumps({"error": "ConnectError", "message": str(exc)}))
"""


def start_client(env: dict[str, str], spawn: str = "yes") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CLIENT, spawn], env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def outcome(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return json.loads(out)


def run_client(env: dict[str, str], spawn: str = "yes") -> dict[str, Any]:
    return outcome(start_client(env, spawn))


@pytest.fixture
def env(home: Path) -> Iterator[dict[str, str]]:
    """A client environment; any daemon started for its socket is stopped afterwards."""
    env = clean_env(home)
    # A socket path the user names must have its directory already (the client never makes one).
    Path(env["TAKOD_SOCKET"]).parent.mkdir(mode=0o700)
    yield env
    for pid in daemons_for(Path(env["TAKOD_SOCKET"])):
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not alive(pid), timeout=WAIT)


def test_client_starts_a_detached_daemon_and_connects(env: dict[str, str]) -> None:
    result = run_client(env)
    pid = result["pid"]
    assert result["started"] is True
    assert daemons_for(Path(env["TAKOD_SOCKET"])) == [pid]
    # Detached: its own session (a terminal closing does not take it down), no stdin.
    assert os.getsid(pid) == pid != result["sid"]
    assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
    # Started as the ready-pipe protocol says: cwd /, output appended to a private daemon.stderr.
    state = Path(env["TAKOD_STATE_DIR"])
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    assert os.readlink(f"/proc/{pid}/fd/1") == os.readlink(f"/proc/{pid}/fd/2") == str(state / "daemon.stderr")
    assert (state / "daemon.stderr").stat().st_mode & 0o777 == 0o600
    # It outlives the client that started it, and the next client just connects.
    again = run_client(env)
    assert (again["pid"], again["started"]) == (pid, False)
    assert '"event": "takod ready"' in (state / "daemon.log").read_text()


def test_racing_clients_end_with_exactly_one_daemon(env: dict[str, str]) -> None:
    clients = [start_client(env) for _ in range(8)]
    results = [outcome(c) for c in clients]
    assert "error" not in results[0], results
    pids = {r.get("pid") for r in results}
    assert len(pids) == 1, results
    (pid,) = pids
    socket = Path(env["TAKOD_SOCKET"])
    # Losers of the lock race say "already running" and exit; one daemon remains.
    wait_for(lambda: daemons_for(socket) == [pid], timeout=WAIT)
    log = (Path(env["TAKOD_STATE_DIR"]) / "daemon.log").read_text()
    assert log.count('"event": "takod ready"') == 1
    assert served(socket)


def test_no_spawn_env_gives_a_helpful_connect_error_and_starts_nothing(env: dict[str, str]) -> None:
    env["TAKOD_NO_SPAWN"] = "1"
    result = run_client(env, spawn="env")
    assert result["error"] == "ConnectError"
    message = result["message"]
    assert "takod is not running" in message and env["TAKOD_SOCKET"] in message
    assert "takod serve" in message and "TAKOD_NO_SPAWN" in message
    assert not Path(env["TAKOD_SOCKET"]).exists()
    assert daemons_for(Path(env["TAKOD_SOCKET"])) == []


def test_connect_errors_other_than_nothing_listening_never_start_a_daemon(env: dict[str, str], home: Path) -> None:
    (home / "file").write_text("")
    env["TAKOD_SOCKET"] = str(home / "file" / "rpc.sock")  # ENOTDIR, not ENOENT
    result = run_client(env)
    assert result["error"] == "ConnectError"
    assert "refusing to talk to takod" in result["message"] and "is not a directory" in result["message"]
    assert not Path(env["TAKOD_STATE_DIR"]).exists()  # spawning would have created it


def test_loose_socket_directory_is_refused_before_anything_starts(env: dict[str, str]) -> None:
    sock_dir = Path(env["TAKOD_SOCKET"]).parent
    os.chmod(sock_dir, 0o755)
    result = run_client(env)
    assert result["error"] == "ConnectError"
    message = result["message"]
    assert f"socket directory {sock_dir}: has mode 0755, must be 0700" in message
    assert f"chmod 700 '{sock_dir}'" in message and "nothing was sent" in message
    assert daemons_for(Path(env["TAKOD_SOCKET"])) == []
    assert not Path(env["TAKOD_STATE_DIR"]).exists()  # never spawned
    assert stat.S_IMODE(sock_dir.stat().st_mode) == 0o755  # never "fixed" behind the user's back


def test_daemon_that_cannot_listen_reports_its_own_words(env: dict[str, str]) -> None:
    path = Path(env["TAKOD_SOCKET"])
    path.write_text("not a socket")  # connecting to it is refused, binding to it fails
    result = run_client(env)
    assert result["error"] == "DaemonStartError"
    assert f"cannot listen on {path}" in result["message"] and "is not a socket" in result["message"]
    wait_for(lambda: daemons_for(path) == [], timeout=WAIT)
    assert path.read_text() == "not a socket"


def test_unsafe_state_directory_is_reported_before_spawning(env: dict[str, str]) -> None:
    state = Path(env["TAKOD_STATE_DIR"])
    state.mkdir(mode=0o777)
    os.chmod(state, 0o777)
    result = run_client(env)
    assert result["error"] == "DaemonStartError"
    assert "state directory" in result["message"] and f"chmod 700 '{state}'" in result["message"]
    assert daemons_for(Path(env["TAKOD_SOCKET"])) == []


def test_daemon_that_dies_before_ready_reports_its_exit_status_and_stderr(env: dict[str, str], home: Path) -> None:
    fake = home / "fake" / "takod_daemon"  # shadows the real daemon package for the spawned process
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "__main__.py").write_text("import sys\nprint('boom: no daemon today', file=sys.stderr)\nsys.exit(3)\n")
    env["PYTHONPATH"] = os.pathsep.join([str(fake.parent), env["PYTHONPATH"]])
    result = run_client(env)
    assert result["error"] == "DaemonStartError"
    assert "exited with status 3 before it was ready" in result["message"]
    assert "boom: no daemon today" in result["message"]


def test_named_socket_whose_directory_does_not_exist_starts_nothing(env: dict[str, str], home: Path) -> None:
    missing = home / "nonexistent" / "dir"
    env["TAKOD_SOCKET"] = str(missing / "sock")
    result = run_client(env)
    assert result["error"] == "ConnectError"
    assert f"its directory {missing} does not exist" in result["message"]
    assert "TAKOD_SOCKET" in result["message"] and f"mkdir -m 700 '{missing}'" in result["message"]
    assert not (home / "nonexistent").exists()  # never created
    assert daemons_for(missing / "sock") == []
    assert not Path(env["TAKOD_STATE_DIR"]).exists()  # never spawned


def test_cli_socket_option_whose_directory_does_not_exist_exits_3_beside_a_running_daemon(
    env: dict[str, str], home: Path
) -> None:
    first = run_client(env)  # the user's one daemon, on the default of this environment
    missing = home / "nonexistent" / "dir"
    for args in (["status"], ["status", "--json"], ["key", "set", "OPENAI_API_KEY", "sk-canary-0123456789"]):
        result = subprocess.run(
            [sys.executable, "-m", "takod", *args, "--socket", str(missing / "sock")], env=env,
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 3, (args, result.stdout, result.stderr)
        out = result.stdout + result.stderr
        assert f"its directory {missing} does not exist" in out and "Traceback" not in out
        assert "sk-canary-0123456789" not in out
    assert not (home / "nonexistent").exists()
    assert daemons_for(Path(env["TAKOD_SOCKET"])) == [first["pid"]]
    assert daemons_for(missing / "sock") == []
