"""``.tako/state/inference-settings.json``: Takobot-compatible reads, safe rewrites."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from takod_daemon.credentials.files import FileProblem
from takod_daemon.credentials.settings import (
    PROVIDER_PREFERENCES,
    InferenceSettings,
    SettingsError,
    load_settings,
    normalise,
    remove_api_keys,
    set_field,
    settings_path,
)

CANARY = "sk-ant-api03-CANARYsettingsSECRET0123456789-3f9a"
CANARY_CORE = "CANARYsettingsSECRET"
OTHER_KEY = "sk-proj-OTHERkeyVALUE0123456789abcd"


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return settings_path(tmp_path / "ws")


def write_like_takobot(path: Path, payload: object) -> None:
    """Takobot's save: json.dumps(indent=2, sort_keys=True) + newline, then chmod 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.chmod(path, 0o600)


def test_path_is_under_the_workspace_state_dir(tmp_path: Path) -> None:
    assert settings_path(tmp_path) == tmp_path / ".tako" / "state" / "inference-settings.json"


def test_missing_file_gives_defaults(path: Path) -> None:
    assert load_settings(path) == InferenceSettings()


def test_reads_a_takobot_file_with_takobot_normalisation(path: Path) -> None:
    write_like_takobot(
        path,
        {
            "preferred_provider": "  PI ",
            "ollama_model": "  llama3   8b ",
            "ollama_host": " http://127.0.0.1:11434 ",
            "type1_model": "Default",
            "type2_model": "m" * 300,
            "api_keys": {
                " openai_api_key ": f"  {OTHER_KEY}  ",
                "ANTHROPIC_API_KEY": CANARY,
                "NOT_A_KNOWN_VAR": "x" * 20,
                "GROQ_API_KEY": "   ",
                "XAI_API_KEY": 12345,
            },
        },
    )
    settings = load_settings(path)
    assert settings == InferenceSettings(
        preferred_provider="pi",
        ollama_model="llama3 8b",
        ollama_host="http://127.0.0.1:11434",
        type1_model="auto",
        type2_model="m" * 180,
        api_keys={"OPENAI_API_KEY": OTHER_KEY, "ANTHROPIC_API_KEY": CANARY},
    )


@pytest.mark.parametrize("provider", PROVIDER_PREFERENCES)
def test_every_takod_provider_is_a_valid_preference(path: Path, provider: str) -> None:
    write_like_takobot(path, {"preferred_provider": provider.upper()})
    assert load_settings(path).preferred_provider == provider


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"preferred_provider": "nonsense"}, InferenceSettings()),
        ({"preferred_provider": 3}, InferenceSettings()),
        ({"ollama_model": 5, "ollama_host": None}, InferenceSettings(ollama_model="5")),
        ({"api_keys": ["OPENAI_API_KEY"]}, InferenceSettings()),
        ({"type1_model": "  NONE "}, InferenceSettings(type1_model="auto")),
    ],
)
def test_wrong_values_are_normalised_like_takobot(doc: dict, expected: InferenceSettings) -> None:
    assert normalise(doc) == expected


def test_repr_masks_api_keys(path: Path) -> None:
    write_like_takobot(path, {"api_keys": {"ANTHROPIC_API_KEY": CANARY}})
    settings = load_settings(path)
    assert CANARY_CORE not in repr(settings)
    assert CANARY_CORE not in str(settings)
    assert "ANTHROPIC_API_KEY" in repr(settings)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (('{"api_keys": {"ANTHROPIC_API_KEY": "' + CANARY + '"').encode(), "malformed"),  # half-written
        (f'["{CANARY}"]'.encode(), "invalid"),
        (b"", "empty"),
        (b"\xff\xfe" + CANARY.encode(), "malformed"),
        (b"  \n", "empty"),
    ],
)
def test_an_unusable_file_is_reported_without_its_content(path: Path, content: bytes, reason: str) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.raises(FileProblem) as info:
        load_settings(path)
    assert info.value.reason == reason
    assert CANARY_CORE not in str(info.value)
    assert CANARY_CORE not in repr(info.value)


def test_a_bom_is_tolerated(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"preferred_provider": "codex"}).encode())
    assert load_settings(path).preferred_provider == "codex"


def test_a_huge_file_is_refused(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"x": "' + b"a" * (5 * 1024 * 1024) + b'"}')
    with pytest.raises(FileProblem) as info:
        load_settings(path)
    assert info.value.reason == "too_large"


def test_a_directory_in_its_place_is_refused(path: Path) -> None:
    path.mkdir(parents=True)
    with pytest.raises(FileProblem) as info:
        load_settings(path)
    assert info.value.reason == "not_a_file"


def test_set_field_creates_a_private_file_takobot_can_read(path: Path) -> None:
    settings = set_field(path, "preferred_provider", "  Gemini ")
    assert settings.preferred_provider == "gemini"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert text.endswith("}\n") and text.startswith('{\n  "')
    assert json.loads(text) == {"preferred_provider": "gemini"}
    assert load_settings(path).preferred_provider == "gemini"


def test_set_field_keeps_unknown_keys_and_every_api_keys_entry(path: Path) -> None:
    original = {
        "preferred_provider": "pi",
        "future_field": {"nested": [1, 2]},
        "api_keys": {"ANTHROPIC_API_KEY": CANARY, "FUTURE_API_KEY": OTHER_KEY},
        "ollama_model": "qwen",
    }
    write_like_takobot(path, original)
    os.chmod(path, 0o644)
    set_field(path, "type1_model", "openai/gpt-5.1-codex-mini")
    after = json.loads(path.read_text())
    assert after == {**original, "type1_model": "openai/gpt-5.1-codex-mini"}
    assert list(after) == sorted(after)  # Takobot's sorted layout
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_set_field_writes_through_a_symlink(path: Path, tmp_path: Path) -> None:
    real = tmp_path / "dotfiles" / "inference-settings.json"
    write_like_takobot(real, {"preferred_provider": "pi"})
    path.parent.mkdir(parents=True)
    path.symlink_to(real)
    set_field(path, "ollama_host", "http://127.0.0.1:11500")
    assert path.is_symlink()
    assert json.loads(real.read_text())["ollama_host"] == "http://127.0.0.1:11500"


@pytest.mark.parametrize(
    ("field", "value", "stored"),
    [
        ("preferred_provider", "", "auto"),
        ("preferred_provider", "AUTO", "auto"),
        ("preferred_provider", "claude", "claude"),
        ("ollama_model", "  ", ""),
        ("ollama_model", " llama3:8b ", "llama3:8b"),
        ("type2_model", "none", "auto"),
        ("type2_model", "x" * 200, "x" * 180),
    ],
)
def test_set_field_cleans_values_like_takobot(path: Path, field: str, value: str, stored: str) -> None:
    set_field(path, field, value)
    assert json.loads(path.read_text())[field] == stored


@pytest.mark.parametrize("value", ["http://127.0.0.1:11434", "https://ollama.example.com/proxy", "localhost",
                                   "10.0.0.5:11434", "[::1]:11434", "ollama:11434", "gpu.lan", "http://ollama"])
def test_ollama_host_takes_urls_and_ollamas_short_forms(path: Path, value: str) -> None:
    set_field(path, "ollama_host", value)
    assert json.loads(path.read_text())["ollama_host"] == value


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("preferred_provider", CANARY, "unsupported provider (expected: " + ", ".join(PROVIDER_PREFERENCES) + ")"),
        ("type1_model", "   ", "type1 model cannot be empty (use `auto` to clear override)."),
        ("type2_model", "", "type2 model cannot be empty (use `auto` to clear override)."),
        ("ollama_host", 11434, "ollama_host must be a string"),
        ("ollama_host", "ftp://x", "not an address Ollama answers at: give http://HOST:PORT"),
        ("ollama_host", "not-a-url", "not an address Ollama answers at"),
        ("ollama_host", "http://127.0.0.1:99999", "not an address Ollama answers at"),
        ("ollama_host", "http://127.0.0.1:port", "not an address Ollama answers at"),
        ("ollama_host", "http://", "not an address Ollama answers at"),
        ("ollama_host", f"http://{CANARY}@", "not an address Ollama answers at"),
        ("api_keys", CANARY, "unknown setting (expected one of: "),
        (CANARY, "x", "unknown setting (expected one of: "),
    ],
)
def test_set_field_rejects_bad_values_and_writes_nothing(path: Path, field: str, value: object, message: str) -> None:
    write_like_takobot(path, {"preferred_provider": "pi"})
    before = path.read_bytes()
    with pytest.raises(SettingsError) as info:
        set_field(path, field, value)
    assert str(info.value).startswith(message)
    assert CANARY_CORE not in str(info.value) and CANARY_CORE not in repr(info.value)
    assert path.read_bytes() == before


@pytest.mark.parametrize("content", [b'{"preferred_provider": "pi", "api_keys": {', b"[]", b"", b"\x00\xff"])
def test_set_field_never_writes_over_an_unusable_file(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.raises(FileProblem):
        set_field(path, "preferred_provider", "codex")
    assert path.read_bytes() == content


def test_remove_api_keys_removes_only_the_named_entries(path: Path) -> None:
    write_like_takobot(
        path,
        {
            "preferred_provider": "pi",
            "api_keys": {" anthropic_api_key": CANARY, "OPENAI_API_KEY": OTHER_KEY, "FUTURE_API_KEY": "keep-me-0123"},
            "future_field": True,
        },
    )
    removed = remove_api_keys(path, ["ANTHROPIC_API_KEY", "GROQ_API_KEY"])
    assert removed == ["ANTHROPIC_API_KEY"]
    after = json.loads(path.read_text())
    assert after["api_keys"] == {"OPENAI_API_KEY": OTHER_KEY, "FUTURE_API_KEY": "keep-me-0123"}
    assert after["future_field"] is True
    assert CANARY_CORE not in path.read_text()
    assert load_settings(path).api_keys == {"OPENAI_API_KEY": OTHER_KEY}


def test_remove_api_keys_does_not_rewrite_when_nothing_matches(path: Path) -> None:
    write_like_takobot(path, {"api_keys": {"OPENAI_API_KEY": OTHER_KEY}})
    before = path.stat()
    assert remove_api_keys(path, ["ANTHROPIC_API_KEY"]) == []
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_remove_api_keys_on_a_missing_file_does_nothing(path: Path) -> None:
    assert remove_api_keys(path, ["OPENAI_API_KEY"]) == []
    assert not path.exists()


def test_remove_api_keys_never_writes_over_an_unusable_file(path: Path) -> None:
    path.parent.mkdir(parents=True)
    content = ('{"api_keys": {"OPENAI_API_KEY": "' + CANARY).encode()
    path.write_bytes(content)
    with pytest.raises(FileProblem) as info:
        remove_api_keys(path, ["OPENAI_API_KEY"])
    assert CANARY_CORE not in str(info.value)
    assert path.read_bytes() == content
