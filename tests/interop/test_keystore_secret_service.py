"""KeyStore against a real Secret Service (gnome-keyring on a private D-Bus).

What takod stores must be what other programs see (``secret-tool``, keyring in
another process) and the other way round; the probe must leave nothing
behind; and a locked keyring must be reported, not waited on for ever.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
import pytest

from takod_daemon.keystore import KeyStore, KeyStoreError
from takod_daemon.redact import mask_secret
from tests.fakes.secret_service import (  # noqa: F401 (secret_service is a fixture)
    SecretServiceSession,
    require_programs,
    running_secret_service,
    secret_service,
)

pytestmark = [pytest.mark.anyio, pytest.mark.interop]

CANARY = "sk-canary-interop-1a2b3c4d5e6f7a8b"
CANARY_2 = "AIzaCanaryInterop0123456789abcdefg"
BOUND = 30.0
SECRET_SERVICE = "keyring.backends.SecretService.Keyring"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def opened(state: Path, timeout: float = 10.0) -> KeyStore:
    store = KeyStore(state, timeout=timeout)
    with anyio.fail_after(BOUND):
        await store.open()
    return store


def keyring_in_another_process(session: SecretServiceSession, name: str) -> str | None:
    script = f"import keyring; print(keyring.get_password('takod', {name!r}) or '', end='')"
    done = session.run(sys.executable, "-c", script, timeout=BOUND)
    assert done.returncode == 0, done.stderr
    return done.stdout or None


async def test_round_trip_is_visible_to_other_programs(secret_service: SecretServiceSession, tmp_path: Path) -> None:
    state = tmp_path / "takod"
    store = await opened(state)
    status = store.status
    assert (status.backend, status.secure, status.reason, status.keyring) == ("keyring", True, None, SECRET_SERVICE)
    assert secret_service.lookup(service="takod", username="__probe__") is None  # the canary is gone
    assert "__probe__" not in secret_service.search(service="takod")

    info = await store.set("openai_api_key", CANARY)
    assert (info.name, info.backend, info.masked) == ("OPENAI_API_KEY", "keyring", mask_secret(CANARY))
    assert secret_service.lookup(service="takod", username="OPENAI_API_KEY") == CANARY
    assert keyring_in_another_process(secret_service, "OPENAI_API_KEY") == CANARY
    assert not (state / "keys.json").exists()  # nothing in plaintext
    assert CANARY not in (state / "key-index.json").read_text()

    assert await store.get("OPENAI_API_KEY") == CANARY
    assert [(i.name, i.backend, i.masked) for i in await store.list()] == [
        ("OPENAI_API_KEY", "keyring", mask_secret(CANARY))
    ]

    assert await store.delete("OPENAI_API_KEY") is True
    assert secret_service.lookup(service="takod", username="OPENAI_API_KEY") is None
    assert await store.delete("OPENAI_API_KEY") is False
    assert await store.list() == []
    assert secret_service.search(service="takod") == ""


async def test_a_key_stored_by_another_program_is_read(secret_service: SecretServiceSession, tmp_path: Path) -> None:
    secret_service.store("gemini", CANARY_2, service="takod", username="GEMINI_API_KEY")
    store = await opened(tmp_path / "takod")
    assert await store.get("gemini_api_key") == CANARY_2
    assert await store.delete("GEMINI_API_KEY") is True
    assert secret_service.lookup(service="takod", username="GEMINI_API_KEY") is None


async def test_a_locked_keyring_is_reported_and_the_file_used(
    secret_service: SecretServiceSession, tmp_path: Path
) -> None:
    state = tmp_path / "takod"
    store = await opened(state)
    await store.set("ANTHROPIC_API_KEY", CANARY)
    secret_service.lock()

    # Locked with no way to show an unlock prompt: reported, whether the
    # service refuses at once (gnome-keyring here) or leaves the call hanging.
    with anyio.fail_after(BOUND), pytest.raises(KeyStoreError) as caught:
        await store.get("ANTHROPIC_API_KEY")
    assert caught.value.code == "key_unavailable"
    assert caught.value.reason in ("keyring-locked", "keyring-timeout")
    assert CANARY not in str(caught.value)

    fresh = await opened(tmp_path / "other", timeout=5.0)
    assert (fresh.status.backend, fresh.status.secure) == ("file", False)
    assert fresh.status.reason in ("keyring-locked", "keyring-timeout")
    assert (await fresh.set("OPENAI_API_KEY", CANARY_2)).backend == "file"
    assert secret_service.lookup(service="takod", username="OPENAI_API_KEY") is None


async def test_keys_kept_in_the_file_move_into_the_keyring(
    secret_service: SecretServiceSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "takod"
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.null.Keyring")
    without = await opened(state)
    assert without.status.reason == "keyring-disabled"
    await without.set("GROQ_API_KEY", CANARY)
    assert (state / "keys.json").exists()

    monkeypatch.delenv("PYTHON_KEYRING_BACKEND")
    store = await opened(state)
    assert store.status.backend == "keyring"
    assert not (state / "keys.json").exists()
    assert secret_service.lookup(service="takod", username="GROQ_API_KEY") == CANARY
    assert [(i.name, i.backend) for i in await store.list()] == [("GROQ_API_KEY", "keyring")]


def test_no_secret_service_process_outlives_its_session() -> None:
    require_programs()
    with running_secret_service() as session:
        assert all(alive(pid) for pid in session.pids)
    assert not any(alive(pid) for pid in session.pids)
    assert not session.root.exists()


def alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)  # the whole group: no stray child either
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize(("ci", "outcome"), [("", pytest.skip.Exception), ("1", pytest.fail.Exception)])
def test_missing_programs_skip_locally_and_fail_under_ci(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ci: str, outcome: type[BaseException]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # none of the programs is found
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="scripts/test.sh"):
        require_programs()
