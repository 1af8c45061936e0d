"""Codex ``auth.json`` / ``config.toml`` reading and the refresh write-back."""

from __future__ import annotations

import base64
import json
import os
import re
import stat
from datetime import datetime, timezone
from pathlib import Path

import pytest

from takod_daemon.credentials import codex_auth
from takod_daemon.credentials.codex_auth import (
    CodexAuth,
    TokenRefresh,
    apply_refresh,
    auth_path,
    codex_home,
    discover,
    file_is_writable,
    format_last_refresh,
    keyring_account,
    read_auth,
    read_store_mode,
    summarize,
    write_refreshed_tokens,
)
from takod_daemon.credentials.files import FileProblem

CANARY = "CANARYcodexSECRET0123456789"
NOW = datetime(2026, 11, 22, 12, 0, 0, 123456, tzinfo=timezone.utc)
EXP = 1_900_000_000
IAT = 1_899_990_000


def make_jwt(claims: dict) -> str:
    def seg(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{seg({'alg': 'RS256'})}.{seg(claims)}.{CANARY}sig"


ACCESS = make_jwt({"exp": EXP, "iat": IAT, "https://api.openai.com/auth": {"chatgpt_account_id": "acct-9"}})
ID_TOKEN = make_jwt(
    {
        "email": "user@example.com",
        "https://api.openai.com/auth": {"chatgpt_plan_type": "plus", "chatgpt_account_id": "acct-9"},
    }
)
REFRESH = f"rt_{CANARY}_refresh"
API_KEY = f"sk-proj-{CANARY}-3f9a"


def chatgpt_doc(**overrides: object) -> dict:
    """auth.json in the shape ``codex login`` writes, with keys of a newer Codex."""
    doc = {
        "auth_mode": "chatgpt",
        "OPENAI_API_KEY": None,
        "tokens": {
            "id_token": ID_TOKEN,
            "access_token": ACCESS,
            "refresh_token": REFRESH,
            "account_id": "acct-9",
            "future_token_field": "kept",
        },
        "last_refresh": "2026-11-20T08:46:00.198027Z",
        "agent_identity": None,
    }
    doc.update(overrides)
    return doc


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    directory = tmp_path / "codex-home"
    directory.mkdir()
    monkeypatch.setenv("CODEX_HOME", str(directory))
    monkeypatch.delenv("CODEX_API_KEY", raising=False)
    return directory


def write_like_codex(home: Path, doc: dict) -> Path:
    """Codex: pretty JSON (serde_json, 2 spaces), 0600, truncate-then-write."""
    path = auth_path(home)
    path.write_text(json.dumps(doc, indent=2))
    path.chmod(0o600)
    return path


def env_for(home: Path, **extra: str) -> dict[str, str]:
    return {"HOME": str(home.parent / "home"), "CODEX_HOME": str(home), **extra}


# --- where things live -------------------------------------------------------


def test_codex_home_is_codex_home_or_dot_codex(tmp_path: Path) -> None:
    assert codex_home({"HOME": str(tmp_path), "CODEX_HOME": "/x/y"}) == Path("/x/y")
    assert codex_home({"HOME": str(tmp_path), "CODEX_HOME": ""}) == tmp_path / ".codex"
    assert codex_home({"HOME": str(tmp_path)}) == tmp_path / ".codex"


def test_keyring_account_has_codex_shape(home: Path) -> None:
    assert re.fullmatch(r"cli\|[0-9a-f]{16}", keyring_account(home))


# --- store mode ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "mode"),
    [
        (None, "file"),
        ('model = "o3"\n', "file"),
        ('cli_auth_credentials_store = "keyring"\n', "keyring"),
        ('\ufeffcli_auth_credentials_store = "auto"\n[profiles.x]\nmodel = "m"\n', "auto"),
        ('cli_auth_credentials_store = "ephemeral"\n', "ephemeral"),
    ],
)
def test_store_mode_comes_from_config_toml(home: Path, config: str | None, mode: str) -> None:
    if config is not None:
        (home / "config.toml").write_text(config, encoding="utf-8")
    assert read_store_mode(home) == mode


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (f'experimental_bearer_token = "{CANARY}\n'.encode(), "malformed"),
        (f'x = "\x01{CANARY}"\n'.encode(), "malformed"),
        (b"cli_auth_credentials_store = 3\n", "invalid"),
        (b"\xff\xfe\x00" + CANARY.encode(), "malformed"),
    ],
)
def test_a_broken_config_is_reported_without_its_content(home: Path, content: bytes, reason: str) -> None:
    (home / "config.toml").write_bytes(content)
    with pytest.raises(FileProblem) as info:
        read_store_mode(home)
    assert info.value.reason == reason
    assert CANARY not in str(info.value) and "\x01" not in str(info.value)


@pytest.mark.parametrize(
    ("mode", "keyring_has_entry", "writable"),
    [
        ("file", None, True),
        ("auto", None, False),
        ("auto", True, False),
        ("auto", False, True),
        ("keyring", False, False),
        ("ephemeral", None, False),
        ("something-newer", False, False),
    ],
)
def test_only_the_file_store_is_writable(mode: str, keyring_has_entry: bool | None, writable: bool) -> None:
    assert file_is_writable(mode, keyring_has_entry) is writable


# --- reading auth.json ---------------------------------------------------------


def test_reads_a_chatgpt_login(home: Path) -> None:
    write_like_codex(home, chatgpt_doc())
    auth = read_auth(auth_path(home))
    assert auth is not None
    assert auth.auth_mode == "chatgpt"
    assert (auth.access_token, auth.refresh_token, auth.id_token) == (ACCESS, REFRESH, ID_TOKEN)
    assert (auth.expires_at, auth.issued_at) == (float(EXP), float(IAT))
    assert auth.last_refresh == datetime(2026, 11, 20, 8, 46, 0, 198027, tzinfo=timezone.utc).timestamp()
    assert (auth.account_id, auth.email, auth.plan_type) == ("acct-9", "user@example.com", "plus")
    assert auth.token_problem is None


def test_summary_of_a_chatgpt_login(home: Path) -> None:
    write_like_codex(home, chatgpt_doc())
    [summary] = discover(env_for(home))
    assert summary.provider == "codex"
    assert summary.source == str(auth_path(home))
    assert summary.kind == "oauth"
    assert summary.masked == "eyJ...9sig"
    assert summary.expires_at == float(EXP)
    assert summary.refreshable and not summary.read_only and not summary.unverified
    assert summary.account == "user@example.com"
    assert summary.note == "ChatGPT plus plan"


def test_missing_auth_mode_is_chatgpt_without_a_key_and_apikey_with_one(home: Path) -> None:
    doc = chatgpt_doc()
    del doc["auth_mode"]
    write_like_codex(home, doc)
    assert read_auth(auth_path(home)).auth_mode == "chatgpt"
    write_like_codex(home, {"OPENAI_API_KEY": API_KEY})
    assert read_auth(auth_path(home)).auth_mode == "apikey"


def test_api_key_login(home: Path) -> None:
    write_like_codex(home, {"auth_mode": "apikey", "OPENAI_API_KEY": API_KEY})
    [summary] = discover(env_for(home))
    assert (summary.kind, summary.masked, summary.refreshable) == ("api_key", "sk-proj-...3f9a", False)
    assert summary.read_only
    assert summary.expires_at is None


def test_codex_api_key_in_the_environment_comes_first(home: Path) -> None:
    write_like_codex(home, chatgpt_doc())
    found = discover(env_for(home, CODEX_API_KEY=f"  {API_KEY} "))
    assert [(s.source, s.kind) for s in found] == [("CODEX_API_KEY", "api_key"), (str(auth_path(home)), "oauth")]
    assert found[0].masked == "sk-proj-...3f9a"


def test_no_last_refresh_means_codex_will_not_use_the_tokens(home: Path) -> None:
    doc = chatgpt_doc()
    del doc["last_refresh"]
    write_like_codex(home, doc)
    [summary] = discover(env_for(home))
    assert summary.unverified
    assert "last_refresh" in summary.note


def test_an_opaque_access_token_leaves_expiry_unknown(home: Path) -> None:
    doc = chatgpt_doc()
    doc["tokens"]["access_token"] = f"opaque-{CANARY}"
    write_like_codex(home, doc)
    [summary] = discover(env_for(home))
    assert summary.expires_at is None
    assert "expiry unknown" in summary.note
    assert CANARY not in summary.note and CANARY not in summary.masked


def test_a_logged_out_file_has_no_credential(home: Path) -> None:
    write_like_codex(home, {"auth_mode": "chatgpt", "OPENAI_API_KEY": None, "tokens": None})
    assert discover(env_for(home)) == []


def test_no_file_no_credential(home: Path) -> None:
    assert discover(env_for(home)) == []


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (json.dumps(chatgpt_doc(), indent=2)[:180].encode(), "malformed"),  # caught mid-write
        (b"", "empty"),
        (json.dumps(chatgpt_doc(tokens=[REFRESH])).encode(), "invalid"),
        (json.dumps(chatgpt_doc(OPENAI_API_KEY=12345)).encode(), "invalid"),
        (json.dumps([REFRESH]).encode(), "invalid"),
    ],
)
def test_an_unusable_auth_file_is_reported_without_secrets(home: Path, content: bytes, reason: str) -> None:
    auth_path(home).write_bytes(content)
    with pytest.raises(FileProblem) as info:
        discover(env_for(home))
    assert info.value.reason == reason
    assert CANARY not in str(info.value) and CANARY not in repr(info.value)


def test_keyring_mode_ignores_the_file_and_says_so(home: Path) -> None:
    (home / "config.toml").write_text('cli_auth_credentials_store = "keyring"\n')
    write_like_codex(home, chatgpt_doc())
    [summary] = discover(env_for(home))
    assert summary.source == "keyring:Codex Auth"
    assert summary.unverified and summary.read_only and summary.masked == ""


def test_auto_mode_file_is_read_only_unless_the_keyring_is_known_empty(home: Path) -> None:
    (home / "config.toml").write_text('cli_auth_credentials_store = "auto"\n')
    write_like_codex(home, chatgpt_doc())
    assert discover(env_for(home))[0].read_only
    assert not discover(env_for(home), keyring_has_entry=False)[0].read_only


def test_auto_mode_without_a_file_points_at_the_keyring(home: Path) -> None:
    (home / "config.toml").write_text('cli_auth_credentials_store = "auto"\n')
    assert [s.source for s in discover(env_for(home))] == ["keyring:Codex Auth"]


def test_reprs_never_show_secrets(home: Path) -> None:
    write_like_codex(home, chatgpt_doc(OPENAI_API_KEY=API_KEY, auth_mode="chatgpt"))
    auth = read_auth(auth_path(home))
    update = TokenRefresh(access_token=ACCESS, refresh_token=REFRESH, id_token=ID_TOKEN)
    for value in (auth, update, summarize(auth, writable=True), discover(env_for(home))):
        assert CANARY not in repr(value) and CANARY not in str(value)
    assert isinstance(auth, CodexAuth) and "expires_at=1900000000.0" in repr(auth)


# --- writing refreshed tokens ------------------------------------------------


def test_format_last_refresh_matches_codex() -> None:
    text = format_last_refresh(NOW)
    assert text == "2026-11-22T12:00:00.123456Z"
    assert datetime.fromisoformat(text) == NOW


def test_apply_refresh_is_pure_and_keeps_everything_else() -> None:
    doc = chatgpt_doc()
    snapshot = json.loads(json.dumps(doc))
    new_access = make_jwt({"exp": EXP + 3600})
    updated = apply_refresh(doc, TokenRefresh(access_token=new_access, refresh_token="rt_new"), NOW)
    assert doc == snapshot
    assert updated["tokens"] == {**snapshot["tokens"], "access_token": new_access, "refresh_token": "rt_new"}
    assert updated["last_refresh"] == "2026-11-22T12:00:00.123456Z"
    assert {k: v for k, v in updated.items() if k not in ("tokens", "last_refresh")} == {
        k: v for k, v in snapshot.items() if k not in ("tokens", "last_refresh")
    }


def test_apply_refresh_ignores_empty_tokens() -> None:
    updated = apply_refresh(chatgpt_doc(), TokenRefresh(access_token="", refresh_token=None), NOW)
    assert updated["tokens"]["access_token"] == ACCESS
    assert updated["tokens"]["refresh_token"] == REFRESH


def test_write_refreshed_tokens_round_trips(home: Path) -> None:
    path = write_like_codex(home, chatgpt_doc())
    path.chmod(0o644)
    new_access = make_jwt({"exp": EXP + 3600, "iat": EXP})
    written = write_refreshed_tokens(home, TokenRefresh(access_token=new_access, refresh_token="rt_new"), REFRESH, NOW)
    assert written
    on_disk = json.loads(path.read_text())
    assert on_disk["tokens"]["future_token_field"] == "kept"
    assert on_disk["tokens"]["account_id"] == "acct-9"
    assert on_disk["tokens"]["id_token"] == ID_TOKEN
    assert on_disk["agent_identity"] is None and on_disk["OPENAI_API_KEY"] is None
    assert list(on_disk) == list(chatgpt_doc())  # Codex's key order survives
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    auth = read_auth(path)
    assert (auth.refresh_token, auth.expires_at) == ("rt_new", float(EXP + 3600))
    assert auth.last_refresh == NOW.timestamp()


def test_write_refreshed_tokens_yields_to_someone_who_refreshed_first(home: Path) -> None:
    doc = chatgpt_doc()
    doc["tokens"]["refresh_token"] = "rt_codex_rotated_it"
    path = write_like_codex(home, doc)
    before = path.read_bytes()
    assert not write_refreshed_tokens(home, TokenRefresh(refresh_token="rt_mine"), REFRESH, NOW)
    assert path.read_bytes() == before


def test_write_refreshed_tokens_refuses_a_keyring_store(home: Path) -> None:
    (home / "config.toml").write_text('cli_auth_credentials_store = "keyring"\n')
    path = write_like_codex(home, chatgpt_doc())
    before = path.read_bytes()
    with pytest.raises(FileProblem) as info:
        write_refreshed_tokens(home, TokenRefresh(refresh_token="rt_new"), REFRESH, NOW)
    assert info.value.reason == "read_only"
    assert path.read_bytes() == before


def test_write_refreshed_tokens_when_logged_out(home: Path) -> None:
    with pytest.raises(FileProblem) as info:
        write_refreshed_tokens(home, TokenRefresh(refresh_token="rt_new"), REFRESH, NOW)
    assert info.value.reason == "missing"
    assert not auth_path(home).exists()


def test_write_refreshed_tokens_never_writes_over_a_half_written_file(home: Path) -> None:
    content = json.dumps(chatgpt_doc(), indent=2)[:200].encode()
    auth_path(home).write_bytes(content)
    with pytest.raises(FileProblem) as info:
        write_refreshed_tokens(home, TokenRefresh(refresh_token=f"rt_{CANARY}"), REFRESH, NOW)
    assert CANARY not in str(info.value)
    assert auth_path(home).read_bytes() == content


def test_write_refreshed_tokens_through_a_symlink(home: Path, tmp_path: Path) -> None:
    real = tmp_path / "dotfiles" / "codex-auth.json"
    real.parent.mkdir()
    real.write_text(json.dumps(chatgpt_doc(), indent=2))
    real.chmod(0o600)  # a link is followed only to a private file of ours
    auth_path(home).symlink_to(real)
    assert write_refreshed_tokens(home, TokenRefresh(refresh_token="rt_new"), REFRESH, NOW)
    assert auth_path(home).is_symlink()
    assert json.loads(real.read_text())["tokens"]["refresh_token"] == "rt_new"


@pytest.mark.parametrize("how", ["readable_by_others", "not_codex", "dangling", "hard_linked"])
def test_write_refreshed_tokens_never_through_an_unsafe_link(home: Path, tmp_path: Path, how: str) -> None:
    real = tmp_path / "elsewhere" / "auth.json"
    real.parent.mkdir()
    content = json.dumps({"name": "pkg", "version": "1.0.0"}) if how == "not_codex" else json.dumps(chatgpt_doc())
    real.write_text(content)
    real.chmod(0o644 if how == "readable_by_others" else 0o600)
    if how == "hard_linked":
        os.link(real, tmp_path / "elsewhere" / "second-name")
    if how == "dangling":
        real.unlink()
    auth_path(home).symlink_to(real)
    try:
        written = write_refreshed_tokens(home, TokenRefresh(refresh_token="rt_new"), REFRESH, NOW)
    except FileProblem as exc:
        assert exc.reason in ("unsafe_link", "missing")
    else:
        assert not written  # package.json holds no refresh token to replace
    if how == "dangling":
        assert not real.exists()
    else:
        assert real.read_text() == content


def test_default_home_is_used_when_codex_home_is_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("CODEX_HOME", raising=False)
    (tmp_path / ".codex").mkdir()
    write_like_codex(tmp_path / ".codex", chatgpt_doc())
    [summary] = codex_auth.discover(os.environ)
    assert summary.source == str(tmp_path / ".codex" / "auth.json")
