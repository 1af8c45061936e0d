"""A real, private Secret Service for tests: dbus-daemon + gnome-keyring-daemon.

Each session gets its own D-Bus session bus (a minimal config: no service
activation, so nothing else can be started on it) and a gnome-keyring-daemon
unlocked with a known password, both under a throwaway HOME. The fixture
points ``DBUS_SESSION_BUS_ADDRESS`` (and HOME / XDG dirs) at it for the test
and kills both process groups afterwards.

Use it by importing the fixture into a test module::

    from tests.fakes.secret_service import secret_service  # noqa: F401

When the programs are missing the fixture skips, or fails when ``CI`` is set
(scripts/test.sh installs them: Debian ``dbus gnome-keyring libsecret-tools``).
"""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import open_dbus_connection

PROGRAMS = ("dbus-daemon", "gnome-keyring-daemon", "secret-tool")
PASSWORD = "takod-test-password"
START_TIMEOUT = 15.0

_BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


@dataclass
class SecretServiceSession:
    """A running private Secret Service. ``env`` is what a client needs."""

    root: Path
    bus_address: str
    env: dict[str, str]
    pids: tuple[int, ...]  # dbus-daemon, gnome-keyring-daemon (each leads its process group)

    def run(self, *argv: str, input: str | None = None, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
        """Run a program against this Secret Service (its own process)."""
        return subprocess.run(argv, input=input, env=self.env, capture_output=True, text=True, timeout=timeout)

    def lookup(self, **attributes: str) -> str | None:
        """``secret-tool lookup`` of an item, from a separate process."""
        done = self.run("secret-tool", "lookup", *_pairs(attributes))
        return done.stdout if done.returncode == 0 and done.stdout else None

    def store(self, label: str, secret: str, **attributes: str) -> None:
        """``secret-tool store``: an item written by some other program."""
        done = self.run("secret-tool", "store", f"--label={label}", *_pairs(attributes), input=secret)
        if done.returncode != 0:
            raise RuntimeError(f"secret-tool store failed: {done.stderr.strip()}")

    def search(self, **attributes: str) -> str:
        """``secret-tool search --all`` output (attributes and secrets)."""
        return self.run("secret-tool", "search", "--all", *_pairs(attributes)).stdout

    def lock(self) -> None:
        """Lock the default collection, as a screen lock or timeout would."""
        script = "import secretstorage as s\nc = s.dbus_init()\ns.get_default_collection(c).lock()\n"
        done = self.run("python3", "-c", script)
        if done.returncode != 0:
            raise RuntimeError(f"locking the collection failed: {done.stderr.strip()}")


def _pairs(attributes: dict[str, str]) -> list[str]:
    return [part for item in attributes.items() for part in item]


def missing_programs() -> list[str]:
    return [name for name in PROGRAMS if shutil.which(name) is None]


def require_programs() -> None:
    """Skip (or fail under CI) when the Secret Service programs are absent."""
    missing = missing_programs()
    if missing:
        message = (
            f"needs {', '.join(missing)} for a real Secret Service "
            "(Debian: dbus gnome-keyring libsecret-tools; scripts/test.sh installs them)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@contextmanager
def running_secret_service() -> Iterator[SecretServiceSession]:
    """Start dbus-daemon and an unlocked gnome-keyring; stop both on exit."""
    # A short root: the bus socket path must fit in sun_path.
    root = Path(tempfile.mkdtemp(prefix="takod-ss-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        env = _private_env(root)
        bus_socket = env["XDG_RUNTIME_DIR"] + "/bus"
        config = root / "bus.conf"
        config.write_text(_BUS_CONFIG.format(socket=bus_socket))
        bus = _spawn(
            ["dbus-daemon", f"--config-file={config}", "--nofork", "--nopidfile", "--print-address=1"],
            env,
            root / "dbus.log",
            stdout=subprocess.PIPE,
        )
        procs.append(bus)
        address = _read_line(bus, time.monotonic() + START_TIMEOUT)
        env["DBUS_SESSION_BUS_ADDRESS"] = address
        keyring = _spawn(
            ["gnome-keyring-daemon", "--foreground", "--unlock", "--components=secrets"],
            env,
            root / "gnome-keyring.log",
            stdin=subprocess.PIPE,
        )
        procs.append(keyring)
        assert keyring.stdin is not None
        keyring.stdin.write(PASSWORD.encode())  # --unlock reads the password to EOF
        keyring.stdin.close()
        _wait_for_name(address, "org.freedesktop.secrets", procs, root)
        session = SecretServiceSession(root=root, bus_address=address, env=env, pids=tuple(p.pid for p in procs))
        _check_round_trip(session)
        yield session
    finally:
        for proc in reversed(procs):
            _stop(proc)
        shutil.rmtree(root, ignore_errors=True)


def _private_env(root: Path) -> dict[str, str]:
    dirs = {
        "HOME": root / "home",
        "XDG_DATA_HOME": root / "data",
        "XDG_CONFIG_HOME": root / "config",
        "XDG_CACHE_HOME": root / "cache",
        "XDG_STATE_HOME": root / "state",
        "XDG_RUNTIME_DIR": root / "run",
    }
    for path in dirs.values():
        path.mkdir(mode=0o700)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    env.update({key: str(path) for key, path in dirs.items()})
    return env


def _spawn(argv: list[str], env: dict[str, str], log: Path, **pipes: int) -> subprocess.Popen[bytes]:
    with log.open("wb") as log_file:
        # Own session and process group, so teardown can end exactly these.
        return subprocess.Popen(argv, env=env, stderr=log_file, start_new_session=True, **pipes)


def _read_line(proc: subprocess.Popen[bytes], deadline: float) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        data = b""
        while not data.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                raise RuntimeError("dbus-daemon did not print its address")
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError("dbus-daemon exited before printing its address")
            data += chunk
    return data.decode().strip()


def _wait_for_name(address: str, name: str, procs: list[subprocess.Popen[bytes]], root: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    with open_dbus_connection(bus=address) as conn:
        while time.monotonic() < deadline:
            if conn.send_and_get_reply(message_bus.NameHasOwner(name), timeout=2).body[0]:
                return
            if any(proc.poll() is not None for proc in procs):
                break
            time.sleep(0.05)
    logs = "\n".join(f"{log.name}: {log.read_text(errors='replace').strip()}" for log in sorted(root.glob("*.log")))
    raise RuntimeError(f"{name} did not appear on the private bus\n{logs}")


def _check_round_trip(session: SecretServiceSession) -> None:
    """Prove the service stores and returns secrets before any test relies on it."""
    attributes = {"takod-fixture": "probe"}
    session.store("takod fixture probe", "fixture-secret", **attributes)
    if session.lookup(**attributes) != "fixture-secret":
        raise RuntimeError("the private Secret Service did not return a stored secret")
    session.run("secret-tool", "clear", *_pairs(attributes))


def _stop(proc: subprocess.Popen[bytes]) -> None:
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.fixture
def secret_service(monkeypatch: pytest.MonkeyPatch) -> Iterator[SecretServiceSession]:
    """A running private Secret Service, with this process pointed at it."""
    require_programs()
    with running_secret_service() as session:
        for key, value in session.env.items():
            if key not in ("PATH", "LANG"):
                monkeypatch.setenv(key, value)
        monkeypatch.delenv("PYTHON_KEYRING_BACKEND", raising=False)
        yield session
