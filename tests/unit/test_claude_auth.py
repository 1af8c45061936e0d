"""Claude Code credential discovery (read-only)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from takod_daemon.credentials.claude_auth import (
    ClaudeOAuth,
    config_dir,
    credentials_path,
    discover,
    env_credentials,
    global_state_path,
    read_credentials,
)
from takod_daemon.credentials.files import FileProblem

CANARY = "CANARYclaudeSECRET0123456789"
ACCESS = f"sk-ant-oat01-{CANARY}-acc1"
REFRESH = f"sk-ant-ort01-{CANARY}-ref1"
NOW = 1_800_000_000.0
EXPIRES_MS = 1_800_028_800_123


def oauth_block(**overrides: object) -> dict:
    block = {
        "accessToken": ACCESS,
        "refreshToken": REFRESH,
        "expiresAt": EXPIRES_MS,
        "scopes": ["user:inference", "user:profile", "user:sessions:claude_code"],
        "subscriptionType": "max",
        "rateLimitTier": "default_claude_max_5x",
    }
    block.update(overrides)
    return block


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    (home / ".claude").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    for name in ("CLAUDE_CONFIG_DIR", "CLAUDE_SECURESTORAGE_CONFIG_DIR", "ANTHROPIC_API_KEY",
                 "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return home


def write_like_claude(path: Path, root: dict) -> Path:
    """Claude: pretty JSON root holding its key and other tools' keys, then chmod 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(root, indent=2))
    path.chmod(0o600)
    return path


def env(home: Path, **extra: str) -> dict[str, str]:
    return {"HOME": str(home), **extra}


def test_where_the_files_live(home: Path, tmp_path: Path) -> None:
    assert config_dir(env(home)) == home / ".claude"
    assert credentials_path(env(home)) == home / ".claude" / ".credentials.json"
    assert global_state_path(env(home)) == home / ".claude.json"
    custom = env(home, CLAUDE_CONFIG_DIR=str(tmp_path / "cc"))
    assert credentials_path(custom) == tmp_path / "cc" / ".credentials.json"
    assert global_state_path(custom) == tmp_path / "cc" / ".claude.json"
    secure = env(home, CLAUDE_SECURESTORAGE_CONFIG_DIR=str(tmp_path / "sec"))
    assert credentials_path(secure) == tmp_path / "sec" / ".credentials.json"


def test_legacy_config_json_names_the_account_when_present(home: Path) -> None:
    write_like_claude(home / ".claude" / ".config.json", {"oauthAccount": {"emailAddress": "old@example.com"}})
    assert global_state_path(env(home)) == home / ".claude" / ".config.json"


def test_summary_of_a_subscription_login(home: Path) -> None:
    path = write_like_claude(
        home / ".claude" / ".credentials.json",
        {"claudeAiOauth": oauth_block(), "mcpOAuth": {"srv": {"accessToken": "x"}}, "organizationUuid": "org"},
    )
    write_like_claude(
        home / ".claude.json",
        {"userID": "u", "oauthAccount": {"accountUuid": "a", "emailAddress": "me@example.com"}, "projects": {}},
    )
    [summary] = discover(env(home), platform="linux")
    assert summary.provider == "claude"
    assert summary.source == str(path)
    assert summary.kind == "oauth"
    assert summary.masked == "sk-ant-...acc1"
    assert summary.expires_at == EXPIRES_MS / 1000
    assert summary.refreshable and summary.read_only and not summary.unverified
    assert summary.account == "me@example.com"
    assert summary.note == "Claude max subscription"
    assert not summary.needs_login(NOW)


def test_claude_config_dir_moves_everything(home: Path, tmp_path: Path) -> None:
    custom = tmp_path / "work-claude"
    write_like_claude(custom / ".credentials.json", {"claudeAiOauth": oauth_block()})
    write_like_claude(custom / ".claude.json", {"oauthAccount": {"emailAddress": "work@example.com"}})
    write_like_claude(home / ".claude" / ".credentials.json", {"claudeAiOauth": oauth_block(subscriptionType="pro")})
    [summary] = discover(env(home, CLAUDE_CONFIG_DIR=str(custom)), platform="linux")
    assert summary.source == str(custom / ".credentials.json")
    assert summary.account == "work@example.com"


def test_a_dead_login_needs_login(home: Path) -> None:
    # What Claude writes after an invalid_grant.
    write_like_claude(
        home / ".claude" / ".credentials.json",
        {"claudeAiOauth": oauth_block(accessToken="", refreshToken="", expiresAt=0)},
    )
    [summary] = discover(env(home), platform="linux")
    assert summary.masked == ""
    assert summary.expired(NOW) and summary.needs_login(NOW)
    assert "/login" in summary.note


def test_expired_without_a_refresh_token_needs_login(home: Path) -> None:
    write_like_claude(
        home / ".claude" / ".credentials.json",
        {"claudeAiOauth": oauth_block(refreshToken=None, expiresAt=int(NOW * 1000) - 1)},
    )
    [summary] = discover(env(home), platform="linux")
    assert summary.expired(NOW) and not summary.refreshable and summary.needs_login(NOW)


def test_expired_with_a_refresh_token_is_renewable(home: Path) -> None:
    write_like_claude(
        home / ".claude" / ".credentials.json", {"claudeAiOauth": oauth_block(expiresAt=int(NOW * 1000) - 1)}
    )
    [summary] = discover(env(home), platform="linux")
    assert summary.expired(NOW) and not summary.needs_login(NOW)


def test_environment_credentials_in_claude_precedence_order(home: Path) -> None:
    write_like_claude(home / ".claude" / ".credentials.json", {"claudeAiOauth": oauth_block()})
    found = discover(
        env(
            home,
            CLAUDE_CODE_OAUTH_TOKEN=f"sk-ant-oat01-{CANARY}-long",
            ANTHROPIC_API_KEY=f"sk-ant-api03-{CANARY}-3f9a",
            ANTHROPIC_AUTH_TOKEN=f"gateway-{CANARY}-tok1",
        ),
        platform="linux",
    )
    assert [(s.source, s.kind) for s in found] == [
        ("ANTHROPIC_AUTH_TOKEN", "api_key"),
        ("ANTHROPIC_API_KEY", "api_key"),
        ("CLAUDE_CODE_OAUTH_TOKEN", "oauth"),
        (str(home / ".claude" / ".credentials.json"), "oauth"),
    ]
    assert found[1].masked == "sk-ant-...3f9a"
    assert not found[2].refreshable and found[2].expires_at is None
    assert all(CANARY not in repr(s) for s in found)


def test_blank_environment_values_are_not_credentials(home: Path) -> None:
    assert env_credentials({"ANTHROPIC_API_KEY": "  ", "CLAUDE_CODE_OAUTH_TOKEN": ""}) == []


def test_a_file_without_a_claude_login_has_no_credential(home: Path) -> None:
    write_like_claude(home / ".claude" / ".credentials.json", {"mcpOAuth": {"srv": {"accessToken": ACCESS}}})
    assert discover(env(home), platform="linux") == []


def test_no_file_on_linux_means_nothing(home: Path) -> None:
    assert discover(env(home), platform="linux") == []


def test_no_file_on_macos_points_at_the_keychain(home: Path) -> None:
    [summary] = discover(env(home), platform="darwin")
    assert summary.source == "keychain:Claude Code-credentials"
    assert summary.unverified and summary.masked == ""


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (json.dumps({"claudeAiOauth": oauth_block()}, indent=2)[:120].encode(), "malformed"),
        (json.dumps({"claudeAiOauth": oauth_block(expiresAt="soon")}).encode(), "invalid"),
        (json.dumps({"claudeAiOauth": oauth_block(accessToken=12345)}).encode(), "invalid"),
        (json.dumps({"claudeAiOauth": [ACCESS]}).encode(), "invalid"),
        (b"", "empty"),
        (b"\xef\xbb\xbf{\xff" + CANARY.encode(), "malformed"),
    ],
)
def test_an_unusable_credentials_file_is_reported_without_secrets(home: Path, content: bytes, reason: str) -> None:
    (home / ".claude" / ".credentials.json").write_bytes(content)
    with pytest.raises(FileProblem) as info:
        discover(env(home, ANTHROPIC_API_KEY=f"sk-ant-api03-{CANARY}"), platform="linux")
    assert info.value.reason == reason
    assert CANARY not in str(info.value) and CANARY not in repr(info.value)


def test_a_symlinked_credentials_file_is_followed(home: Path, tmp_path: Path) -> None:
    real = write_like_claude(tmp_path / "dotfiles" / "claude-creds.json", {"claudeAiOauth": oauth_block()})
    (home / ".claude" / ".credentials.json").symlink_to(real)
    [summary] = discover(env(home), platform="linux")
    assert summary.masked == "sk-ant-...acc1"


@pytest.mark.parametrize("content", [b"{not json", b"[]", b'{"oauthAccount": {"emailAddress": 5}}'])
def test_a_broken_global_state_file_only_loses_the_account(home: Path, content: bytes) -> None:
    write_like_claude(home / ".claude" / ".credentials.json", {"claudeAiOauth": oauth_block()})
    (home / ".claude.json").write_bytes(content)
    [summary] = discover(env(home), platform="linux")
    assert summary.account is None and summary.masked == "sk-ant-...acc1"


def test_repr_masks_tokens(home: Path) -> None:
    write_like_claude(home / ".claude" / ".credentials.json", {"claudeAiOauth": oauth_block()})
    oauth = read_credentials(home / ".claude" / ".credentials.json")
    assert isinstance(oauth, ClaudeOAuth) and oauth.refresh_token == REFRESH
    assert CANARY not in repr(oauth) and "subscription_type='max'" in repr(oauth)
