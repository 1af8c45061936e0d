"""Security rules as pure functions: which secrets a provider CLI is given, and
which files may have their ``!command`` key values run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from takod_daemon.credentials.pi_auth import read_auth, resolve_api_key
from takod_daemon.inference.child_env import filter_env, without_secrets
from takod_daemon.resolve.codex import resolve_codex

POOL = {
    "PATH": "/usr/bin", "HOME": "/home/u", "LANG": "C.UTF-8", "HTTPS_PROXY": "http://proxy:3128",
    "DBUS_SESSION_BUS_ADDRESS": "unix:path=/run/user/1/bus", "TMPDIR": "/tmp/x", "CI": "1",
    "OPENAI_API_KEY": "o", "OPENAI_BASE_URL": "u", "CODEX_HOME": "/nonexistent",
    "ANTHROPIC_API_KEY": "a", "ANTHROPIC_BASE_URL": "u", "CLAUDE_CODE_OAUTH_TOKEN": "c",
    "GEMINI_API_KEY": "g", "GOOGLE_API_KEY": "g2", "GOOGLE_APPLICATION_CREDENTIALS": "/adc.json",
    "GROQ_API_KEY": "q", "OPENROUTER_API_KEY": "r",
    "AWS_ACCESS_KEY_ID": "i", "AWS_SECRET_ACCESS_KEY": "s", "AWS_REGION": "eu-west-1",
    "NPM_TOKEN": "n", "DATABASE_PASSWORD": "p", "TAKOD_OPENAI_TOKEN_URL": "http://127.0.0.1:9/x",
}
ORDINARY = {"PATH", "HOME", "LANG", "HTTPS_PROXY", "DBUS_SESSION_BUS_ADDRESS", "TMPDIR", "CI", "AWS_REGION"}


def withheld(provider: str, env: dict[str, str] = POOL) -> set[str]:
    return set(env) - set(filter_env(provider, env))


def test_every_cli_keeps_the_ordinary_environment() -> None:
    for provider in ("codex", "claude", "gemini"):
        assert not ORDINARY & withheld(provider), provider


def test_each_cli_gets_the_secrets_of_its_own_services_only() -> None:
    unrelated = {"NPM_TOKEN", "DATABASE_PASSWORD", "TAKOD_OPENAI_TOKEN_URL"}
    aws = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert withheld("codex") == unrelated | aws | {
        "ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN", "GEMINI_API_KEY", "GOOGLE_API_KEY",
        "GOOGLE_APPLICATION_CREDENTIALS", "GROQ_API_KEY", "OPENROUTER_API_KEY"}
    assert withheld("claude") == unrelated | aws | {
        "OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_APPLICATION_CREDENTIALS",
        "GROQ_API_KEY", "OPENROUTER_API_KEY"}
    assert withheld("gemini") == unrelated | aws | {
        "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN", "GROQ_API_KEY", "OPENROUTER_API_KEY"}
    # pi: exactly what its resolved credential needs (tests/unit/test_pi_resolution.py).


def test_claude_on_bedrock_or_vertex_gets_that_clouds_credentials() -> None:
    assert not withheld("claude", {**POOL, "CLAUDE_CODE_USE_BEDROCK": "1"}) & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in withheld("claude", {**POOL, "CLAUDE_CODE_USE_VERTEX": "true"})
    assert "AWS_SECRET_ACCESS_KEY" in withheld("claude", {**POOL, "CLAUDE_CODE_USE_BEDROCK": "0"})


def test_codex_keeps_the_keys_its_custom_providers_name(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        '[model_providers.openrouter]\nbase_url = "https://openrouter.ai/api/v1"\nenv_key = "OPENROUTER_API_KEY"\n'
        '[model_providers.broken]\nenv_key = 3\n'
    )
    env = {**POOL, "CODEX_HOME": str(tmp_path)}
    assert resolve_codex(env).env_keys == {"OPENROUTER_API_KEY"}
    kept = filter_env("codex", env, resolve_codex(env).env_keys)
    assert kept["OPENROUTER_API_KEY"] == "r" and "GROQ_API_KEY" not in kept
    (tmp_path / "config.toml").write_text("not [ toml")
    assert resolve_codex(env) == (None, frozenset(), None)  # an unreadable config adds nothing, fails nothing
    assert filter_env("codex", env, frozenset({"NPM_TOKEN"}))["NPM_TOKEN"] == "n"


def test_a_version_probe_gets_no_secret_at_all() -> None:
    assert set(without_secrets(POOL)) == ORDINARY | {"OPENAI_BASE_URL", "CODEX_HOME", "ANTHROPIC_BASE_URL"}


# --- !command key values -----------------------------------------------------------------


def _command_file(tmp_path: Path, marker: Path, mode: int) -> Path:
    path = tmp_path / "auth.json"
    path.write_text(json.dumps({"p": {"type": "api_key", "key": f"!touch '{marker}'; echo k"}}))
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o620, 0o602, 0o660, 0o666])
def test_a_command_in_a_group_or_other_writable_file_is_refused(tmp_path: Path, mode: int) -> None:
    marker = tmp_path / "ran"
    auth = read_auth(_command_file(tmp_path, marker, mode))
    assert auth is not None and not auth.trusted
    resolved = resolve_api_key(auth, "p", {"PATH": os.environ["PATH"]})
    assert resolved is not None and resolved.value is None and resolved.reason == "command_untrusted"
    assert "group/other write" in (resolved.detail or "") and str(auth.path) in (resolved.detail or "")
    assert not marker.exists()


def test_a_command_in_a_file_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("making a file owned by another user needs root")
    marker = tmp_path / "ran"
    path = _command_file(tmp_path, marker, 0o600)
    os.chown(path, 65534, 65534)  # nobody
    auth = read_auth(path)
    assert auth is not None and not auth.trusted
    resolved = resolve_api_key(auth, "p", {"PATH": os.environ["PATH"]})
    assert resolved is not None and resolved.value is None and resolved.reason == "command_untrusted"
    assert not marker.exists()
    os.chown(path, os.getuid(), os.getgid())  # ours again, 0600: runs
    resolved = resolve_api_key(read_auth(path), "p", {"PATH": os.environ["PATH"]})  # type: ignore[arg-type]
    assert resolved is not None and resolved.value == "k" and marker.exists()
