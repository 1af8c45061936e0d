"""``takod service install|status|uninstall`` in a temporary HOME, and the client's preference for the service.

systemctl, loginctl and launchctl are far-side system tools: fakes on PATH
(tests/fakes/service_manager.py) record what the CLI asks of them and answer as
the real ones do, with or without a reachable user manager. The daemon they
start, and the one a client starts itself, are the real one.
"""

from __future__ import annotations

import json
import os
import plistlib
import pwd
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import service_manager
from tests.harness import DaemonProcess, clean_env, wait_for
from tests.procfs import alive
from tests.rawrpc import WAIT

USER = pwd.getpwuid(os.getuid()).pw_name


@pytest.fixture
def env(home: Path) -> dict[str, str]:
    """A login-session-like environment: a private XDG_RUNTIME_DIR, no TAKOD_SOCKET, fake tools first on PATH."""
    runtime = home / "rt"
    runtime.mkdir(mode=0o700)
    service_manager.install(home / "bin")
    env = clean_env(home, XDG_RUNTIME_DIR=str(runtime), PATH=f"{home / 'bin'}:/usr/bin:/bin",
                    FAKE_TOOLS_LOG=str(home / "tools.log"), FAKE_DAEMON_OUT=str(home / "daemon.out"),
                    FAKE_LINGER="yes")
    del env["TAKOD_SOCKET"]
    return env


def takod(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "takod.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


def takod_json(env: dict[str, str], *args: str, code: int = 0) -> Any:
    result = takod(env, *args, "--json")
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return json.loads(result.stdout)


def systemctl_calls(home: Path) -> list[list[str]]:
    return [c[1:] for c in service_manager.calls(home / "tools.log") if c[0] == "systemctl"]


def unit_dir(home: Path) -> Path:
    return home / ".config" / "systemd" / "user"


def test_install_writes_units_for_this_python_and_enables_socket_and_service(env: dict[str, str], home: Path) -> None:
    env["FAKE_LINGER"] = "no"
    result = takod_json(env, "service", "install")
    sock_unit, service_unit = unit_dir(home) / "takod.socket", unit_dir(home) / "takod.service"
    assert result["files"] == [str(sock_unit), str(service_unit)]
    assert (result["written"], result["enabled"], result["stopped_pid"]) == (True, True, None)
    assert result["socket"] == str(home / "rt" / "takod" / "rpc.sock")
    for path in (sock_unit, service_unit):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert f"\nExecStart={sys.executable} -m takod_daemon --log journal\n" in service_unit.read_text()
    assert f'\nEnvironment="PATH={env["PATH"]}"\n' in service_unit.read_text()
    assert systemctl_calls(home) == [
        ["--user", "show-environment"],
        ["--user", "daemon-reload"],
        ["--user", "enable", "--now", "takod.socket", "takod.service"],
    ]
    # Enabled, but it would stop at logout: said, with the fix.
    assert result["problems"] == [{
        "code": "linger_off", "fix": f"loginctl enable-linger {USER}",
        "message": f"lingering is off for {USER}: systemd stops takod at your last logout (and removes "
                   f"/run/user/{os.getuid()}), so tokens are not kept fresh while you are logged out",
    }]


def test_status_shows_installed_current_units_and_their_state(env: dict[str, str], home: Path) -> None:
    takod_json(env, "service", "install")
    status = takod_json(env, "service", "status")
    assert status["installed"] is True and status["reachable"] is True and status["problems"] == []
    assert [f["current"] for f in status["files"]] == [True, True]
    assert status["units"] == {u: {"active": "active", "enabled": "enabled"} for u in ("takod.socket", "takod.service")}
    # Written for another interpreter (e.g. a venv since deleted): outdated, and install rewrites it.
    service_unit = unit_dir(home) / "takod.service"
    service_unit.write_text(service_unit.read_text().replace(sys.executable, "/old/venv/bin/python"))
    status = takod_json(env, "service", "status")
    assert [f["current"] for f in status["files"]] == [True, False]
    human = takod(env, "service", "status")
    assert "outdated: run `takod service install`" in human.stdout
    takod_json(env, "service", "install")
    assert sys.executable in service_unit.read_text()
    # ... and restarts a daemon still running from the old unit.
    assert systemctl_calls(home)[-1] == ["--user", "try-restart", "takod.service"]


def test_uninstall_removes_exactly_what_install_wrote(env: dict[str, str], home: Path) -> None:
    takod_json(env, "service", "install")
    # What `systemctl enable` makes; a manager that is gone by uninstall time leaves them behind.
    wants = unit_dir(home) / "sockets.target.wants"
    wants.mkdir()
    (wants / "takod.socket").symlink_to(unit_dir(home) / "takod.socket")
    mine = unit_dir(home) / "other.service"
    mine.write_text("[Service]\nExecStart=/bin/true\n")
    result = takod_json(env, "service", "uninstall")
    assert result["removed"] == [str(unit_dir(home) / "takod.socket"), str(unit_dir(home) / "takod.service")]
    assert result["kept"] == [] and result["problems"] == []
    assert sorted(p.name for p in unit_dir(home).rglob("*")) == ["other.service", "sockets.target.wants"]
    assert systemctl_calls(home)[-2:] == [["--user", "disable", "--now", "takod.service", "takod.socket"],
                                          ["--user", "daemon-reload"]]
    assert takod(env, "service", "uninstall").stdout == "takod service is not installed\n"


def test_units_someone_else_wrote_are_never_overwritten_or_removed(env: dict[str, str], home: Path) -> None:
    theirs = unit_dir(home) / "takod.socket"
    theirs.parent.mkdir(parents=True)
    theirs.write_text("[Socket]\nListenStream=/tmp/theirs\n")
    result = takod_json(env, "service", "install", code=2)
    assert result["problems"][0]["code"] == "not_ours" and result["written"] is False
    assert not (unit_dir(home) / "takod.service").exists()
    result = takod_json(env, "service", "uninstall")
    assert result["kept"] == [str(theirs)] and result["removed"] == []
    assert theirs.read_text() == "[Socket]\nListenStream=/tmp/theirs\n"


def test_no_user_manager_is_a_clear_verdict_and_writes_nothing(env: dict[str, str], home: Path) -> None:
    env["FAKE_USER_BUS"] = "down"
    result = takod_json(env, "service", "install", code=1)
    (problem,) = result["problems"]
    assert problem["code"] == "no_user_manager"
    assert "Failed to connect to bus: No medium found" in problem["message"]
    assert "loginctl enable-linger" in problem["fix"]
    assert not unit_dir(home).exists()
    human = takod(env, "service", "install")
    assert human.returncode == 1 and "no systemd user manager is reachable" in human.stderr
    assert "Traceback" not in human.stderr
    # Writing for a later login still works, and status says what is missing.
    assert takod_json(env, "service", "install", "--no-enable")["written"] is True
    status = takod_json(env, "service", "status")
    assert status["installed"] is True and status["reachable"] is False and status["units"] == {}
    assert [p["code"] for p in status["problems"]] == ["no_user_manager"]


def test_no_systemctl_at_all(env: dict[str, str], home: Path) -> None:
    env["PATH"] = str(home / "empty")
    result = takod_json(env, "service", "install", code=1)
    assert [p["code"] for p in result["problems"]] == ["no_systemctl"]
    assert "clients start takod themselves" in result["problems"][0]["fix"]
    status = takod_json(env, "service", "status")
    assert status["reachable"] is False and status["installed"] is False


def test_missing_runtime_dir_and_a_client_socket_elsewhere_are_reported(env: dict[str, str], home: Path) -> None:
    del env["XDG_RUNTIME_DIR"]
    env["TAKOD_SOCKET"] = str(home / "elsewhere.sock")
    codes = [p["code"] for p in takod_json(env, "service", "status")["problems"]]
    assert codes == ["xdg_runtime_dir_unset", "socket_mismatch"]


def test_print_shows_the_units_and_changes_nothing(env: dict[str, str], home: Path) -> None:
    result = takod_json(env, "service", "install", "--print")
    assert sorted(Path(p).name for p in result["files"]) == ["takod.service", "takod.socket"]
    assert "FileDescriptorName=takod" in result["files"][str(unit_dir(home) / "takod.socket")]
    assert not unit_dir(home).exists() and systemctl_calls(home) == []


def test_install_stops_a_daemon_a_client_started_so_systemd_can_own_the_socket(env: dict[str, str], home: Path) -> None:
    sock = home / "rt" / "takod" / "rpc.sock"
    own = DaemonProcess(home, dict(env, TAKOD_SOCKET=str(sock))).start()
    try:
        result = takod_json(env, "service", "install")
        assert result["stopped_pid"] == own.pid
        assert own.wait(WAIT) == 0
    finally:
        own.stop()
    assert systemctl_calls(home)[-1] == ["--user", "enable", "--now", "takod.socket", "takod.service"]


CLIENT = r"""
import json
from takod import Client
with Client(timeout=30) as c:
    d = c.call("status")["daemon"]
    print(json.dumps({"pid": d["pid"], "activated": d["activated"], "socket": d["socket"], "started": c.started_daemon}))
"""


def run_client(env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", CLIENT], env=env, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def stop(pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not alive(pid), timeout=WAIT)


def test_client_starts_the_installed_service_instead_of_spawning(env: dict[str, str], home: Path) -> None:
    takod_json(env, "service", "install", "--no-enable")
    result = run_client(env)
    try:
        assert systemctl_calls(home)[-1] == ["--user", "start", "takod.socket"]
        assert result["activated"] is True and result["started"] is True
        assert result["socket"] == str(home / "rt" / "takod" / "rpc.sock")
        assert not (Path(env["TAKOD_STATE_DIR"]) / "daemon.stderr").exists()  # the self-spawn log: never opened
    finally:
        stop(result["pid"])


def test_client_spawns_itself_when_the_installed_service_cannot_be_reached(env: dict[str, str], home: Path) -> None:
    takod_json(env, "service", "install", "--no-enable")
    env["FAKE_USER_BUS"] = "down"
    result = run_client(env)
    try:
        assert systemctl_calls(home)[-1] == ["--user", "start", "takod.socket"]
        assert result["activated"] is False and result["started"] is True
        assert (Path(env["TAKOD_STATE_DIR"]) / "daemon.stderr").exists()
    finally:
        stop(result["pid"])


def test_launchd_agent_install_and_uninstall(env: dict[str, str], home: Path) -> None:
    result = takod_json(env, "service", "install", "--manager", "launchd")
    plist = home / "Library" / "LaunchAgents" / "dev.tako.takod.plist"
    assert result["files"] == [str(plist)] and result["enabled"] is True
    data = plistlib.loads(plist.read_bytes())
    sock = home / "Library" / "Application Support" / "takod" / "rpc.sock"
    assert data["ProgramArguments"][0] == sys.executable
    assert data["Sockets"]["takod"] == {"SockPathName": str(sock), "SockPathMode": 384}
    # launchd makes the socket, not its directory: install does, private.
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
    uid = os.getuid()
    launchctl = [c[1:] for c in service_manager.calls(home / "tools.log") if c[0] == "launchctl"]
    assert launchctl == [["bootout", f"gui/{uid}/dev.tako.takod"], ["bootstrap", f"gui/{uid}", str(plist)]]
    env["FAKE_LAUNCHD_LOADED"] = "1"
    assert takod_json(env, "service", "status", "--manager", "launchd")["units"] == {
        "dev.tako.takod": {"active": "loaded", "enabled": "enabled"}}
    assert takod_json(env, "service", "uninstall", "--manager", "launchd")["removed"] == [str(plist)]
    assert not plist.exists()


def test_a_unit_directory_that_cannot_be_written_is_an_error_not_a_traceback(env: dict[str, str], home: Path) -> None:
    (home / ".config").mkdir()
    (home / ".config" / "systemd").write_text("a file where a directory should be")
    result = takod_json(env, "service", "install", code=1)
    assert result["written"] is False and [p["code"] for p in result["problems"]] == ["write_failed"]
    assert ["--user", "daemon-reload"] not in systemctl_calls(home)
