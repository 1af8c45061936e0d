"""The daemon's key store against a real Secret Service (gnome-keyring on a
private D-Bus) and against a keyring that hangs.

With the Secret Service, ``takod key set`` must land in the keyring where
``secret-tool`` and keyring in another process see it, and nothing may be
written in plaintext. A keyring backend that never answers must not stop the
daemon from starting and serving status: it falls back to the file and says
``keyring-timeout``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.secret_service import SecretServiceSession, secret_service  # noqa: F401 (fixture)
from tests.harness import REPO, DaemonProcess
from tests.integration.test_readiness import (
    CANARIES,
    assert_no_canaries,
    next_event,
    providers,
    reason_of,
    run_cli,
    start_daemon,
    status,
    stop_later,  # noqa: F401 (fixture)
    subscribe,
)

pytestmark = pytest.mark.interop

SECRET_SERVICE = "keyring.backends.SecretService.Keyring"
OPENAI_KEY = "sk-proj-CANARYsecretservice0123456789abcdef"
OTHER_PROGRAM_KEY = "sk-ant-api03-CANARYotherprogram0123456789abcdef"
HUNG_KEY = "sk-proj-CANARYhungkeyring0123456789abcdef"
CANARIES.extend([OPENAI_KEY, OTHER_PROGRAM_KEY, HUNG_KEY])
BOUND = 30.0


def bus_env(session: SecretServiceSession) -> dict[str, str]:
    """What the daemon needs to find the private Secret Service."""
    return {"DBUS_SESSION_BUS_ADDRESS": session.bus_address, "XDG_RUNTIME_DIR": session.env["XDG_RUNTIME_DIR"]}


def keyring_in_another_process(session: SecretServiceSession, name: str) -> str | None:
    script = f"import keyring; print(keyring.get_password('takod', {name!r}) or '', end='')"
    done = session.run(sys.executable, "-c", script, timeout=BOUND)
    assert done.returncode == 0, done.stderr
    return done.stdout or None


def test_keys_go_into_the_real_secret_service(
    home: Path, stop_later: list[DaemonProcess], secret_service: SecretServiceSession
) -> None:
    d = start_daemon(home, clis=["codex"], **bus_env(secret_service))
    stop_later.append(d)
    with d.client() as c:
        store = c.call("keys.list")["store"]
    assert store == {"backend": SECRET_SERVICE, "secure": True, "reason": None, "hint": None}
    assert reason_of(status(d), "codex") == "no-credentials"

    sub = subscribe(d, "status")
    try:
        out = run_cli(d, "key", "set", "OPENAI_API_KEY", "-", "--json", input=OPENAI_KEY + "\n")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == {"name": "OPENAI_API_KEY", "backend": "keyring", "masked": "sk-proj-...cdef",
                                          "pi_entry": None, "pi_entry_outcome": None}  # no Tako workspace here
        payload = next_event(sub, "status", lambda p: providers(p)["codex"]["ready"])
    finally:
        sub.close()
    cred = providers(payload)["codex"]["detail"]["credential"]
    assert (cred["source"], cred["kind"], cred["masked"]) == ("keyring:OPENAI_API_KEY", "api_key", "sk-proj-...cdef")

    # Other programs see it; nothing went to disk in plaintext.
    assert secret_service.lookup(service="takod", username="OPENAI_API_KEY") == OPENAI_KEY
    assert keyring_in_another_process(secret_service, "OPENAI_API_KEY") == OPENAI_KEY
    assert not (d.state_dir / "keys.json").exists()
    for path in d.state_dir.rglob("*"):
        if path.is_file():
            assert OPENAI_KEY not in path.read_text(errors="replace"), f"{path} holds the key"

    with d.client() as c:
        listed = c.call("keys.list")
        inv = c.call("auth.inventory")
    assert [{k: v for k, v in key.items() if not k.startswith("pi_entry")} for key in listed["keys"]] == [
        {"name": "OPENAI_API_KEY", "backend": "keyring", "masked": "sk-proj-...cdef"}]
    assert inv["key_store"]["secure"] is True
    human = run_cli(d, "key", "list")
    assert human.returncode == 0 and "insecure" not in human.stdout

    cleared = run_cli(d, "key", "clear", "OPENAI_API_KEY", "--json")
    assert json.loads(cleared.stdout)["removed"] is True
    assert secret_service.lookup(service="takod", username="OPENAI_API_KEY") is None
    assert reason_of(status(d), "codex") == "no-credentials"
    assert_no_canaries(d, out.stdout, payload, listed, inv, human.stdout, cleared.stdout)


def test_keyring_keys_survive_a_restart_and_a_lost_index(
    home: Path, stop_later: list[DaemonProcess], secret_service: SecretServiceSession
) -> None:
    first = start_daemon(home, clis=["claude"], **bus_env(secret_service))
    stop_later.append(first)
    with first.client() as c:
        assert c.call("keys.set", {"name": "ANTHROPIC_API_KEY", "value": OTHER_PROGRAM_KEY})["backend"] == "keyring"
    first.stop()

    # keyring cannot list items: takod keeps the names in key-index.json. A
    # damaged index is rebuilt by asking the keyring for every known name.
    index = first.state_dir / "key-index.json"
    assert "ANTHROPIC_API_KEY" in index.read_text() and OTHER_PROGRAM_KEY not in index.read_text()
    index.write_text('{"version": 1, "names": ')
    second = start_daemon(home, clis=["claude"], **bus_env(secret_service))
    stop_later.append(second)
    with second.client() as c:
        keys = c.call("keys.list")["keys"]
        st = c.call("status")
    assert [{k: v for k, v in key.items() if not k.startswith("pi_entry")} for key in keys] == [
        {"name": "ANTHROPIC_API_KEY", "backend": "keyring", "masked": "sk-ant-...cdef"}]
    claude = providers(st)["claude"]
    assert claude["ready"] and claude["detail"]["credential"]["source"] == "keyring:ANTHROPIC_API_KEY"
    assert not (second.state_dir / "keys.json").exists()
    assert_no_canaries(second, keys, st)
    assert_no_canaries(first)


def test_a_hanging_keyring_does_not_stop_the_daemon(home: Path, stop_later: list[DaemonProcess]) -> None:
    d = start_daemon(
        home,
        clis=["codex"],
        PYTHON_KEYRING_BACKEND="tests.fakes.hanging_keyring.HangingKeyring",
        PYTHONPATH=os.pathsep.join(str(REPO / p) for p in ("client", "daemon", ".")),
    )
    stop_later.append(d)
    # Served at once, while the keyring probe is still stuck.
    st = status(d)
    assert reason_of(st, "codex") == "no-credentials"
    with d.client(timeout=BOUND) as c:
        # keys.list waits for the probe to give up (its own timeout), then answers.
        store = c.call("keys.list")["store"]
        assert (store["backend"], store["secure"], store["reason"]) == ("file", False, "keyring-timeout")
        assert "did not answer" in store["hint"]
        stored = c.call("keys.set", {"name": "OPENAI_API_KEY", "value": HUNG_KEY})
        assert stored["backend"] == "file"
        assert providers(c.call("status"))["codex"]["ready"]
        assert c.call("ping") == "pong"
    keys_json = d.state_dir / "keys.json"
    assert json.loads(keys_json.read_text())["keys"] == {"OPENAI_API_KEY": HUNG_KEY}
    assert oct(keys_json.stat().st_mode & 0o777) == oct(0o600)
    out = run_cli(d, "auth")
    assert out.returncode == 0 and "keyring-timeout" in out.stdout

    # A stuck keyring thread must not keep the daemon from stopping.
    d.signal(signal.SIGTERM)
    try:
        assert d.wait(timeout=BOUND) == 0
    except subprocess.TimeoutExpired:
        pytest.fail("the daemon did not exit after SIGTERM while a keyring call hung")
    assert_no_canaries(d, stored, out.stdout)


def test_a_key_in_a_keyring_that_got_locked_is_not_counted(
    home: Path, stop_later: list[DaemonProcess], secret_service: SecretServiceSession
) -> None:
    d = start_daemon(home, clis=["claude"], **bus_env(secret_service))
    stop_later.append(d)
    with d.client(timeout=BOUND) as c:
        c.call("keys.set", {"name": "ANTHROPIC_API_KEY", "value": OTHER_PROGRAM_KEY})
        assert providers(c.call("status"))["claude"]["ready"]
        secret_service.lock()  # a screen lock or timeout
        st = c.call("providers.probe", timeout=BOUND)  # re-probes the keyring
        store = c.call("keys.list")["store"]
    assert store["secure"] is False and store["reason"] in ("keyring-locked", "keyring-timeout")
    claude = providers(st)["claude"]
    assert not claude["ready"], "a key nobody can read is no credential"
    assert claude["reason"] == store["reason"]
    assert "unlock" in claude["hint"].lower()
    assert st["selected"] is None
    assert_no_canaries(d, st, store)
