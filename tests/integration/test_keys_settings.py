"""API keys and settings through a real daemon with no OS keyring: the 0600
file fallback and how loudly it says so, ``takod key set|clear|list|migrate``,
keys feeding readiness, and ``settings.set`` / ``takod prefer`` /
``takod ollama host`` rewriting Takobot's settings file without losing a key.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from takod.client import RemoteError
from tests.fakes.ollama_server import FakeOllama, fake_ollama  # noqa: F401 (fixture)
from tests.harness import DaemonProcess
from tests.integration.test_readiness import (
    CANARIES,
    STORED_ANTHROPIC_KEY,
    assert_no_canaries,
    next_event,
    providers,
    reason_of,
    run_cli,
    start_daemon,
    status,
    stop_later,  # noqa: F401 (fixture)
    subscribe,
    takobot_dumps,
)

OPENAI_KEY = "sk-proj-CANARYopenaimigrate0123456789abcdef"
GROQ_KEY = "gsk_CANARYgroqmigrate0123456789abcdefghij"
TYPO_SECRET = "sk-ant-api03-CANARYtypedintothename0123456789"
CANARIES.extend([OPENAI_KEY, GROQ_KEY, TYPO_SECRET])


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def settings_file(ws: Path) -> Path:
    return ws / ".tako" / "state" / "inference-settings.json"


def cred_sources(st: dict[str, Any], name: str) -> str | None:
    cred = providers(st)[name]["detail"].get("credential")
    return cred["source"] if cred else None


# --- keys without a keyring ---------------------------------------------------------------


def test_keys_without_a_keyring_go_to_a_private_file_and_say_so(home: Path, stop_later: list[DaemonProcess]) -> None:
    d = start_daemon(home, clis=["pi", "claude"])
    stop_later.append(d)
    keys_json = d.state_dir / "keys.json"
    assert reason_of(status(d), "claude") == "no-credentials"
    sub = subscribe(d, "status", "auth")
    try:
        with d.client() as c:
            listed = c.call("keys.list")
            assert listed["keys"] == []
            assert listed["store"]["secure"] is False and listed["store"]["backend"] == "file"
            assert listed["store"]["reason"] == "no-keyring"
            assert str(keys_json) in listed["store"]["hint"]

            stored = c.call("keys.set", {"name": "anthropic_api_key", "value": STORED_ANTHROPIC_KEY})
            assert stored == {"name": "ANTHROPIC_API_KEY", "backend": "file", "masked": "sk-ant-...cdef",
                              "pi_entry": None, "pi_entry_outcome": None}  # not a Tako workspace: no pi entry
        # The store changed: status and auth events go out.
        payload = next_event(sub, "status", lambda p: providers(p)["claude"]["ready"])
        assert providers(payload)["pi"]["ready"]
        next_event(sub, "auth")

        assert mode(keys_json) == 0o600 and mode(d.state_dir) == 0o700
        assert json.loads(keys_json.read_text())["keys"] == {"ANTHROPIC_API_KEY": STORED_ANTHROPIC_KEY}

        st = status(d)
        for name in ("claude", "pi"):
            cred = providers(st)[name]["detail"]["credential"]
            assert (cred["source"], cred["kind"], cred["masked"]) == ("file:ANTHROPIC_API_KEY", "api_key", "sk-ant-...cdef")
            assert "insecure storage" in cred["note"] and "no-keyring" in cred["note"]
        assert providers(st)["pi"]["detail"]["credential"]["provider"] == "anthropic"
        assert st["selected"] == "pi"

        with d.client() as c:
            listed = c.call("keys.list")
            inv = c.call("auth.inventory")
        assert listed["keys"] == [{"name": "ANTHROPIC_API_KEY", "backend": "file", "masked": "sk-ant-...cdef",
                                   "pi_entry": None, "pi_entry_outcome": None}]
        assert inv["key_store"]["secure"] is False
        assert {(x["provider"], x["source"]) for x in inv["credentials"]} >= {
            ("claude", "file:ANTHROPIC_API_KEY"), ("pi", "file:ANTHROPIC_API_KEY")}

        human_list = run_cli(d, "key", "list")
        human_auth = run_cli(d, "auth")
        assert human_list.returncode == 0 and "insecure storage" in human_list.stdout
        assert human_auth.returncode == 0 and "insecure storage" in human_auth.stdout
        assert "sk-ant-...cdef" in human_list.stdout

        cleared = run_cli(d, "key", "clear", "ANTHROPIC_API_KEY", "--json")
        assert cleared.returncode == 0, cleared.stderr
        assert json.loads(cleared.stdout) == {"name": "ANTHROPIC_API_KEY", "removed": True}
        next_event(sub, "status", lambda p: reason_of(p, "claude") == "no-credentials")
        assert not keys_json.exists()  # no plaintext file once nothing needs one
        again = run_cli(d, "key", "clear", "ANTHROPIC_API_KEY", "--json")
        assert json.loads(again.stdout)["removed"] is False
    finally:
        sub.close()
    assert_no_canaries(d, listed, inv, st, human_list.stdout, human_auth.stdout, cleared.stdout)


def test_key_set_reads_the_value_from_stdin(home: Path, stop_later: list[DaemonProcess]) -> None:
    d = start_daemon(home, clis=["claude"])
    stop_later.append(d)
    out = run_cli(d, "key", "set", "ANTHROPIC_API_KEY", "-", "--json", input=STORED_ANTHROPIC_KEY + "\n")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"name": "ANTHROPIC_API_KEY", "backend": "file", "masked": "sk-ant-...cdef",
                                      "pi_entry": None, "pi_entry_outcome": None}
    assert "warning" not in out.stderr  # nothing was on the command line
    human = run_cli(d, "key", "set", "ANTHROPIC_API_KEY", "-", input=STORED_ANTHROPIC_KEY)
    assert human.returncode == 0 and "sk-ant-...cdef" in human.stdout
    assert providers(status(d))["claude"]["ready"]
    keys = json.loads((d.state_dir / "keys.json").read_text())["keys"]
    assert keys == {"ANTHROPIC_API_KEY": STORED_ANTHROPIC_KEY}
    assert_no_canaries(d, out.stdout, out.stderr, human.stdout, human.stderr)


def test_key_value_on_the_command_line_warns(home: Path, stop_later: list[DaemonProcess]) -> None:
    d = start_daemon(home)
    stop_later.append(d)
    out = run_cli(d, "key", "set", "GROQ_API_KEY", GROQ_KEY)
    assert out.returncode == 0 and "visible in `ps`" in out.stderr
    assert_no_canaries(d, out.stdout, out.stderr)


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [("ANTHROPIC_KEY", "ANTHROPIC_API_KEY"), ("OPENAI_APIKEY", "OPENAI_API_KEY"), ("anthropic", "ANTHROPIC_API_KEY")],
)
def test_unknown_key_name_is_a_usage_error_with_suggestions(
    home: Path, stop_later: list[DaemonProcess], name: str, suggestion: str
) -> None:
    d = start_daemon(home)
    stop_later.append(d)
    out = run_cli(d, "key", "set", name, "-", input=STORED_ANTHROPIC_KEY)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "unknown_key_name" in out.stderr and suggestion in out.stderr
    as_json = run_cli(d, "key", "set", name, "-", "--json", input=STORED_ANTHROPIC_KEY)
    assert as_json.returncode == 2
    error = json.loads(as_json.stdout)["error"]
    assert error["code"] == "unknown_key_name" and suggestion in error["message"]
    with d.client() as c:
        assert c.call("keys.list")["keys"] == []
        with pytest.raises(RemoteError) as err:
            c.call("keys.set", {"name": name, "value": STORED_ANTHROPIC_KEY})
    assert (err.value.kind, err.value.code) == (1, "unknown_key_name")
    assert not (d.state_dir / "keys.json").exists()
    assert_no_canaries(d, out.stderr, as_json.stdout, str(err.value))


def test_a_secret_pasted_as_the_key_name_is_not_echoed(home: Path, stop_later: list[DaemonProcess]) -> None:
    d = start_daemon(home)
    stop_later.append(d)
    out = run_cli(d, "key", "clear", TYPO_SECRET, "--json")
    assert out.returncode == 2
    assert json.loads(out.stdout)["error"]["code"] == "unknown_key_name"
    assert_no_canaries(d, out.stdout, out.stderr)


@pytest.mark.parametrize("value", ["", "   ", "two words", "x" * 9000])
def test_bad_key_values_are_rejected(home: Path, stop_later: list[DaemonProcess], value: str) -> None:
    d = start_daemon(home)
    stop_later.append(d)
    with d.client() as c, pytest.raises(RemoteError) as err:
        c.call("keys.set", {"name": "OPENAI_API_KEY", "value": value})
    assert err.value.code == "invalid_key_value"
    assert value.strip() == "" or value not in str(err.value)
    assert not (d.state_dir / "keys.json").exists()


# --- key migrate from a Takobot settings file --------------------------------------------------


def test_key_migrate_moves_plaintext_keys_and_removes_exactly_those(
    home: Path, stop_later: list[DaemonProcess]
) -> None:
    path = settings_file(home)
    path.parent.mkdir(parents=True)
    doc = {
        "api_keys": {
            "OPENAI_API_KEY": OPENAI_KEY,
            "groq_api_key": GROQ_KEY,  # Takobot upper-cases names when it reads them
            "NOT_A_TAKOBOT_KEY": "kept-as-is-0123456789",  # Takobot ignores it; so must migrate
            "ZAI_API_KEY": "   ",  # empty after stripping: Takobot drops it
        },
        "future_field": {"nested": [1, 2, 3]},
        "ollama_host": "",
        "ollama_model": "llama3.2",
        "preferred_provider": "auto",
        "type1_model": "auto",
        "type2_model": "",
    }
    path.write_bytes(takobot_dumps(doc))
    os.chmod(path, 0o644)  # Takobot's chmod may have failed
    d = start_daemon(home, clis=["codex"])
    stop_later.append(d)

    st = status(d)
    codex_cred = providers(st)["codex"]["detail"]["credential"]
    assert codex_cred["source"] == f"{path}:OPENAI_API_KEY" and "migrate" in codex_cred["note"]
    with d.client() as c:
        shown = c.call("settings.get")
    assert shown["api_keys"] == {"GROQ_API_KEY": "gsk_...ghij", "OPENAI_API_KEY": "sk-proj-...cdef"}

    # No keyring here: moving plaintext keys to another plaintext file is refused, not done silently.
    refused = run_cli(d, "key", "migrate", "--json")
    assert refused.returncode == 1 and json.loads(refused.stdout)["error"]["code"] == "no_secure_store"
    assert "--to-file" in refused.stdout and str(path) in refused.stdout
    assert path.read_bytes() == takobot_dumps(doc)

    out = run_cli(d, "key", "migrate", "--to-file", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["migrated"] == ["GROQ_API_KEY", "OPENAI_API_KEY"]
    assert result["failed"] == [] and result["removed_from_settings"] == ["GROQ_API_KEY", "OPENAI_API_KEY"]
    assert result["store"]["secure"] is False

    after = json.loads(path.read_text())
    assert after["api_keys"] == {"NOT_A_TAKOBOT_KEY": "kept-as-is-0123456789", "ZAI_API_KEY": "   "}
    assert {k: v for k, v in after.items() if k != "api_keys"} == {k: v for k, v in doc.items() if k != "api_keys"}
    assert path.read_bytes() == takobot_dumps(after)  # still Takobot's layout
    assert mode(path) == 0o600

    with d.client() as c:
        keys = {k["name"]: k["masked"] for k in c.call("keys.list")["keys"]}
        st = c.call("status")
    assert keys == {"GROQ_API_KEY": "gsk_...ghij", "OPENAI_API_KEY": "sk-proj-...cdef"}
    assert cred_sources(st, "codex") == "file:OPENAI_API_KEY"
    assert providers(st)["codex"]["ready"]

    again = run_cli(d, "key", "migrate", "--json")  # nothing left to move: nothing refused
    assert json.loads(again.stdout)["migrated"] == []
    assert_no_canaries(d, shown, out.stdout, st, again.stdout)


def test_key_migrate_never_touches_an_unparsable_settings_file(home: Path, stop_later: list[DaemonProcess]) -> None:
    path = settings_file(home)
    path.parent.mkdir(parents=True)
    broken = b'{"api_keys": {"OPENAI_API_KEY": "sk-proj-CANARYopenaimigrate01'
    path.write_bytes(broken)
    d = start_daemon(home)
    stop_later.append(d)
    out = run_cli(d, "key", "migrate", "--json")
    assert out.returncode == 1
    assert json.loads(out.stdout)["error"]["code"] == "settings_unreadable"
    assert path.read_bytes() == broken
    assert not (d.state_dir / "keys.json").exists()
    assert "CANARYopenaimigrate01" not in out.stdout + d.log_text() + d.stderr_text()


# --- settings.set --------------------------------------------------------------------------


def test_settings_set_keeps_unknown_keys_and_writes_atomically(home: Path, stop_later: list[DaemonProcess]) -> None:
    path = settings_file(home)
    path.parent.mkdir(parents=True)
    doc = {"api_keys": {"OPENAI_API_KEY": OPENAI_KEY}, "future_field": [1, {"a": None}], "ollama_host": "",
           "ollama_model": "", "preferred_provider": "auto", "type1_model": "", "type2_model": "", "zzz": True}
    path.write_bytes(takobot_dumps(doc))
    inode = path.stat().st_ino
    d = start_daemon(home)
    stop_later.append(d)
    with d.client() as c:
        result = c.call("settings.set", {"field": "type2_model", "value": "  openai/gpt-5   high "})
    assert result["type2_model"] == "openai/gpt-5 high"
    assert result["api_keys"] == {"OPENAI_API_KEY": "sk-proj-...cdef"}
    after = json.loads(path.read_text())
    assert after == {**doc, "type2_model": "openai/gpt-5 high"}
    assert path.read_bytes() == takobot_dumps(after)
    assert mode(path) == 0o600
    assert path.stat().st_ino != inode  # replaced by rename, not rewritten in place
    assert sorted(p.name for p in path.parent.iterdir()) == ["inference-settings.json"]  # no temp file left
    assert_no_canaries(d, result)


def test_settings_set_creates_the_file_when_missing(home: Path, stop_later: list[DaemonProcess]) -> None:
    d = start_daemon(home)
    stop_later.append(d)
    with d.client() as c:
        c.call("settings.set", {"field": "ollama_model", "value": "qwen2.5:14b"})
    path = settings_file(home)
    assert json.loads(path.read_text()) == {"ollama_model": "qwen2.5:14b"}
    assert mode(path) == 0o600


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("preferred_provider", "chatgpt", "invalid_value"),
        ("type1_model", "   ", "invalid_value"),
        ("api_keys", "x", "unknown_setting"),
        ("no_such_setting", "x", "unknown_setting"),
        ("ollama_host", 11434, None),  # wrong type: rejected by the params check
    ],
)
def test_settings_set_rejects_bad_values_as_bad_requests(
    home: Path, stop_later: list[DaemonProcess], field: str, value: Any, code: str | None
) -> None:
    path = settings_file(home)
    path.parent.mkdir(parents=True)
    before = takobot_dumps({"preferred_provider": "codex", "unknown": 1})
    path.write_bytes(before)
    d = start_daemon(home)
    stop_later.append(d)
    with d.client() as c, pytest.raises(RemoteError) as err:
        c.call("settings.set", {"field": field, "value": value})
    assert err.value.kind == 1
    if code:
        assert err.value.code == code
    assert path.read_bytes() == before


def test_settings_set_refuses_to_overwrite_an_unparsable_file(home: Path, stop_later: list[DaemonProcess]) -> None:
    path = settings_file(home)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"{not json")
    d = start_daemon(home)
    stop_later.append(d)
    with d.client() as c, pytest.raises(RemoteError) as err:
        c.call("settings.set", {"field": "preferred_provider", "value": "pi"})
    assert (err.value.kind, err.value.code) == (1, "settings_unreadable")
    assert path.read_bytes() == b"{not json"
    out = run_cli(d, "prefer", "pi")
    assert out.returncode == 2 and "settings_unreadable" in out.stderr


def test_takod_prefer(home: Path, stop_later: list[DaemonProcess]) -> None:
    d = start_daemon(home)
    stop_later.append(d)
    out = run_cli(d, "prefer", "gemini", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert (result["preferred_provider"], result["selected"]) == ("gemini", None)
    assert json.loads(settings_file(home).read_text())["preferred_provider"] == "gemini"
    human = run_cli(d, "prefer", "auto")
    assert human.returncode == 0 and "preferred_provider = auto" in human.stdout
    bad = run_cli(d, "prefer", "chatgpt")
    assert bad.returncode == 2  # argparse refuses it before the daemon sees it
    assert json.loads(settings_file(home).read_text())["preferred_provider"] == "auto"


def test_takod_ollama_host_and_model(home: Path, stop_later: list[DaemonProcess], fake_ollama: FakeOllama) -> None:
    with FakeOllama(mode="refuse") as dead:
        d = start_daemon(home, OLLAMA_HOST=dead.host)
        stop_later.append(d)
        assert reason_of(status(d), "ollama") == "unreachable"
        sub = subscribe(d, "status")
        try:
            out = run_cli(d, "ollama", "host", fake_ollama.url, "--json")
            assert out.returncode == 0, out.stderr
            result = json.loads(out.stdout)
            assert (result["ollama_host"], result["selected"]) == (fake_ollama.url, "ollama")
            payload = next_event(sub, "status", lambda p: providers(p)["ollama"]["ready"])
            assert providers(payload)["ollama"]["detail"]["host_source"] == "settings"

            out = run_cli(d, "ollama", "model", "nomic-embed-text")
            assert out.returncode == 0, out.stderr
            ollama = providers(status(d))["ollama"]
            assert (ollama["detail"]["model"], ollama["detail"]["model_source"]) == ("nomic-embed-text:latest", "settings")

            out = run_cli(d, "ollama", "model", "not-pulled-model")
            assert reason_of(status(d), "ollama") == "model-not-pulled"

            out = run_cli(d, "ollama", "host", "")  # empty: back to OLLAMA_HOST
            assert out.returncode == 0, out.stderr
            ollama = providers(status(d))["ollama"]
            assert (ollama["reason"], ollama["detail"]["host_source"]) == ("unreachable", "env")
        finally:
            sub.close()
    saved = json.loads(settings_file(home).read_text())
    assert saved == {"ollama_host": "", "ollama_model": "not-pulled-model"}
