"""resolve/codex.py: a custom ``model_provider`` decides what a codex run authenticates
with, as the real codex 0.160 does (checked end to end by tests/readiness_matrix.py)."""

from __future__ import annotations

import tomllib

from takod_daemon.credentials.summary import CredentialSummary
from takod_daemon.resolve.codex import CodexPlan, custom_provider, run_credentials

LOGIN = CredentialSummary("codex", "/h/.codex/auth.json", "oauth", "eyJ…")
KEY = CredentialSummary("codex", "env:OPENAI_API_KEY", "api_key", "sk-…1234")
TABLE = 'model_provider = "lb"\n[model_providers.lb]\nbase_url = "http://127.0.0.1:11434/v1"\n'


def plan(toml: str) -> CodexPlan:
    return CodexPlan(None, frozenset(), custom_provider(tomllib.loads(toml), "/h/.codex/config.toml"))


def test_without_a_custom_provider_the_login_and_keys_count() -> None:
    assert run_credentials(plan(""), [LOGIN, KEY], {}) == [LOGIN, KEY]
    assert run_credentials(plan('model_provider = "openai"\n'), [LOGIN], {}) == [LOGIN]  # built-in: no table


def test_a_custom_env_key_is_the_only_credential() -> None:
    p = plan(TABLE + 'env_key = "MY_KEY"\n')
    assert run_credentials(p, [LOGIN, KEY], {"OPENAI_API_KEY": "x"}) == []  # codex: "Missing environment variable"
    [cred] = run_credentials(p, [LOGIN], {"MY_KEY": "sk-secret-value-1234"}, sources={"MY_KEY": "keyring:MY_KEY"})
    assert cred.source == "keyring:MY_KEY" and "sk-secret-value-1234" not in cred.masked


def test_a_keyless_custom_provider_needs_nothing() -> None:
    for extra in ("", "requires_openai_auth = true\n"):
        [cred] = run_credentials(plan(TABLE + extra), [], {})
        assert "no key needed" in (cred.note or "") and not cred.needs_login(0)
