"""Gemini CLI credential discovery (read-only)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from takod_daemon.credentials.files import FileProblem
from takod_daemon.credentials.gemini_auth import (
    auth_type_from_env,
    discover,
    gemini_dir,
    read_oauth_creds,
    read_selected_auth_type,
    strip_json_comments,
)

CANARY = "CANARYgeminiSECRET0123456789"
ACCESS = f"ya29.{CANARY}-acc1"
REFRESH = f"1//{CANARY}-ref1"
API_KEY = f"AIzaSy{CANARY}-3f9a"
NOW = 1_800_000_000.0


def make_jwt(claims: dict) -> str:
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"eyJhbGciOiJSUzI1NiJ9.{payload}.{CANARY}"


def creds(**overrides: object) -> dict:
    """oauth_creds.json as google-auth-library writes it."""
    doc = {
        "access_token": ACCESS,
        "refresh_token": REFRESH,
        "scope": "https://www.googleapis.com/auth/cloud-platform openid",
        "token_type": "Bearer",
        "id_token": make_jwt({"email": "me@gmail.com", "azp": "client"}),
        "expiry_date": 1_800_003_600_500,
    }
    doc.update(overrides)
    return doc


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    (home / ".gemini").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    return home


def write(path: Path, content: str | dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content, indent=2))
    path.chmod(0o600)
    return path


def env(home: Path, **extra: str) -> dict[str, str]:
    return {"HOME": str(home), **extra}


V2_PERSONAL = """{
  // written by the CLI's /auth dialog
  "security": {"auth": {"selectedType": "oauth-personal"}},
  /* a block
     comment */
  "general": {"homepage": "https://example.com/a//b"}
}
"""


def test_strip_json_comments_keeps_strings_and_lines() -> None:
    stripped = strip_json_comments(V2_PERSONAL)
    assert json.loads(stripped)["general"]["homepage"] == "https://example.com/a//b"
    assert stripped.count("\n") == V2_PERSONAL.count("\n")
    assert strip_json_comments('{"a": "x\\" // y"} // z') == '{"a": "x\\" // y"}     '


def test_gemini_cli_home_moves_the_directory(home: Path, tmp_path: Path) -> None:
    assert gemini_dir(env(home)) == home / ".gemini"
    assert gemini_dir(env(home, GEMINI_CLI_HOME=str(tmp_path / "g"))) == tmp_path / "g" / ".gemini"


@pytest.mark.parametrize(
    ("content", "selected"),
    [
        (V2_PERSONAL, "oauth-personal"),
        ('{"selectedAuthType": "gemini-api-key"}', "gemini-api-key"),
        ('{"selectedAuthType": "x", "security": {"auth": {"selectedType": "vertex-ai"}}}', "vertex-ai"),
        ('{"security": {"auth": {}}}', None),
        ("\ufeff{}", None),
    ],
)
def test_selected_auth_type_v1_and_v2(home: Path, content: str, selected: str | None) -> None:
    path = write(home / ".gemini" / "settings.json", content)
    assert read_selected_auth_type(path) == selected


@pytest.mark.parametrize(
    ("variables", "selected"),
    [
        ({"GOOGLE_GENAI_USE_GCA": "true", "GEMINI_API_KEY": "k"}, "oauth-personal"),
        ({"GOOGLE_GENAI_USE_VERTEXAI": "TRUE", "GEMINI_API_KEY": "k"}, "vertex-ai"),
        ({"GOOGLE_GEMINI_BASE_URL": "http://127.0.0.1:9", "GEMINI_API_KEY": "k"}, "gateway"),
        ({"GEMINI_API_KEY": "k"}, "gemini-api-key"),
        ({"CLOUD_SHELL": "true"}, "compute-default-credentials"),
        ({"GOOGLE_GENAI_USE_GCA": "false"}, None),
    ],
)
def test_auth_type_from_environment_in_cli_order(variables: dict, selected: str | None) -> None:
    assert auth_type_from_env(variables) == selected


def test_personal_login_is_reported_unverified(home: Path) -> None:
    write(home / ".gemini" / "settings.json", V2_PERSONAL)
    path = write(home / ".gemini" / "oauth_creds.json", creds())
    [summary] = discover(env(home))
    assert summary.provider == "gemini"
    assert summary.source == str(path)
    assert summary.kind == "oauth"
    assert summary.masked == "...acc1"
    assert summary.expires_at == 1_800_003_600.5
    assert summary.refreshable and summary.read_only
    assert summary.unverified and "2026-06-18" in summary.note
    assert summary.account == "me@gmail.com"


def test_a_token_without_a_refresh_token_needs_login_once_expired(home: Path) -> None:
    write(home / ".gemini" / "settings.json", V2_PERSONAL)
    write(home / ".gemini" / "oauth_creds.json", creds(refresh_token=None, expiry_date=int(NOW * 1000) - 1))
    [summary] = discover(env(home))
    assert summary.needs_login(NOW)


def test_settings_win_over_an_exported_api_key(home: Path) -> None:
    write(home / ".gemini" / "settings.json", V2_PERSONAL)
    write(home / ".gemini" / "oauth_creds.json", creds())
    found = discover(env(home, GEMINI_API_KEY=API_KEY))
    assert [(s.source, s.kind) for s in found] == [
        (str(home / ".gemini" / "oauth_creds.json"), "oauth"),
        ("GEMINI_API_KEY", "api_key"),
    ]
    assert "ignores it while set to oauth-personal" in found[1].note


def test_api_key_mode(home: Path) -> None:
    write(home / ".gemini" / "settings.json", '{"selectedAuthType": "gemini-api-key"}')
    write(home / ".gemini" / "oauth_creds.json", creds())
    [summary] = discover(env(home, GEMINI_API_KEY=API_KEY))
    assert (summary.source, summary.kind, summary.masked) == ("GEMINI_API_KEY", "api_key", "...3f9a")
    assert not summary.unverified and summary.note is None


def test_api_key_from_the_environment_alone(home: Path) -> None:
    [summary] = discover(env(home, GEMINI_API_KEY=API_KEY))
    assert summary.source == "GEMINI_API_KEY" and summary.note is None


def test_vertex_with_an_api_key_or_with_a_project(home: Path) -> None:
    [keyed] = discover(env(home, GOOGLE_GENAI_USE_VERTEXAI="true", GOOGLE_API_KEY=API_KEY))
    assert (keyed.source, keyed.kind) == ("GOOGLE_API_KEY", "api_key")
    [adc] = discover(
        env(home, GOOGLE_GENAI_USE_VERTEXAI="true", GOOGLE_CLOUD_PROJECT="proj-1", GOOGLE_CLOUD_LOCATION="us-east1")
    )
    assert (adc.kind, adc.account, adc.unverified) == ("oauth", "proj-1", True)
    assert "us-east1" in adc.note
    assert discover(env(home, GOOGLE_GENAI_USE_VERTEXAI="true")) == []


def test_keychain_mode_without_a_file(home: Path) -> None:
    write(home / ".gemini" / "settings.json", V2_PERSONAL)
    [summary] = discover(env(home, GEMINI_FORCE_ENCRYPTED_FILE_STORAGE="true"))
    assert summary.source == "keyring:gemini-cli-oauth" and summary.unverified


def test_static_code_assist_token(home: Path) -> None:
    [summary] = discover(env(home, GOOGLE_GENAI_USE_GCA="true", GOOGLE_CLOUD_ACCESS_TOKEN=ACCESS))
    assert (summary.source, summary.kind, summary.refreshable) == ("GOOGLE_CLOUD_ACCESS_TOKEN", "oauth", False)


def test_nothing_configured_means_nothing(home: Path) -> None:
    assert discover(env(home)) == []


def test_personal_selected_but_no_tokens(home: Path) -> None:
    write(home / ".gemini" / "settings.json", V2_PERSONAL)
    write(home / ".gemini" / "oauth_creds.json", {"token_type": "Bearer"})
    assert discover(env(home)) == []


def test_gemini_cli_home_is_honoured(home: Path, tmp_path: Path) -> None:
    root = tmp_path / "alt"
    write(root / ".gemini" / "settings.json", V2_PERSONAL)
    write(root / ".gemini" / "oauth_creds.json", creds())
    [summary] = discover(env(home, GEMINI_CLI_HOME=str(root)))
    assert summary.source == str(root / ".gemini" / "oauth_creds.json")


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("oauth_creds.json", json.dumps(creds(), indent=2)[:90], "malformed"),
        ("oauth_creds.json", json.dumps(creds(expiry_date="tomorrow")), "invalid"),
        ("oauth_creds.json", json.dumps([ACCESS]), "invalid"),
        ("settings.json", '{"security": {"auth": {"selectedType": 1}}, "k": "' + CANARY + '"}', "invalid"),
        ("settings.json", '{"apiKey": "' + CANARY, "malformed"),
    ],
)
def test_unusable_files_are_reported_without_secrets(home: Path, name: str, content: str, reason: str) -> None:
    if name == "oauth_creds.json":
        write(home / ".gemini" / "settings.json", V2_PERSONAL)
    write(home / ".gemini" / name, content)
    with pytest.raises(FileProblem) as info:
        discover(env(home))
    assert info.value.reason == reason
    assert CANARY not in str(info.value) and CANARY not in repr(info.value)


def test_non_utf8_settings_are_reported(home: Path) -> None:
    (home / ".gemini" / "settings.json").write_bytes(b'{"x": "\xff' + CANARY.encode() + b'"}')
    with pytest.raises(FileProblem) as info:
        discover(env(home))
    assert info.value.reason == "malformed" and CANARY not in str(info.value)


def test_repr_masks_tokens(home: Path) -> None:
    path = write(home / ".gemini" / "oauth_creds.json", creds())
    loaded = read_oauth_creds(path)
    assert loaded is not None and loaded.refresh_token == REFRESH
    assert CANARY not in repr(loaded)
