"""The units under a real systemd user manager: install, socket activation, notify, restart, stop, uninstall.

A container has no systemd as PID 1, and ``systemd --user`` refuses to start
unless /run/systemd/system exists. The test gives it one in a private mount
namespace (a tmpfs over /run/systemd that nothing else sees), so it needs root
and util-linux's unshare and nsenter; everything else is the real thing:
systemctl, the manager binding the socket and starting the daemon on demand,
Type=notify readiness, Restart=on-failure. Clients connect from outside the
namespace, over the socket path in the test's runtime dir.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from takod import Client
from tests.harness import clean_env, wait_for
from tests.rawrpc import WAIT

pytestmark = pytest.mark.interop

MANAGER = next((p for p in ("/lib/systemd/systemd", "/usr/lib/systemd/systemd") if os.path.exists(p)), None)


@dataclass
class Session:
    pid: int
    env: dict[str, str]
    home: Path
    socket: Path

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run a command in the manager's mount namespace (where systemctl can reach it)."""
        return subprocess.run(["nsenter", "-t", str(self.pid), "-m", "--", *argv], env=self.env,
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)

    def takod(self, *args: str) -> Any:
        result = self.run(sys.executable, "-m", "takod.cli", *args, "--json")
        assert result.returncode == 0 and "Traceback" not in result.stderr, (result.stdout, result.stderr)
        return json.loads(result.stdout)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.run("systemctl", "--user", "show", unit, *(f"--property={p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def status(self) -> dict[str, Any]:
        with Client(self.socket, spawn=False, timeout=30) as c:
            return c.call("status")["daemon"]


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    if os.geteuid() != 0 or MANAGER is None or not (shutil.which("unshare") and shutil.which("nsenter")):
        pytest.skip("needs root, systemd and util-linux (unshare, nsenter) for a private user manager")
    if not os.path.isdir("/run/systemd"):
        pytest.skip("no /run/systemd to cover with a private tmpfs")
    runtime = tmp_path / "rt"
    runtime.mkdir(mode=0o700)
    home = tmp_path / "h"
    home.mkdir()
    env = clean_env(home, XDG_RUNTIME_DIR=str(runtime), PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin")
    del env["TAKOD_SOCKET"]
    booted = "mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/system && exec " + MANAGER + " --user"
    with open(tmp_path / "manager.log", "wb") as log:
        manager = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", booted],
                                   env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    s = Session(manager.pid, env, home, runtime / "takod" / "rpc.sock")
    try:
        def up() -> bool:
            if manager.poll() is not None:
                raise AssertionError(f"user manager exited: {(tmp_path / 'manager.log').read_text()}")
            return s.run("systemctl", "--user", "is-system-running").stdout.strip() in ("running", "degraded")

        wait_for(up, timeout=WAIT, interval=0.1)
        yield s
    finally:
        manager.send_signal(signal.SIGTERM)  # a user manager stops its units, then exits
        try:
            manager.wait(30)
        except subprocess.TimeoutExpired:
            manager.kill()
            manager.wait()


def test_installed_units_run_takod_socket_activated_under_a_real_user_manager(session: Session) -> None:
    installed = session.takod("service", "install")
    assert (installed["enabled"], installed["problems"]) == (True, [])
    props = session.show("takod.service", "Type", "ActiveState", "SubState", "StatusText", "MainPID", "WatchdogUSec")
    assert (props["Type"], props["ActiveState"], props["SubState"]) == ("notify", "active", "running")  # READY=1 came
    assert props["StatusText"].startswith(f"serving {session.socket}; ")
    assert props["WatchdogUSec"] == "30s"
    first = session.status()
    assert first["activated"] is True and first["pid"] == int(props["MainPID"]) and first["socket"] == str(session.socket)
    status = session.takod("service", "status")
    assert status["installed"] and status["units"] == {
        u: {"active": "active", "enabled": "enabled"} for u in ("takod.socket", "takod.service")}

    # A crash is restarted; the socket stays with systemd meanwhile.
    os.kill(first["pid"], signal.SIGKILL)
    wait_for(lambda: session.show("takod.service", "NRestarts")["NRestarts"] == "1", timeout=WAIT, interval=0.1)
    wait_for(lambda: session.show("takod.service", "SubState")["SubState"] == "running", timeout=WAIT, interval=0.1)
    restarted = session.status()
    assert restarted["activated"] is True and restarted["pid"] != first["pid"]

    # A clean stop is not a failure and not restarted; the next client's connection starts it again.
    assert session.run(sys.executable, "-m", "takod.cli", "stop").returncode == 0
    wait_for(lambda: session.show("takod.service", "ActiveState")["ActiveState"] == "inactive", timeout=WAIT, interval=0.1)
    assert session.show("takod.service", "Result")["Result"] == "success"
    again = session.status()
    assert again["activated"] is True and again["pid"] not in (first["pid"], restarted["pid"])

    removed = session.takod("service", "uninstall")
    assert len(removed["removed"]) == 2 and removed["problems"] == []
    assert session.run("systemctl", "--user", "is-active", "takod.socket").stdout.strip() == "inactive"
    assert not session.socket.exists()  # RemoveOnStop: clients now fall back to starting takod themselves
