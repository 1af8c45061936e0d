"""``takod doctor`` probes the OS keyring afresh (a real, private Secret Service:
dbus-daemon + gnome-keyring): a keyring that got locked after the daemon
started is what the report says, not the state at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes.secret_service import SecretServiceSession, secret_service  # noqa: F401 (fixture)
from tests.harness import DaemonProcess, clean_env

pytestmark = pytest.mark.interop


def test_doctor_sees_a_keyring_locked_after_start(home: Path, secret_service: SecretServiceSession) -> None:
    env = clean_env(home, DBUS_SESSION_BUS_ADDRESS=secret_service.bus_address,
                    XDG_RUNTIME_DIR=secret_service.env["XDG_RUNTIME_DIR"])
    d = DaemonProcess(home, env).start()
    try:
        with d.client(timeout=60) as c:
            before = {x["id"]: x for x in c.call("doctor.run")["checks"]}
            assert before["keyring"]["verdict"] == "ok", before["keyring"]
            secret_service.lock()  # a screen lock or timeout
            after = {x["id"]: x for x in c.call("doctor.run", timeout=60)["checks"]}
            store = c.call("keys.list")["store"]
    finally:
        d.stop()
    assert after["keyring"]["verdict"] == "warn"
    assert store["reason"] in ("keyring-locked", "keyring-timeout") and store["reason"] in after["keyring"]["summary"]
