"""resolve/gemini.py and resolve/codex.py: the one decision of what a CLI run uses,
which readiness reports and the runner executes."""

from __future__ import annotations

from takod.schema import ProviderStatus

from takod_daemon.credentials.summary import CredentialSummary
from takod_daemon.providers.detect import BinaryInfo
from takod_daemon.readiness import Facts, cli_provider
from takod_daemon.resolve.gemini import SYSTEM_DEFAULTS_ENV, SYSTEM_SETTINGS_ENV, AuthFacts, resolve_gemini

NOW = 1_800_000_000.0
NOTHING = AuthFacts(selected=None, selected_usable=False, system_files=frozenset())
ENV_KEY = CredentialSummary("gemini", "GEMINI_API_KEY", "api_key", "AIza...1234")
STORED_KEY = CredentialSummary("gemini", "keyring:GEMINI_API_KEY", "api_key", "AIza...5678", read_only=False)
GOOGLE_KEY = CredentialSummary("google", "keyring:GOOGLE_API_KEY", "api_key", "AIza...9abc", read_only=False)
LOGIN = CredentialSummary("gemini", "/h/.gemini/oauth_creds.json", "oauth", "ya29...", expires_at=NOW - 10, refreshable=False)


def status(creds: list[CredentialSummary], pool: dict[str, str], facts: AuthFacts = NOTHING) -> ProviderStatus:
    binaries = {"gemini": BinaryInfo(name="gemini", path="/usr/bin/gemini", version="0.61.0")}
    plan = resolve_gemini(creds, pool, facts)
    return cli_provider("gemini", Facts(now=NOW, binaries=binaries, credentials={"gemini": creds}, gemini_plan=plan))


def test_a_gemini_key_with_nothing_selected_is_ready_and_the_run_selects_it() -> None:
    pool = {"GEMINI_API_KEY": "k", "GOOGLE_GEMINI_BASE_URL": "http://127.0.0.1:1"}
    assert resolve_gemini([STORED_KEY], pool, NOTHING).auth_scope == SYSTEM_DEFAULTS_ENV
    st = status([STORED_KEY], pool)
    assert st.ready and st.detail["credential"]["source"] == "keyring:GEMINI_API_KEY"  # type: ignore[index]


def test_a_selected_login_that_cannot_work_is_overridden_so_the_key_readiness_counted_answers() -> None:
    facts = NOTHING._replace(selected="oauth-personal")
    assert resolve_gemini([LOGIN, ENV_KEY], {"GEMINI_API_KEY": "k"}, facts).auth_scope == SYSTEM_SETTINGS_ENV
    assert status([LOGIN, ENV_KEY], {"GEMINI_API_KEY": "k"}, facts).ready


def test_a_google_login_asked_for_in_the_environment_is_not_ready_by_a_key_the_run_leaves_unused() -> None:
    """GOOGLE_GENAI_USE_GCA=true and no login: the runner leaves gemini's choice
    alone (the user asked for it), so gemini would ask for a login. Readiness used
    to call gemini ready by the GEMINI_API_KEY it ignores."""
    for forcing in ("GOOGLE_GENAI_USE_GCA", "GOOGLE_GENAI_USE_VERTEXAI"):
        pool = {"GEMINI_API_KEY": "k", forcing: "true"}
        plan = resolve_gemini([ENV_KEY, STORED_KEY], pool, NOTHING)
        assert plan.auth_scope is None and plan.credentials == ()
        st = status([ENV_KEY, STORED_KEY], pool)
        assert (st.ready, st.reason) == (False, "no-credentials")
    # Settings that select the key win over the environment: gemini uses it.
    facts = NOTHING._replace(selected="gemini-api-key")
    assert status([ENV_KEY], {"GEMINI_API_KEY": "k", "GOOGLE_GENAI_USE_GCA": "true"}, facts).ready


def test_a_google_api_key_counts_only_where_gemini_reads_it_on_vertex() -> None:
    assert not status([GOOGLE_KEY], {"GOOGLE_API_KEY": "g"}).ready  # gemini picks no auth method from it
    assert status([GOOGLE_KEY], {"GOOGLE_API_KEY": "g", "GOOGLE_GENAI_USE_VERTEXAI": "true"}).ready
    assert status([GOOGLE_KEY], {"GOOGLE_API_KEY": "g"}, NOTHING._replace(selected="vertex-ai")).ready


def test_codex_status_names_the_model_its_run_will_name(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from takod_daemon.resolve.codex import resolve_codex

    (tmp_path / "config.toml").write_text('model = "gpt-5.5"\nprofile = "fast"\n[profiles.fast]\nmodel = "gpt-5.5-mini"\n')
    plan = resolve_codex({"CODEX_HOME": str(tmp_path)})
    binaries = {"codex": BinaryInfo(name="codex", path="/usr/bin/codex", version="0.169.0")}
    creds = {"codex": [CredentialSummary("openai", "env:OPENAI_API_KEY", "api_key", "sk-...1234")]}
    st = cli_provider("codex", Facts(now=NOW, binaries=binaries, credentials=creds, codex_plan=plan))
    assert st.ready and st.detail["model"] == "gpt-5.5-mini"
