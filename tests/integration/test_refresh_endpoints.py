"""Refreshing every grant kind against the loopback token server, and the
server's own contract: strict request checks, rotation, reuse detection and
its failure modes. Nothing leaves the machine: every URL comes from
``oauth_server.env()``."""

from __future__ import annotations

import base64
import json
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx
import pytest

from takod_daemon.credentials import codex_auth
from takod_daemon.credentials.pi_auth import OAuthEntry, parse_entry
from takod_daemon.refresh import RefreshPermanent, RefreshTransient, refresh_codex, refresh_pi_entry
from tests.fakes.oauth_server import (  # noqa: F401 - fixture
    COPILOT_HEADERS,
    ENV_VARS,
    FakeOAuthServer,
    oauth_server,
)

# Every wait in these tests is bounded by this, far above any answer time.
GUARD = 20.0
T = TypeVar("T")

PI_GRANTS = [
    ("openai-codex", "openai"),
    ("anthropic", "anthropic"),
    ("github-copilot", "copilot"),
    ("google-gemini-cli", "google"),
    ("google-antigravity", "google"),
]

# Well-formed request fields, less the refresh token, for direct requests.
ANTHROPIC_OK = {"grant_type": "refresh_token", "client_id": "9d1c250a-e61b-44d9-88ed-5944d1962f5e"}
OPENAI_OK = {"grant_type": "refresh_token", "client_id": "app_EMoamEEZ73f0CkXaXp7hrann"}
GOOGLE_OK = {
    "client_id": "681255809395-oo8ft2oprdrnp9e3aqf6av3hmdib135j.apps.googleusercontent.com",
    "client_secret": "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",
    "grant_type": "refresh_token",
}


@pytest.fixture
def direct() -> Iterator[httpx.Client]:
    """A plain client for hand-made requests (no proxy from the environment)."""
    with httpx.Client(trust_env=False) as client:
        yield client


def run(make: Callable[[httpx.AsyncClient], Awaitable[T]]) -> T:
    async def main() -> T:
        with anyio.fail_after(GUARD):
            async with httpx.AsyncClient(trust_env=False) as http:
                return await make(http)

    return anyio.run(main)


def now_ms() -> int:
    return int(time.time() * 1000)


def pi_entry(server: FakeOAuthServer, grant: str) -> OAuthEntry:
    parsed = parse_entry(server.grant(grant).pi_entry())
    assert isinstance(parsed, OAuthEntry)
    return parsed


def refresh(server: FakeOAuthServer, provider: str, entry: OAuthEntry, **kwargs: Any) -> OAuthEntry:
    return run(lambda http: refresh_pi_entry(provider, entry, http, server.env(), now_ms(), **kwargs))


def expect_failure(kind: type[Exception], server: FakeOAuthServer, provider: str, entry: OAuthEntry, **kw: Any) -> Any:
    with pytest.raises(kind) as caught:
        refresh(server, provider, entry, **kw)
    return caught.value


def form(raw: bytes) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in raw.decode().split("&"))


# --- each provider --------------------------------------------------------------------------


@pytest.mark.parametrize(("provider", "endpoint"), PI_GRANTS)
def test_each_provider_refreshes_three_times_in_a_row(
    oauth_server: FakeOAuthServer, provider: str, endpoint: Any
) -> None:
    oauth_server.add_grant(provider, endpoint, rotate=True)
    entry = pi_entry(oauth_server, provider)
    for _ in range(3):
        before = now_ms()
        entry = refresh(oauth_server, provider, entry)
        state = oauth_server.grant(provider)
        assert (entry.access, entry.refresh) == (state.access, state.refresh)
        assert entry.expires <= state.expires_at * 1000 - (0 if provider == "openai-codex" else 300_000) + 1000
        assert entry.expires >= before + state.lifetime_s * 1000 - 300_000 - 2000
    assert oauth_server.grant(provider).refreshes == 3
    assert oauth_server.count(provider) == oauth_server.count(provider, outcome="ok") == 3


def test_openai_codex_posts_pis_form_rotates_and_rederives_account_id(oauth_server: FakeOAuthServer) -> None:
    grant = oauth_server.add_grant("openai-codex", "openai", account_id="acct-42")
    old = pi_entry(oauth_server, "openai-codex")
    before = now_ms()
    new = refresh(oauth_server, "openai-codex", old)
    request = oauth_server.requests[-1]
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert form(request.body) == {
        "grant_type": "refresh_token",
        "refresh_token": grant.refresh,
        "client_id": "app_EMoamEEZ73f0CkXaXp7hrann",
    }
    assert new.refresh == oauth_server.current_refresh("openai-codex") != grant.refresh
    assert new.extra == {"accountId": "acct-42"}
    # No margin for this provider: expires is the real expiry.
    assert before + grant.lifetime_s * 1000 <= new.expires <= now_ms() + grant.lifetime_s * 1000


def test_openai_spent_token_is_refresh_token_reused(oauth_server: FakeOAuthServer) -> None:
    oauth_server.add_grant("openai-codex", "openai")
    old = pi_entry(oauth_server, "openai-codex")
    refresh(oauth_server, "openai-codex", old)
    current = oauth_server.current_refresh("openai-codex")
    failure = expect_failure(RefreshPermanent, oauth_server, "openai-codex", old)
    assert (failure.code, failure.status) == ("refresh_token_reused", 401)
    assert "`takod login openai-codex`" in failure.guidance
    assert oauth_server.current_refresh("openai-codex") == current  # a refused request costs nothing


def test_anthropic_posts_json_without_scope_and_rejects_reuse(oauth_server: FakeOAuthServer) -> None:
    grant = oauth_server.add_grant("anthropic", "anthropic")
    old = pi_entry(oauth_server, "anthropic")
    before = now_ms()
    new = refresh(oauth_server, "anthropic", old)
    request = oauth_server.requests[-1]
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.body) == {
        "grant_type": "refresh_token",
        "client_id": "9d1c250a-e61b-44d9-88ed-5944d1962f5e",
        "refresh_token": grant.refresh,
    }
    assert new.refresh == oauth_server.current_refresh("anthropic")
    assert new.access.startswith("sk-ant-oat01-") and new.extra == {}
    assert before + 28_800_000 - 300_000 <= new.expires <= now_ms() + 28_800_000 - 300_000
    failure = expect_failure(RefreshPermanent, oauth_server, "anthropic", old)
    assert (failure.code, failure.status) == ("invalid_grant", 400)


def test_copilot_gets_a_new_token_and_keeps_the_github_token(oauth_server: FakeOAuthServer) -> None:
    grant = oauth_server.add_grant("github-copilot", "copilot", enterprise_url="company.ghe.com")
    old = pi_entry(oauth_server, "github-copilot")
    new = refresh(oauth_server, "github-copilot", old)
    request = oauth_server.requests[-1]
    assert (request.method, request.body) == ("GET", b"")
    assert request.headers["authorization"] == f"Bearer {grant.refresh}"
    assert all(request.headers[name.lower()] == value for name, value in COPILOT_HEADERS.items())
    state = oauth_server.grant("github-copilot")
    assert new == OAuthEntry(
        access=state.access,
        refresh=grant.refresh,
        expires=state.expires_at * 1000 - 300_000,
        extra={"enterpriseUrl": "company.ghe.com"},
    )
    # Nothing rotates: the same GitHub token works again.
    assert refresh(oauth_server, "github-copilot", old).refresh == grant.refresh


def test_copilot_with_an_unknown_github_token_is_permanent(oauth_server: FakeOAuthServer) -> None:
    stranger = OAuthEntry(access="tid=1", refresh="gho_notknown000000000000000000000", expires=0)
    failure = expect_failure(RefreshPermanent, oauth_server, "github-copilot", stranger)
    assert (failure.code, failure.status) == ("unauthorized", 401)


@pytest.mark.parametrize("provider", ["google-gemini-cli", "google-antigravity"])
def test_google_rotates_only_when_the_server_does(oauth_server: FakeOAuthServer, provider: str) -> None:
    kept = oauth_server.add_grant(provider, "google")
    new = refresh(oauth_server, provider, pi_entry(oauth_server, provider))
    assert new.refresh == kept.refresh and new.extra == {"projectId": kept.project_id}
    assert "client_secret" in form(oauth_server.requests[-1].body)

    rotating = oauth_server.add_grant(provider + "-rotating", "google", client=provider, rotate=True)
    old = OAuthEntry(access="ya29.x", refresh=rotating.refresh, expires=0, extra={"projectId": "p"})
    new = refresh(oauth_server, provider, old)
    assert new.refresh == oauth_server.current_refresh(provider + "-rotating") != rotating.refresh
    assert expect_failure(RefreshPermanent, oauth_server, provider, old).code == "invalid_grant"


def test_google_token_of_the_other_client_is_refused(oauth_server: FakeOAuthServer) -> None:
    oauth_server.add_grant("google-gemini-cli", "google")
    entry = pi_entry(oauth_server, "google-gemini-cli")
    failure = expect_failure(RefreshPermanent, oauth_server, "google-antigravity", entry)
    assert failure.code == "unauthorized_client"


# --- Codex ----------------------------------------------------------------------------------


def test_codex_refresh_writes_back_into_auth_json(oauth_server: FakeOAuthServer, tmp_path: Path) -> None:
    grant = oauth_server.add_grant("chatgpt", "openai", account_id="acct-7")
    path = codex_auth.auth_path(tmp_path)
    path.write_text(json.dumps(grant.codex_auth() | {"future_key": {"kept": True}}))
    auth = codex_auth.read_auth(path)
    assert auth is not None

    update = run(lambda http: refresh_codex(auth, http, oauth_server.env(), time.time()))
    request = oauth_server.requests[-1]
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.body) == {
        "client_id": "app_EMoamEEZ73f0CkXaXp7hrann",
        "grant_type": "refresh_token",
        "refresh_token": grant.refresh,
    }
    state = oauth_server.grant("chatgpt")
    assert (update.access_token, update.refresh_token, update.id_token) == (state.access, state.refresh, state.id_token)

    assert codex_auth.write_refreshed_tokens(tmp_path, update, posted_refresh_token=grant.refresh)
    after = codex_auth.read_auth(path)
    assert after is not None
    assert (after.refresh_token, after.account_id) == (oauth_server.current_refresh("chatgpt"), "acct-7")
    assert after.expires_at == state.expires_at
    assert json.loads(path.read_text())["future_key"] == {"kept": True}


def test_codex_and_pi_share_one_openai_grant(oauth_server: FakeOAuthServer) -> None:
    grant = oauth_server.add_grant("chatgpt", "openai")
    auth = codex_auth.parse_auth(grant.codex_auth(), Path("auth.json"))
    update = run(lambda http: refresh_codex(auth, http, oauth_server.env(), time.time()))
    # pi, handed Codex's new tokens, refreshes the same login with its form body.
    linked = OAuthEntry(access=update.access_token or "", refresh=update.refresh_token or "", expires=0)
    refresh(oauth_server, "openai-codex", linked)
    assert oauth_server.grant("chatgpt").refreshes == 2
    # Codex's stale copy is now spent.
    with pytest.raises(RefreshPermanent) as caught:
        run(lambda http: refresh_codex(auth, http, oauth_server.env(), time.time()))
    assert caught.value.code == "refresh_token_reused"
    assert "`codex login`" in caught.value.guidance


# --- failure modes --------------------------------------------------------------------------


@pytest.mark.parametrize(("provider", "endpoint"), PI_GRANTS)
def test_transient_503_twice_then_success_loses_nothing(
    oauth_server: FakeOAuthServer, provider: str, endpoint: Any
) -> None:
    oauth_server.add_grant(provider, endpoint)
    entry = pi_entry(oauth_server, provider)
    oauth_server.fail_transient(2, retry_after="3")
    for _ in range(2):
        failure = expect_failure(RefreshTransient, oauth_server, provider, entry)
        assert "HTTP 503" in failure.reason and failure.retry_after == 3.0
        assert oauth_server.current_refresh(provider) == entry.refresh
    assert refresh(oauth_server, provider, entry).refresh == oauth_server.current_refresh(provider)
    assert [r.status for r in oauth_server.requests] == [503, 503, 200]


def test_dropped_connection_is_transient(oauth_server: FakeOAuthServer) -> None:
    oauth_server.add_grant("anthropic", "anthropic")
    entry = pi_entry(oauth_server, "anthropic")
    oauth_server.fail_transient(1, kind="drop")
    failure = expect_failure(RefreshTransient, oauth_server, "anthropic", entry)
    assert failure.reason.startswith("network error: ")
    # The server notes the request after hanging up, so the client can see the drop first.
    assert oauth_server.wait_for_requests(1, timeout=10)
    assert oauth_server.requests[-1].outcome == "dropped"
    assert refresh(oauth_server, "anthropic", entry).refresh == oauth_server.current_refresh("anthropic")


def test_rate_limit_carries_retry_after(oauth_server: FakeOAuthServer) -> None:
    oauth_server.add_grant("openai-codex", "openai")
    oauth_server.rate_limit(1, retry_after="7", endpoint="openai")
    failure = expect_failure(RefreshTransient, oauth_server, "openai-codex", pi_entry(oauth_server, "openai-codex"))
    assert (failure.retry_after, failure.reason) == (7.0, "rate limited (HTTP 429), error rate_limit_exceeded")


def test_fault_limited_to_one_endpoint_spares_the_others(oauth_server: FakeOAuthServer) -> None:
    oauth_server.add_grant("anthropic", "anthropic")
    oauth_server.add_grant("openai-codex", "openai")
    oauth_server.fail_permanent(endpoint="openai")
    refresh(oauth_server, "anthropic", pi_entry(oauth_server, "anthropic"))
    failure = expect_failure(RefreshPermanent, oauth_server, "openai-codex", pi_entry(oauth_server, "openai-codex"))
    assert failure.code == "invalid_grant"


@pytest.mark.parametrize(("provider", "endpoint"), PI_GRANTS)
def test_permanent_failure_changes_nothing(oauth_server: FakeOAuthServer, provider: str, endpoint: Any) -> None:
    oauth_server.add_grant(provider, endpoint)
    entry = pi_entry(oauth_server, provider)
    oauth_server.fail_permanent()
    failure = expect_failure(RefreshPermanent, oauth_server, provider, entry)
    assert failure.code == ("unauthorized" if provider == "github-copilot" else "invalid_grant")
    assert oauth_server.current_refresh(provider) == entry.refresh
    oauth_server.reset_modes()
    refresh(oauth_server, provider, entry)  # the stored login was never spent


def test_timeout_before_the_server_acts_spends_nothing(oauth_server: FakeOAuthServer) -> None:
    oauth_server.add_grant("openai-codex", "openai")
    entry = pi_entry(oauth_server, "openai-codex")
    oauth_server.slow(1.0)
    failure = expect_failure(RefreshTransient, oauth_server, "openai-codex", entry, timeout=0.1)
    assert failure.reason == "no answer within 0.1 s"
    assert oauth_server.wait_for_requests(1, GUARD)
    assert oauth_server.requests[0].outcome == "abandoned"
    assert oauth_server.current_refresh("openai-codex") == entry.refresh
    oauth_server.reset_modes()
    refresh(oauth_server, "openai-codex", entry)


def test_timeout_after_the_server_rotated_loses_the_new_token(oauth_server: FakeOAuthServer) -> None:
    # Why a rotated token must be persisted before anything else: a client
    # that gives up after the server acted has lost the login.
    oauth_server.add_grant("openai-codex", "openai")
    entry = pi_entry(oauth_server, "openai-codex")
    oauth_server.slow(1.0, after_rotation=True)
    expect_failure(RefreshTransient, oauth_server, "openai-codex", entry, timeout=0.1)
    assert oauth_server.wait_for_requests(1, GUARD)
    assert oauth_server.current_refresh("openai-codex") != entry.refresh
    oauth_server.reset_modes()
    assert expect_failure(RefreshPermanent, oauth_server, "openai-codex", entry).code == "refresh_token_reused"


def test_concurrent_refreshes_of_one_token_leave_exactly_one_winner(oauth_server: FakeOAuthServer) -> None:
    oauth_server.add_grant("openai-codex", "openai")
    entry = pi_entry(oauth_server, "openai-codex")
    results: list[OAuthEntry | Exception] = []

    async def one(http: httpx.AsyncClient) -> None:
        try:
            results.append(await refresh_pi_entry("openai-codex", entry, http, oauth_server.env(), now_ms()))
        except RefreshPermanent as exc:
            results.append(exc)

    async def many(http: httpx.AsyncClient) -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(one, http)

    run(many)
    winners = [r for r in results if isinstance(r, OAuthEntry)]
    assert len(winners) == 1 and winners[0].refresh == oauth_server.current_refresh("openai-codex")
    assert {r.code for r in results if isinstance(r, RefreshPermanent)} == {"refresh_token_reused"}


# --- secrets --------------------------------------------------------------------------------

CANARY_REFRESH = "rt_CANARY0refresh0f1e2d3c4b5a69788"
CANARY_GITHUB = "gho_CANARY0github0f1e2d3c4b5a6978"


def assert_no_canary(failure: BaseException, *canaries: str) -> None:
    shown = "".join(traceback.format_exception(failure)) + repr(failure) + repr(failure.args)
    if isinstance(failure, RefreshPermanent):
        shown += failure.guidance
    for canary in canaries:
        assert canary not in shown


@pytest.mark.parametrize(
    "arrange",
    [
        lambda s: s.fail_permanent(),
        lambda s: s.fail_transient(1),
        lambda s: s.fail_transient(1, kind="drop"),
        lambda s: s.rate_limit(1),
        lambda s: None,  # the first refresh succeeds, the test then replays the spent token
    ],
    ids=["permanent", "503", "drop", "429", "reuse"],
)
@pytest.mark.parametrize(("provider", "endpoint"), PI_GRANTS)
def test_canary_secrets_never_reach_exception_text(
    oauth_server: FakeOAuthServer, provider: str, endpoint: Any, arrange: Callable[[FakeOAuthServer], None]
) -> None:
    canary = CANARY_GITHUB if endpoint == "copilot" else CANARY_REFRESH
    oauth_server.add_grant(provider, endpoint, refresh_token=canary, rotate=True)
    entry = pi_entry(oauth_server, provider)
    oauth_server.echo_secrets = True
    arrange(oauth_server)
    try:
        refresh(oauth_server, provider, entry)
        refresh(oauth_server, provider, entry)  # replays the canary
    except (RefreshTransient, RefreshPermanent) as failure:
        assert_no_canary(failure, canary, entry.access)
    else:
        assert provider == "github-copilot", "a replayed rotating token must fail"


def test_the_echoing_server_really_sends_the_canary(oauth_server: FakeOAuthServer, direct: httpx.Client) -> None:
    # Without this, the canary test above could pass against a server that never echoes.
    oauth_server.add_grant("anthropic", "anthropic", refresh_token=CANARY_REFRESH)
    oauth_server.echo_secrets = True
    oauth_server.fail_permanent()
    answer = direct.post(oauth_server.url("anthropic"), json={**ANTHROPIC_OK, "refresh_token": CANARY_REFRESH})
    assert answer.status_code == 400 and CANARY_REFRESH in answer.text


def test_codex_canary_never_reaches_exception_text(oauth_server: FakeOAuthServer) -> None:
    grant = oauth_server.add_grant("chatgpt", "openai", refresh_token=CANARY_REFRESH)
    auth = codex_auth.parse_auth(grant.codex_auth(), Path("auth.json"))
    run(lambda http: refresh_codex(auth, http, oauth_server.env(), time.time()))
    oauth_server.echo_secrets = True
    with pytest.raises(RefreshPermanent) as caught:
        run(lambda http: refresh_codex(auth, http, oauth_server.env(), time.time()))
    assert caught.value.code == "refresh_token_reused"
    assert_no_canary(caught.value, CANARY_REFRESH, grant.access)


# --- the fake's own contract ----------------------------------------------------------------


def test_env_points_every_token_url_at_the_server(oauth_server: FakeOAuthServer) -> None:
    env = oauth_server.env()
    assert set(env) == {*ENV_VARS.values(), "CODEX_REFRESH_TOKEN_URL_OVERRIDE"}
    assert all(url.startswith(f"http://127.0.0.1:{oauth_server.port}/") for url in env.values())
    assert len({env[v] for v in ENV_VARS.values()}) == 4


def test_openai_tokens_are_jwts_pi_and_codex_can_read(oauth_server: FakeOAuthServer) -> None:
    grant = oauth_server.add_grant("chatgpt", "openai", account_id="acct-9", email="me@example.test")
    for token in (grant.access, grant.id_token or ""):
        payload = token.split(".")[1]
        # pi decodes with atob(): the standard alphabet only.
        claims = json.loads(base64.b64decode(payload + "=" * (-len(payload) % 4), validate=True))
        assert claims["https://api.openai.com/auth"]["chatgpt_account_id"] == "acct-9"
        assert claims["exp"] > claims["iat"]
    auth = codex_auth.parse_auth(grant.codex_auth(), Path("auth.json"))
    assert (auth.email, auth.account_id, auth.expires_at) == ("me@example.test", "acct-9", grant.expires_at)


RT = "<the grant's refresh token>"


def without(fields: dict[str, str], name: str) -> dict[str, str]:
    return {k: v for k, v in fields.items() if k != name}


# Each case: endpoint, httpx.post keyword arguments (RT stands for the grant's
# refresh token), expected status and OAuth error code.
WRONG_REQUESTS: list[tuple[str, dict[str, Any], int, str]] = [
    ("anthropic", {"json": {**ANTHROPIC_OK, "refresh_token": RT, "scope": "user:inference"}}, 400, "invalid_scope"),
    ("anthropic", {"data": {**ANTHROPIC_OK, "refresh_token": RT}}, 400, "invalid_request"),
    ("anthropic", {"json": {**without(ANTHROPIC_OK, "client_id"), "refresh_token": RT}}, 400, "invalid_request"),
    ("anthropic", {"json": {**ANTHROPIC_OK, "client_id": "x", "refresh_token": RT}}, 401, "invalid_client"),
    ("openai", {"json": {**OPENAI_OK, "refresh_token": RT, "extra": "1"}}, 400, "invalid_request"),
    ("openai", {"data": {**OPENAI_OK, "client_id": "app_other", "refresh_token": RT}}, 401, "invalid_client"),
    ("openai", {"data": {**OPENAI_OK, "grant_type": "password", "refresh_token": RT}}, 400, "unsupported_grant_type"),
    ("openai", {"content": f"refresh_token={RT}", "headers": {"Content-Type": "text/plain"}}, 400, "invalid_request"),
    ("google", {"data": {**GOOGLE_OK, "client_secret": "wrong", "refresh_token": RT}}, 401, "invalid_client"),
    ("google", {"data": {**without(GOOGLE_OK, "client_secret"), "refresh_token": RT}}, 400, "invalid_request"),
    ("google", {"json": {**GOOGLE_OK, "refresh_token": RT}}, 400, "invalid_request"),
]


def with_token(value: Any, token: str) -> Any:
    if isinstance(value, dict):
        return {k: with_token(v, token) for k, v in value.items()}
    return value.replace(RT, token) if isinstance(value, str) else value


@pytest.mark.parametrize(("endpoint", "send", "status", "error"), WRONG_REQUESTS)
def test_wrong_requests_get_the_error_the_real_endpoint_gives(
    oauth_server: FakeOAuthServer, direct: httpx.Client, endpoint: Any, send: dict[str, Any], status: int, error: str
) -> None:
    grant = oauth_server.add_grant("g", endpoint)
    answer = direct.post(oauth_server.url(endpoint), **with_token(send, grant.refresh))
    assert (answer.status_code, answer.json()["error"]) == (status, error)
    assert oauth_server.current_refresh("g") == grant.refresh
    assert oauth_server.requests[-1].outcome == "rejected" and oauth_server.requests[-1].grant == "g"


def test_copilot_needs_get_bearer_and_every_copilot_header(oauth_server: FakeOAuthServer, direct: httpx.Client) -> None:
    grant = oauth_server.add_grant("gh", "copilot")
    url = oauth_server.url("copilot")
    bearer = {"Authorization": f"Bearer {grant.refresh}"}
    assert direct.get(url, headers={**bearer, **COPILOT_HEADERS}).status_code == 200
    assert direct.get(url, headers={**COPILOT_HEADERS}).status_code == 401
    assert direct.get(url, headers={"Authorization": f"token {grant.refresh}", **COPILOT_HEADERS}).status_code == 401
    partial = {k: v for k, v in COPILOT_HEADERS.items() if k != "Editor-Version"}
    assert direct.get(url, headers={**bearer, **partial}).status_code == 400
    assert direct.post(url, headers={**bearer, **COPILOT_HEADERS}).status_code == 405


def test_unknown_path_is_404(oauth_server: FakeOAuthServer, direct: httpx.Client) -> None:
    assert direct.post(f"http://127.0.0.1:{oauth_server.port}/oauth/token").status_code == 404
