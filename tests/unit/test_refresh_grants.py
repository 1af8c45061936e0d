"""Refresh grants without a network: the exact requests each owner sends,
how answers become pi entries and Codex token updates, expiry arithmetic,
and the transient/permanent failure table (research pi-auth.md §2, providers.md A5)."""

from __future__ import annotations

import base64
import json
import traceback
from email.utils import format_datetime
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from takod_daemon.credentials.codex_auth import parse_auth
from takod_daemon.credentials.pi_auth import OAuthEntry
from takod_daemon.refresh import endpoints
from takod_daemon.refresh.grants import (
    PI_EXPIRY_MARGIN_MS,
    REFRESHABLE_PI_PROVIDERS,
    GrantExpiry,
    RefreshPermanent,
    RefreshTransient,
    classify_failure,
    codex_grant_expiry,
    error_code,
    parse_codex_response,
    parse_pi_response,
    parse_retry_after,
    pi_grant_expiry,
    pi_request,
    pi_stored_expires,
    reauth_guidance,
)

NOW_MS = 1_790_000_000_000
NOW_S = NOW_MS / 1000
RT = "rt/refresh token+1=2&x"  # characters a form encoder must escape
CANARY = "canary-7d41e0b9c2f3a8d6"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(claims: dict[str, Any]) -> str:
    return f"{b64url(b'{}')}.{b64url(json.dumps(claims).encode())}.c2ln"


def openai_access(account: str | None = "acct-new", exp: int = 1_790_864_000) -> str:
    auth = {"chatgpt_account_id": account} if account else {}
    return jwt({"exp": exp, "iat": exp - 864_000, "https://api.openai.com/auth": auth})


def entry(refresh: str = RT, **extra: Any) -> OAuthEntry:
    return OAuthEntry(access="old-access-token", refresh=refresh, expires=NOW_MS - 1, extra=extra)


def body(value: Any) -> bytes:
    return json.dumps(value).encode()


# --- requests -------------------------------------------------------------------------------


def test_openai_codex_request_is_pis_form_in_pis_order() -> None:
    request = pi_request("openai-codex", entry(), {})
    assert (request.method, request.url) == ("POST", "https://auth.openai.com/oauth/token")
    assert request.headers == {"Content-Type": "application/x-www-form-urlencoded"}
    assert request.body == (
        "grant_type=refresh_token&refresh_token=rt%2Frefresh+token%2B1%3D2%26x&client_id=app_EMoamEEZ73f0CkXaXp7hrann"
    )


def test_anthropic_request_is_json_without_scope() -> None:
    request = pi_request("anthropic", entry(), {})
    assert (request.method, request.url) == ("POST", "https://platform.claude.com/v1/oauth/token")
    assert request.headers == {"Content-Type": "application/json", "Accept": "application/json"}
    assert request.body == (
        '{"grant_type":"refresh_token","client_id":"9d1c250a-e61b-44d9-88ed-5944d1962f5e",'
        '"refresh_token":"rt/refresh token+1=2&x"}'
    )


def test_copilot_request_is_a_get_with_the_github_token_and_copilot_headers() -> None:
    request = pi_request("github-copilot", entry("gho_githubtoken123"), {})
    assert (request.method, request.url, request.body) == (
        "GET",
        "https://api.github.com/copilot_internal/v2/token",
        None,
    )
    assert request.headers == {
        "Accept": "application/json",
        "Authorization": "Bearer gho_githubtoken123",
        "User-Agent": "GitHubCopilotChat/0.35.0",
        "Editor-Version": "vscode/1.107.0",
        "Editor-Plugin-Version": "copilot-chat/0.35.0",
        "Copilot-Integration-Id": "vscode-chat",
    }


@pytest.mark.parametrize(
    ("enterprise", "env", "url"),
    [
        (None, {}, "https://api.github.com/copilot_internal/v2/token"),
        ("", {}, "https://api.github.com/copilot_internal/v2/token"),
        ("company.ghe.com", {}, "https://api.company.ghe.com/copilot_internal/v2/token"),
        ("https://company.ghe.com/", {}, "https://api.company.ghe.com/copilot_internal/v2/token"),
        # The override exists so tests never reach a real host: it wins for every domain.
        ("company.ghe.com", {"TAKOD_COPILOT_TOKEN_URL": "http://127.0.0.1:9/c"}, "http://127.0.0.1:9/c"),
    ],
)
def test_copilot_url_derives_from_the_enterprise_domain(enterprise: str | None, env: dict[str, str], url: str) -> None:
    extra = {} if enterprise is None else {"enterpriseUrl": enterprise}
    assert pi_request("github-copilot", entry("gho_x", **extra), env).url == url


@pytest.mark.parametrize(
    ("provider", "client_id", "secret"),
    [
        (
            "google-gemini-cli",
            "681255809395-oo8ft2oprdrnp9e3aqf6av3hmdib135j.apps.googleusercontent.com",
            "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",
        ),
        (
            "google-antigravity",
            "1071006060591-tmhssin2h21lcre235vtolojh4g403ep.apps.googleusercontent.com",
            "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",
        ),
    ],
)
def test_google_request_is_a_form_with_the_providers_own_client(provider: str, client_id: str, secret: str) -> None:
    request = pi_request(provider, entry("1//0abc", projectId="p-1"), {})
    assert (request.method, request.url) == ("POST", "https://oauth2.googleapis.com/token")
    assert request.headers == {"Content-Type": "application/x-www-form-urlencoded"}
    assert request.body == (
        f"client_id={client_id}&client_secret={secret}&refresh_token=1%2F%2F0abc&grant_type=refresh_token"
    )


def test_codex_request_is_codexs_json_with_exactly_three_fields() -> None:
    request = endpoints.codex_request("rt_abc", {})
    assert (request.method, request.url) == ("POST", "https://auth.openai.com/oauth/token")
    assert request.headers["Content-Type"] == "application/json"
    assert request.body == (
        '{"client_id":"app_EMoamEEZ73f0CkXaXp7hrann","grant_type":"refresh_token","refresh_token":"rt_abc"}'
    )


@pytest.mark.parametrize(
    ("provider", "variable"),
    [
        ("openai-codex", "TAKOD_OPENAI_TOKEN_URL"),
        ("anthropic", "TAKOD_ANTHROPIC_TOKEN_URL"),
        ("github-copilot", "TAKOD_COPILOT_TOKEN_URL"),
        ("google-gemini-cli", "TAKOD_GOOGLE_TOKEN_URL"),
        ("google-antigravity", "TAKOD_GOOGLE_TOKEN_URL"),
    ],
)
def test_every_endpoint_is_overridable_and_empty_means_unset(provider: str, variable: str) -> None:
    e = entry(projectId="p")
    assert pi_request(provider, e, {variable: "http://127.0.0.1:1/t"}).url == "http://127.0.0.1:1/t"
    assert pi_request(provider, e, {variable: ""}).url.startswith("https://")


def test_codex_uses_the_openai_override() -> None:
    override = {"TAKOD_OPENAI_TOKEN_URL": "http://127.0.0.1:1/o"}
    assert endpoints.codex_request("r", override).url == "http://127.0.0.1:1/o"


@pytest.mark.parametrize("provider", ["google-gemini-cli", "google-antigravity"])
def test_google_entry_without_project_id_fails_before_any_request(provider: str) -> None:
    with pytest.raises(RefreshPermanent) as caught:
        pi_request(provider, entry(projectId=""), {})
    assert caught.value.code == "missing_project_id"
    assert f"/login {provider}" in caught.value.guidance


def test_entry_without_refresh_token_is_permanent() -> None:
    with pytest.raises(RefreshPermanent) as caught:
        pi_request("anthropic", entry(""), {})
    assert caught.value.code == "no_refresh_token"


def test_a_provider_takod_does_not_refresh_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="openrouter"):
        pi_request("openrouter", entry(), {})
    assert REFRESHABLE_PI_PROVIDERS == {
        "openai-codex",
        "anthropic",
        "github-copilot",
        "google-gemini-cli",
        "google-antigravity",
    }


def test_token_request_repr_masks_the_refresh_token() -> None:
    request = pi_request("anthropic", entry(CANARY), {})
    assert request.body is not None and CANARY in request.body  # the secret is there ...
    assert CANARY not in repr(request)  # ... and never printed
    copilot = pi_request("github-copilot", entry(CANARY), {})
    assert CANARY in copilot.headers["Authorization"] and CANARY not in repr(copilot)


# --- answers --------------------------------------------------------------------------------


def test_openai_codex_answer_rotates_and_rederives_account_id() -> None:
    access = openai_access("acct-new")
    answer = body({"access_token": access, "refresh_token": "rt_new", "expires_in": 864_000, "id_token": "x"})
    old = entry(accountId="acct-old", customField=1)
    new = parse_pi_response("openai-codex", old, answer, NOW_MS)
    assert new == OAuthEntry(
        access=access, refresh="rt_new", expires=NOW_MS + 864_000_000, extra={"accountId": "acct-new"}
    )


def test_openai_codex_answer_without_account_claim_keeps_the_previous_account_id() -> None:
    answer = body({"access_token": openai_access(None), "refresh_token": "rt_new", "expires_in": 60})
    assert parse_pi_response("openai-codex", entry(accountId="acct-old"), answer, NOW_MS).extra == {
        "accountId": "acct-old"
    }
    assert parse_pi_response("openai-codex", entry(), answer, NOW_MS).extra == {}


def test_anthropic_answer_rotates_verbatim_with_five_minute_margin_and_drops_extras() -> None:
    answer = body({"access_token": "sk-ant-oat01-new", "refresh_token": "sk-ant-ort01-new", "expires_in": 28_800})
    new = parse_pi_response("anthropic", entry(email="a@b"), answer, NOW_MS)
    assert new == OAuthEntry(
        access="sk-ant-oat01-new", refresh="sk-ant-ort01-new", expires=NOW_MS + 28_800_000 - 300_000, extra={}
    )


def test_answer_without_refresh_token_keeps_the_old_one() -> None:
    answer = body({"access_token": "sk-ant-oat01-new", "expires_in": 100})
    assert parse_pi_response("anthropic", entry(), answer, NOW_MS).refresh == RT


def test_copilot_answer_keeps_github_token_and_enterprise_url_only() -> None:
    answer = body({"token": "tid=1;exp=2", "expires_at": 1_790_001_800, "refresh_in": 1500})
    old = entry("gho_keep", enterpriseUrl="company.ghe.com", other="dropped")
    new = parse_pi_response("github-copilot", old, answer, NOW_MS)
    assert new == OAuthEntry(
        access="tid=1;exp=2",
        refresh="gho_keep",
        expires=1_790_001_800_000 - 300_000,
        extra={"enterpriseUrl": "company.ghe.com"},
    )
    assert parse_pi_response("github-copilot", entry("gho_keep"), answer, NOW_MS).extra == {}


@pytest.mark.parametrize("provider", ["google-gemini-cli", "google-antigravity"])
def test_google_answer_rotates_only_if_returned_and_keeps_project_id(provider: str) -> None:
    old = entry("1//0old", projectId="proj-9", email="gone@example.test")
    kept = parse_pi_response(provider, old, body({"access_token": "ya29.a", "expires_in": 3599}), NOW_MS)
    assert kept == OAuthEntry(
        access="ya29.a", refresh="1//0old", expires=NOW_MS + 3_599_000 - 300_000, extra={"projectId": "proj-9"}
    )
    rotated = parse_pi_response(
        provider, old, body({"access_token": "ya29.b", "expires_in": 3599, "refresh_token": "1//0new"}), NOW_MS
    )
    assert rotated.refresh == "1//0new"


@pytest.mark.parametrize(
    ("provider", "answer"),
    [
        ("anthropic", {"refresh_token": "r", "expires_in": 1}),
        ("anthropic", {"access_token": "", "expires_in": 1}),
        ("anthropic", {"access_token": "a"}),
        ("openai-codex", {"access_token": "a", "refresh_token": "r", "expires_in": "3600"}),
        ("google-gemini-cli", {"access_token": 5, "expires_in": 1}),
        ("anthropic", {"access_token": "a", "expires_in": True}),
        ("github-copilot", {"token": "t"}),
        ("github-copilot", {"expires_at": 5}),
        ("anthropic", ["access_token"]),
        ("anthropic", None),
    ],
)
def test_success_without_a_usable_token_is_permanent(provider: str, answer: Any) -> None:
    with pytest.raises(RefreshPermanent) as caught:
        parse_pi_response(provider, entry(projectId="p"), body(answer), NOW_MS)
    assert caught.value.code == "malformed_response"
    assert f"takod login {provider}" in caught.value.guidance or "0.70" in caught.value.guidance


@pytest.mark.parametrize("raw", [b"", b"<html>Sign in to the Wi-Fi</html>", b'{"access_token":'])
def test_success_that_is_not_json_is_transient(raw: bytes) -> None:
    with pytest.raises(RefreshTransient):
        parse_pi_response("anthropic", entry(), raw, NOW_MS)
    with pytest.raises(RefreshTransient):
        parse_codex_response(raw)


def test_codex_answer_overwrites_only_what_is_present() -> None:
    id_token, access = jwt({"email": "e@x"}), openai_access()
    full = parse_codex_response(body({"id_token": id_token, "access_token": access, "refresh_token": "rt_2"}))
    assert (full.id_token, full.access_token, full.refresh_token) == (id_token, access, "rt_2")
    partial = parse_codex_response(body({"access_token": access, "refresh_token": ""}))
    assert (partial.id_token, partial.access_token, partial.refresh_token) == (None, access, None)


def test_codex_answer_with_an_unparseable_id_token_keeps_the_stored_one() -> None:
    answer = parse_codex_response(body({"id_token": "not-a-jwt", "access_token": "a", "refresh_token": "r"}))
    assert answer.id_token is None and answer.refresh_token == "r"


def test_codex_answer_without_access_token_is_permanent() -> None:
    with pytest.raises(RefreshPermanent) as caught:
        parse_codex_response(body({"refresh_token": "r"}))
    assert caught.value.code == "malformed_response"
    assert "`codex login`" in caught.value.guidance


# --- expiry ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "margin"),
    [
        ("openai-codex", 0),
        ("anthropic", 300_000),
        ("github-copilot", 300_000),
        ("google-gemini-cli", 300_000),
        ("google-antigravity", 300_000),
    ],
)
def test_pi_expiry_margins(provider: str, margin: int) -> None:
    stored = NOW_MS + 3_600_000
    assert PI_EXPIRY_MARGIN_MS[provider] == margin
    assert pi_stored_expires(provider, stored + margin) == stored
    assert pi_grant_expiry(provider, OAuthEntry(access="a", refresh="r", expires=stored)) == GrantExpiry(
        real_ms=stored + margin, stored_ms=stored, tool_refresh_ms=stored - 300_000
    )


@given(
    provider=st.sampled_from(sorted(REFRESHABLE_PI_PROVIDERS - {"github-copilot"})),
    expires_in=st.integers(min_value=1, max_value=10**7),
)
def test_real_expiry_of_a_parsed_answer_is_now_plus_expires_in(provider: str, expires_in: int) -> None:
    answer = body({"access_token": "a", "expires_in": expires_in})
    new = parse_pi_response(provider, entry(projectId="p"), answer, NOW_MS)
    assert pi_grant_expiry(provider, new).real_ms == NOW_MS + expires_in * 1000


def test_codex_expiry_comes_from_the_access_token_exp() -> None:
    doc = {"tokens": {"access_token": openai_access(exp=1_790_003_600), "refresh_token": "r"}, "last_refresh": "x"}
    assert codex_grant_expiry(parse_auth(doc, Path("auth.json"))) == GrantExpiry(
        real_ms=1_790_003_600_000, stored_ms=1_790_003_600_000, tool_refresh_ms=1_790_003_300_000
    )
    opaque = {"tokens": {"access_token": "opaque", "refresh_token": "r"}}
    assert codex_grant_expiry(parse_auth(opaque, Path("auth.json"))) is None


# --- failures -------------------------------------------------------------------------------

HTTP_DATE_IN_30_S = format_datetime(datetime.fromtimestamp(NOW_S + 30, timezone.utc), usegmt=True)


@pytest.mark.parametrize(
    ("status", "answer", "retry_after", "kind", "code_or_retry"),
    [
        (400, {"error": "invalid_grant", "error_description": "bad"}, None, "permanent", "invalid_grant"),
        (
            400,
            {"error": {"message": "used", "type": "invalid_request_error", "code": "refresh_token_reused"}},
            None,
            "permanent",
            "refresh_token_reused",
        ),
        (401, {"error": {"code": "refresh_token_expired"}}, None, "permanent", "refresh_token_expired"),
        (400, {"code": "refresh_token_invalidated"}, None, "permanent", "refresh_token_invalidated"),
        (400, {"error": "REFRESH_TOKEN_REUSED"}, None, "permanent", "refresh_token_reused"),
        (400, {"error": "invalid_scope"}, None, "permanent", "invalid_scope"),
        (401, {"error": "invalid_client"}, None, "permanent", "invalid_client"),
        (401, {"message": "Bad credentials"}, None, "permanent", "unauthorized"),
        (401, b"", None, "permanent", "unauthorized"),
        (401, {"error": {"code": "token_expired"}}, None, "permanent", "unauthorized"),
        (500, b"oops", None, "transient", None),
        (502, b"<html>bad gateway</html>", "5", "transient", 5.0),
        (503, {"error": "temporarily_unavailable"}, "12", "transient", 12.0),
        (429, {"error": "rate_limit_exceeded"}, "7", "transient", 7.0),
        (429, {}, None, "transient", None),
        (429, {}, HTTP_DATE_IN_30_S, "transient", 30.0),
        # Codex's rule: an unknown 4xx is not a reason to log the user out.
        (400, {"error": "invalid_request"}, None, "transient", None),
        (403, b"<html>error 1010</html>", None, "transient", None),
        (404, {"message": "Not Found"}, None, "transient", None),
    ],
)
def test_failure_classification(
    status: int, answer: Any, retry_after: str | None, kind: str, code_or_retry: Any
) -> None:
    raw = answer if isinstance(answer, bytes) else body(answer)
    failure = classify_failure("openai-codex", status, raw, retry_after, NOW_S)
    if kind == "permanent":
        assert isinstance(failure, RefreshPermanent)
        assert (failure.code, failure.status) == (code_or_retry, status)
        assert failure.guidance == reauth_guidance("openai-codex", code_or_retry)
    else:
        assert isinstance(failure, RefreshTransient)
        assert failure.retry_after == code_or_retry
        assert str(status) in failure.reason


def test_transient_reason_names_a_code_that_looks_like_one() -> None:
    failure = classify_failure("anthropic", 400, body({"error": "invalid_request"}), None, NOW_S)
    assert failure.reason == "unexpected answer (HTTP 400), error invalid_request"


@pytest.mark.parametrize(
    "value",
    [
        {"error": CANARY},
        {"error": "sk-ant-ort01-abcdef123456"},
        {"error": "a" * 65},
        {"error": {"code": 42}},
        {"code": ["invalid_grant"]},
        [{"error": "invalid_grant"}],
    ],
)
def test_error_code_ignores_anything_that_is_not_a_code(value: Any) -> None:
    assert error_code(body(value)) is None


def test_error_code_prefers_the_error_string_then_nested_code_then_type_then_top_level() -> None:
    assert error_code(body({"error": "invalid_grant", "code": "other"})) == "invalid_grant"
    assert error_code(body({"error": {"code": "refresh_token_reused", "type": "t"}})) == "refresh_token_reused"
    assert error_code(body({"error": {"type": "invalid_request_error"}})) == "invalid_request_error"
    assert error_code(body({"code": "refresh_token_expired"})) == "refresh_token_expired"
    assert error_code(b"not json") is None


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("0", 0.0),
        (" 120 ", 120.0),
        (HTTP_DATE_IN_30_S, 30.0),
        ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0),  # a date in the past: retry now
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("", None),
    ],
)
def test_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, NOW_S) == seconds


def test_guidance_names_the_right_login_command() -> None:
    assert reauth_guidance("codex", "refresh_token_reused").endswith("run `codex login`.")
    assert "another program refreshed this login first" in reauth_guidance("codex", "refresh_token_reused")
    assert "`takod login openai-codex`" in reauth_guidance("openai-codex", "invalid_grant")
    assert "`/login anthropic` inside pi" in reauth_guidance("anthropic", "unauthorized")
    assert "pi 0.70 or older" in reauth_guidance("google-antigravity", "invalid_grant")
    assert "(weird_code)" in reauth_guidance("anthropic", "weird_code")


def test_exception_text() -> None:
    transient = RefreshTransient("server error (HTTP 503)", 3.0)
    assert (str(transient), transient.reason, transient.retry_after) == (
        "server error (HTTP 503); retry after 3 s",
        "server error (HTTP 503)",
        3.0,
    )
    permanent = RefreshPermanent("invalid_grant", "Log in again.", 400)
    assert (str(permanent), permanent.code, permanent.guidance, permanent.status) == (
        "invalid_grant: Log in again.",
        "invalid_grant",
        "Log in again.",
        400,
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.just(CANARY),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


@given(
    status=st.sampled_from([400, 401, 403, 404, 408, 429, 500, 502, 503]),
    answer=st.dictionaries(st.sampled_from(["error", "code", "message", "error_description"]), json_values),
    retry_after=st.one_of(st.none(), st.just(CANARY), st.integers(0, 10**6).map(str)),
)
def test_no_part_of_an_error_answer_reaches_the_exception_text(
    status: int, answer: dict[str, Any], retry_after: str | None
) -> None:
    failure = classify_failure("anthropic", status, msgspec.json.encode(answer), retry_after, NOW_S)
    shown = "".join(traceback.format_exception(failure)) + repr(failure) + repr(failure.args)
    assert CANARY not in shown
