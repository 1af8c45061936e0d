"""resolve/claude.py: the credential a Claude Code run authenticates with, as the real
claude 2.1.289 chooses it (each rule was checked against the binary with loopback
servers; tests/readiness_matrix.py checks them end to end)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from takod_daemon.credentials import claude_auth
from takod_daemon.credentials.summary import CredentialSummary
from takod_daemon.inference.child_env import filter_env
from takod_daemon.resolve.claude import ClaudeFacts, backend, claude_facts, resolve_claude

SECRET = "sk-ant-CANARYclaude0123456789"


def key(name: str, source: str | None = None) -> CredentialSummary:
    return CredentialSummary("claude", source or f"env:{name}", "api_key", "sk-…6789")


def login(**block: object) -> CredentialSummary:
    doc = {"accessToken": SECRET, "refreshToken": "r", "expiresAt": 4102444800000, "scopes": ["user:inference"]}
    doc.update(block)
    oauth = claude_auth.ClaudeOAuth(**{k: v for k, v in {
        "access_token": doc["accessToken"], "refresh_token": doc["refreshToken"], "expires_at": doc["expiresAt"],
        "scopes": doc.get("scopes")}.items()})
    return claude_auth.summarize(oauth, "/h/.claude/.credentials.json")


def sources(plan) -> list[str]:  # type: ignore[no-untyped-def]
    return [c.source for c in plan.credentials]


@pytest.mark.parametrize(("value", "expected"), [("1", "bedrock"), (" TRUE ", "bedrock"), ("yes", "bedrock"),
                                                 ("on", "bedrock"), ("0", "anthropic"), ("2", "anthropic"),
                                                 ("false", "anthropic"), ("", "anthropic")])
def test_the_switch_is_claudes_truthiness(value: str, expected: str) -> None:
    assert backend({"CLAUDE_CODE_USE_BEDROCK": value}) == expected


def test_bedrock_wins_over_vertex() -> None:
    assert backend({"CLAUDE_CODE_USE_BEDROCK": "1", "CLAUDE_CODE_USE_VERTEX": "1"}) == "bedrock"


def test_anthropic_order_token_key_helper_oauth_token_login() -> None:
    creds = [login(), key("CLAUDE_CODE_OAUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN"), key("ANTHROPIC_API_KEY"),
             key("ANTHROPIC_AUTH_TOKEN", "keyring:ANTHROPIC_AUTH_TOKEN")]
    plan = resolve_claude(creds, {}, ClaudeFacts(helpers=("/h/.claude/settings.json",)))
    assert sources(plan) == ["keyring:ANTHROPIC_AUTH_TOKEN", "env:ANTHROPIC_API_KEY",
                             "apiKeyHelper:/h/.claude/settings.json", "CLAUDE_CODE_OAUTH_TOKEN",
                             "/h/.claude/.credentials.json"]
    assert plan.credentials[2].unverified  # a command claude runs: only the run can tell


@pytest.mark.parametrize("switch", ["CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX"])
def test_on_a_cloud_anthropic_credentials_count_for_nothing(switch: str) -> None:
    creds = [login(), key("ANTHROPIC_API_KEY"), key("ANTHROPIC_AUTH_TOKEN")]
    plan = resolve_claude(creds, {switch: "1", "ANTHROPIC_API_KEY": "x"}, ClaudeFacts(helpers=("/s.json",)))
    assert plan.credentials == ()


@pytest.mark.parametrize("pool", [
    {"AWS_ACCESS_KEY_ID": "AKIA1", "AWS_SECRET_ACCESS_KEY": "s"},
    {"AWS_BEARER_TOKEN_BEDROCK": "b"},
    {"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/creds"},
    {"AWS_WEB_IDENTITY_TOKEN_FILE": "/t", "AWS_ROLE_ARN": "arn"},
    {"CLAUDE_CODE_SKIP_BEDROCK_AUTH": "1"},
])
def test_bedrock_takes_ambient_aws_credentials(pool: dict[str, str]) -> None:
    plan = resolve_claude([], {"CLAUDE_CODE_USE_BEDROCK": "1", **pool}, ClaudeFacts())
    assert len(plan.credentials) == 1 and plan.backend == "bedrock"


def test_bedrock_needs_both_halves_of_a_key_pair_or_a_profile_with_a_section() -> None:
    assert resolve_claude([], {"CLAUDE_CODE_USE_BEDROCK": "1", "AWS_ACCESS_KEY_ID": "A"}, ClaudeFacts()).credentials == ()
    on = {"CLAUDE_CODE_USE_BEDROCK": "1"}
    assert resolve_claude([], on, ClaudeFacts(aws_profiles=frozenset({"default"}))).credentials
    assert not resolve_claude([], {**on, "AWS_PROFILE": "dev"}, ClaudeFacts(aws_profiles=frozenset({"default"}))).credentials
    assert resolve_claude([], {**on, "AWS_PROFILE": "dev"}, ClaudeFacts(aws_profiles=frozenset({"dev"}))).credentials


def test_vertex_needs_a_project() -> None:
    on = {"CLAUDE_CODE_USE_VERTEX": "1", "CLAUDE_CODE_SKIP_VERTEX_AUTH": "1"}
    assert resolve_claude([], on, ClaudeFacts()).credentials == ()
    assert resolve_claude([], {**on, "ANTHROPIC_VERTEX_PROJECT_ID": "p"}, ClaudeFacts()).credentials
    adc = ClaudeFacts(adc="/h/adc.json")
    assert resolve_claude([], {"CLAUDE_CODE_USE_VERTEX": "1"}, adc).credentials == ()
    assert resolve_claude([], {"CLAUDE_CODE_USE_VERTEX": "1", "GOOGLE_CLOUD_PROJECT": "p"}, adc).credentials
    assert resolve_claude([], {"CLAUDE_CODE_USE_VERTEX": "1"}, adc._replace(adc_project="p")).credentials


def test_foundry_takes_its_own_key_only() -> None:
    on = {"CLAUDE_CODE_USE_FOUNDRY": "1"}
    assert resolve_claude([key("ANTHROPIC_API_KEY")], {**on, "ANTHROPIC_API_KEY": "x"}, ClaudeFacts()).credentials == ()
    assert resolve_claude([], {**on, "ANTHROPIC_FOUNDRY_API_KEY": "x"}, ClaudeFacts()).credentials


def test_a_login_without_the_inference_scope_needs_a_login() -> None:
    assert login().needs_login(0) is False
    for scopes in (None, ["user:profile"]):
        cred = login(scopes=scopes)
        assert cred.needs_login(0) and "user:inference" in (cred.note or "")


def test_facts_read_helpers_from_project_then_user_settings(tmp_path: Path) -> None:
    home, ws = tmp_path / "h", tmp_path / "ws"
    for path in (ws / ".claude" / "settings.local.json", home / ".claude" / "settings.json"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"apiKeyHelper": "printf x"}))
    (ws / ".claude" / "settings.json").write_text("{not json")  # claude would not use it either
    facts = claude_facts({"HOME": str(home)}, ws)
    assert facts.helpers == (str(ws / ".claude" / "settings.local.json"), str(home / ".claude" / "settings.json"))
    # $CLAUDE_CONFIG_DIR moves the user settings: ~/.claude/settings.json is no longer read.
    moved = claude_facts({"HOME": str(home), "CLAUDE_CONFIG_DIR": str(tmp_path / "cc")}, None)
    assert moved.helpers == ()


def test_facts_read_aws_profiles_without_running_anything(tmp_path: Path) -> None:
    aws = tmp_path / ".aws"
    aws.mkdir()
    (aws / "credentials").write_text("[default]\naws_access_key_id = A\naws_secret_access_key = s\n[empty]\n")
    (aws / "config").write_text("[profile sso]\nsso_session = corp\n[profile bare]\nregion = us-east-1\n")
    assert claude_facts({"HOME": str(tmp_path)}).aws_profiles == {"default", "sso"}


def test_the_child_gets_its_clouds_secrets_only_on_that_cloud() -> None:
    pool = {"AWS_SECRET_ACCESS_KEY": "a", "GOOGLE_API_KEY": "g", "ANTHROPIC_API_KEY": "k", "OPENAI_API_KEY": "o"}
    assert set(filter_env("claude", pool)) == {"ANTHROPIC_API_KEY"}
    assert set(filter_env("claude", {**pool, "CLAUDE_CODE_USE_BEDROCK": " True "})) >= {"AWS_SECRET_ACCESS_KEY"}
    assert "GOOGLE_API_KEY" in filter_env("claude", {**pool, "CLAUDE_CODE_USE_VERTEX": "yes"})
