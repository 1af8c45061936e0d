"""KeyStore without a working keyring: the 0600 file, said so, and nothing leaks.

No Secret Service runs here: D-Bus points at a socket that does not exist, so
automatic resolution finds no keyring, exactly as on a headless server. The
misbehaving keyrings come from tests/fakes/hanging_keyring.py.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from keyring.backends import fail, null
from structlog.testing import capture_logs

from takod_daemon import keystore
from takod_daemon.key_names import UnknownKeyName
from takod_daemon.keystore import KeyInfo, KeyStore, KeyStoreError
from takod_daemon.redact import mask_secret
from tests.fakes import hanging_keyring

pytestmark = pytest.mark.anyio

CANARY = "sk-canary-4c1d9e0f7a2b6c3d5e8f"
CANARY_2 = "sk-canary-second-9f8e7d6c5b4a"
MASKED, MASKED_2 = mask_secret(CANARY), mask_secret(CANARY_2)
# A bound on every wait, so a broken timeout path fails instead of hanging.
BOUND = 30.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def no_keyring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A private HOME and XDG dirs, and a session bus that is not there."""
    for var, sub in (
        ("HOME", "home"),
        ("XDG_CONFIG_HOME", "config"),
        ("XDG_DATA_HOME", "data"),
        ("XDG_STATE_HOME", "state-home"),
        ("XDG_RUNTIME_DIR", "run"),
    ):
        (tmp_path / sub).mkdir(mode=0o700)
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", f"unix:path={tmp_path}/run/no-such-bus")
    monkeypatch.delenv("PYTHON_KEYRING_BACKEND", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)
    hanging_keyring.reset()
    yield
    hanging_keyring.RELEASE.set()  # free any thread a hanging fake still holds
    hanging_keyring.reset()


def select(monkeypatch: pytest.MonkeyPatch, cls: type) -> None:
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", f"{cls.__module__}.{cls.__qualname__}")


async def opened(state: Path, **kwargs: object) -> KeyStore:
    store = KeyStore(state, **kwargs)  # type: ignore[arg-type]
    with anyio.fail_after(BOUND):
        await store.open()
    return store


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- no keyring: the file ---


async def test_without_a_keyring_keys_go_to_a_private_file_and_status_says_so(tmp_path: Path) -> None:
    state = tmp_path / "takod"
    store = await opened(state)

    status = store.status
    assert (status.backend, status.secure, status.reason) == ("file", False, "no-keyring")
    assert status.hint and str(state / "keys.json") in status.hint and "takod doctor" in status.hint

    info = await store.set(" openai_api_key ", f"  {CANARY}\n")
    assert info == KeyInfo("OPENAI_API_KEY", "file", MASKED)
    assert await store.get("OPENAI_API_KEY") == CANARY
    assert await store.get("GEMINI_API_KEY") is None

    assert mode(state) == 0o700
    assert mode(state / "keys.json") == 0o600
    assert json.loads((state / "keys.json").read_text()) == {"version": 1, "keys": {"OPENAI_API_KEY": CANARY}}
    assert [i.name for i in await store.list()] == ["OPENAI_API_KEY"]

    assert await store.delete("openai_api_key") is True
    assert await store.delete("OPENAI_API_KEY") is False
    assert await store.list() == []
    assert not (state / "keys.json").exists()  # no plaintext file once nothing needs it


async def test_a_reopened_store_reads_what_the_last_one_wrote(tmp_path: Path) -> None:
    first = await opened(tmp_path / "s")
    await first.set("GROQ_API_KEY", CANARY)
    second = await opened(tmp_path / "s")
    assert await second.get("groq_api_key") == CANARY


async def test_an_existing_loose_state_dir_and_file_are_made_private(tmp_path: Path) -> None:
    state = tmp_path / "s"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    (state / "keys.json").write_text(json.dumps({"version": 1, "keys": {"XAI_API_KEY": CANARY}}))
    os.chmod(state / "keys.json", 0o644)

    store = await opened(state)
    assert await store.get("XAI_API_KEY") == CANARY
    assert mode(state) == 0o700
    assert mode(state / "keys.json") == 0o600


async def test_a_failed_write_leaves_the_old_file_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "s"
    store = await opened(state)
    await store.set("OPENAI_API_KEY", CANARY)
    before = (state / "keys.json").read_bytes()

    def disk_full(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(KeyStoreError) as caught:
        await store.set("GEMINI_API_KEY", CANARY_2)
    monkeypatch.undo()

    assert caught.value.code == "keystore_io"
    assert CANARY_2 not in str(caught.value)
    assert (state / "keys.json").read_bytes() == before
    assert sorted(p.name for p in state.iterdir()) == ["keys.json"]  # no temp file left behind


async def test_an_unparseable_file_is_reported_and_never_overwritten(tmp_path: Path) -> None:
    state = tmp_path / "s"
    state.mkdir(mode=0o700)
    damaged = b'{"version": 1, "keys": {"OPENAI_API_KEY": "' + CANARY.encode()
    (state / "keys.json").write_bytes(damaged)
    store = await opened(state)

    with pytest.raises(KeyStoreError) as caught:
        await store.set("GEMINI_API_KEY", CANARY_2)
    assert caught.value.code == "keystore_file_unusable"
    assert "not valid JSON" in str(caught.value) and CANARY not in str(caught.value)
    assert (state / "keys.json").read_bytes() == damaged


# --- how the backend is chosen ---


@pytest.mark.parametrize(
    ("setting", "reason"),
    [
        ("keyring.backends.fail.Keyring", "no-keyring"),
        ("keyring.backends.null.Keyring", "keyring-disabled"),
        ("keyrings.alt.file.PlaintextKeyring", "keyring-insecure"),
        ("keyring.backends.NoSuchModule.Keyring", "keyring-misconfigured"),
        ("not a class name", "keyring-misconfigured"),
        ("keyring.backends.chainer.ChainerBackend", "no-keyring"),  # chains nothing here
    ],
)
async def test_python_keyring_backend_is_respected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: str, reason: str
) -> None:
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", setting)
    store = await opened(tmp_path / "s")
    assert (store.status.backend, store.status.secure, store.status.reason) == ("file", False, reason)
    assert store.status.hint
    assert "keyrings.alt" not in sys.modules  # refused by name, never imported


async def test_an_installed_keyrings_alt_is_never_imported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A stand-in distribution registering keyrings.alt's plugin entry point, as
    # the real one does: keyring's own resolution would import and rank it.
    site = tmp_path / "site"
    package = site / "keyrings" / "alt"
    package.mkdir(parents=True)
    (site / "keyrings" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "file.py").write_text("# importing this at all is the failure\n")
    dist_info = site / "keyrings.alt-5.0.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: keyrings.alt\nVersion: 5.0.0\n")
    (dist_info / "entry_points.txt").write_text("[keyring.backends]\nfile = keyrings.alt.file\n")
    monkeypatch.syspath_prepend(str(site))
    from importlib import metadata

    assert "keyrings.alt.file" in [ep.value for ep in metadata.entry_points(group="keyring.backends")]

    store = await opened(tmp_path / "s")
    assert store.status.reason == "no-keyring"
    assert "keyrings.alt.file" not in sys.modules


async def test_keyringrc_cfg_is_respected(tmp_path: Path) -> None:
    config = tmp_path / "config" / "python_keyring"
    config.mkdir()
    (config / "keyringrc.cfg").write_text("[backend]\ndefault-keyring = keyring.backends.null.Keyring\n")
    store = await opened(tmp_path / "s")
    assert store.status.reason == "keyring-disabled"
    assert str(config / "keyringrc.cfg") in (store.status.hint or "")


async def test_a_given_backend_is_checked_like_a_resolved_one(tmp_path: Path) -> None:
    assert (await opened(tmp_path / "a", backend=fail.Keyring())).status.reason == "no-keyring"
    assert (await opened(tmp_path / "b", backend=null.Keyring())).status.reason == "keyring-disabled"


async def test_the_selected_keyring_is_used_after_a_good_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    select(monkeypatch, hanging_keyring.LockableKeyring)
    state = tmp_path / "s"
    store = await opened(state)
    assert (store.status.backend, store.status.secure, store.status.reason) == ("keyring", True, None)
    assert store.status.keyring == "tests.fakes.hanging_keyring.LockableKeyring"
    assert hanging_keyring.LockableKeyring.items == {}  # the canary was removed

    assert await store.set("ANTHROPIC_API_KEY", CANARY) == KeyInfo("ANTHROPIC_API_KEY", "keyring", MASKED)
    assert hanging_keyring.LockableKeyring.items == {("takod", "ANTHROPIC_API_KEY"): CANARY}
    assert not (state / "keys.json").exists()
    index = json.loads((state / "key-index.json").read_text())
    assert index == {"version": 1, "names": ["ANTHROPIC_API_KEY"]}  # names only
    assert await store.list() == [KeyInfo("ANTHROPIC_API_KEY", "keyring", MASKED)]
    assert await store.delete("ANTHROPIC_API_KEY") is True
    assert await store.delete("ANTHROPIC_API_KEY") is False
    assert await store.list() == []


async def test_a_lost_index_is_rebuilt_from_the_keyring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    select(monkeypatch, hanging_keyring.LockableKeyring)
    state = tmp_path / "s"
    store = await opened(state)
    await store.set("MISTRAL_API_KEY", CANARY)
    (state / "key-index.json").write_text("{not json")
    assert [i.name for i in await store.list()] == ["MISTRAL_API_KEY"]
    assert json.loads((state / "key-index.json").read_text())["names"] == ["MISTRAL_API_KEY"]


# --- a keyring that hangs ---


async def test_a_hanging_keyring_falls_back_within_the_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    select(monkeypatch, hanging_keyring.HangingKeyring)
    store = await opened(tmp_path / "s", timeout=0.2)  # opened() fails the test if this hangs

    status = store.status
    assert (status.backend, status.secure, status.reason) == ("file", False, "keyring-timeout")
    assert "0.2s" in (status.hint or "")
    with anyio.fail_after(BOUND):
        assert (await store.set("OPENAI_API_KEY", CANARY)).backend == "file"
        assert await store.get("OPENAI_API_KEY") == CANARY


async def test_a_still_hung_keyring_costs_no_second_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    select(monkeypatch, hanging_keyring.HangingKeyring)
    store = await opened(tmp_path / "s", timeout=0.2)
    assert hanging_keyring.HangingKeyring.calls == 1

    with anyio.fail_after(BOUND):
        status = await store.open()  # e.g. doctor re-probing while the first call is stuck
    assert status.reason == "keyring-timeout"
    assert "still not returned" in (status.detail or "")
    assert hanging_keyring.HangingKeyring.calls == 1


async def test_a_keyring_that_hangs_while_being_chosen_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    select(monkeypatch, hanging_keyring.HangingPriorityKeyring)
    store = await opened(tmp_path / "s", timeout=0.2)
    assert (store.status.backend, store.status.reason) == ("file", "keyring-timeout")


async def test_a_keyring_that_starts_hanging_mid_session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    select(monkeypatch, hanging_keyring.LockableKeyring)
    store = await opened(tmp_path / "s", timeout=0.2)
    await store.set("OPENAI_API_KEY", CANARY)

    def hang(self: object, service: str, username: str) -> None:
        hanging_keyring.RELEASE.wait(60)

    monkeypatch.setattr(hanging_keyring.LockableKeyring, "get_password", hang)
    with anyio.fail_after(BOUND), pytest.raises(KeyStoreError) as caught:
        await store.get("OPENAI_API_KEY")
    assert (caught.value.code, caught.value.reason) == ("key_unavailable", "keyring-timeout")
    assert store.status.reason == "keyring-timeout"


# --- a keyring locked mid-session ---


async def test_a_locked_keyring_is_reported_and_its_keys_are_not_called_absent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    select(monkeypatch, hanging_keyring.LockableKeyring)
    state = tmp_path / "s"
    store = await opened(state)
    await store.set("GEMINI_API_KEY", CANARY)

    hanging_keyring.LockableKeyring.locked = True
    with pytest.raises(KeyStoreError) as caught:
        await store.get("GEMINI_API_KEY")
    assert (caught.value.code, caught.value.reason) == ("key_unavailable", "keyring-locked")
    assert (store.status.backend, store.status.secure, store.status.reason) == ("file", False, "keyring-locked")
    assert await store.get("GROQ_API_KEY") is None  # never stored anywhere: truly absent

    # New keys still land somewhere, and the answer says where.
    assert (await store.set("OPENAI_API_KEY", CANARY_2)).backend == "file"
    assert await store.list() == [
        KeyInfo("GEMINI_API_KEY", "keyring", "", available=False),
        KeyInfo("OPENAI_API_KEY", "file", MASKED_2),
    ]
    with pytest.raises(KeyStoreError):
        await store.delete("GEMINI_API_KEY")  # cannot, and says so

    # Unlocked again: the next open moves the plaintext key into the keyring.
    hanging_keyring.LockableKeyring.locked = False
    status = await store.open()
    assert (status.backend, status.secure) == ("keyring", True)
    assert not (state / "keys.json").exists()
    assert hanging_keyring.LockableKeyring.items[("takod", "OPENAI_API_KEY")] == CANARY_2
    assert [(i.name, i.backend) for i in await store.list()] == [
        ("GEMINI_API_KEY", "keyring"),
        ("OPENAI_API_KEY", "keyring"),
    ]


# --- migrate ---


async def test_migrate_reports_what_was_stored_and_what_was_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    select(monkeypatch, hanging_keyring.LockableKeyring)
    store = await opened(tmp_path / "s")
    result = await store.migrate(
        {"OPENAI_API_KEY": CANARY, "claude_api_key": CANARY_2, "NOT_A_KEY": CANARY, "GROQ_API_KEY": "  "}
    )
    assert result.stored == ["OPENAI_API_KEY", "claude_api_key"]
    assert sorted(result.failed) == ["GROQ_API_KEY", "NOT_A_KEY"]
    assert result.failed["NOT_A_KEY"].startswith("unknown_key_name: ")
    assert result.failed["GROQ_API_KEY"].startswith("invalid_key_value: ")
    assert CANARY not in repr(result) and CANARY_2 not in repr(result)
    assert await store.get("CLAUDE_API_KEY") == CANARY_2


# --- secrets never leak ---


async def test_canary_secrets_never_reach_errors_reprs_or_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    select(monkeypatch, hanging_keyring.LockableKeyring)
    texts: list[str] = []
    with capture_logs() as logs:
        store = await opened(tmp_path / "s", timeout=0.2)
        texts += [repr(await store.set("OPENAI_API_KEY", CANARY)), repr(await store.list()), repr(store)]
        hanging_keyring.LockableKeyring.locked = True
        texts.append(repr(await store.set("GEMINI_API_KEY", CANARY_2)))
        for bad_call in (
            store.get("OPENAI_API_KEY"),  # in the locked keyring
            store.set(CANARY, CANARY_2),  # a secret pasted where the name goes
            store.set("GROQ_API_KEY", f"{CANARY} {CANARY_2}"),  # two values pasted at once
            store.delete(CANARY),
        ):
            with pytest.raises((KeyStoreError, UnknownKeyName)) as caught:
                await bad_call
            texts += [str(caught.value), repr(caught.value)]
        texts += [repr(store.status), repr(await store.list()), repr(store)]

    texts += [repr(event) for event in logs]
    assert any("keystore.fallback" in text for text in texts)  # the logs were captured
    leaked = [text for text in texts if CANARY in text or CANARY_2 in text]
    assert leaked == []


def test_check_value_rejects_what_cannot_be_a_key_without_echoing_it() -> None:
    for bad in ("", "   ", f"{CANARY}\n{CANARY}", CANARY + "\x00", "x" * (keystore.MAX_VALUE_CHARS + 1), 42):
        with pytest.raises(KeyStoreError) as caught:
            keystore.check_value("OPENAI_API_KEY", bad)
        assert caught.value.code == "invalid_key_value"
        assert "OPENAI_API_KEY" in str(caught.value) and CANARY not in str(caught.value)
    assert keystore.check_value("OPENAI_API_KEY", f" {CANARY}\n") == CANARY


async def test_operations_before_open_are_a_programming_error(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "s")
    with pytest.raises(RuntimeError, match="open"):
        await store.get("OPENAI_API_KEY")
    with pytest.raises(RuntimeError, match="open"):
        store.status  # noqa: B018
