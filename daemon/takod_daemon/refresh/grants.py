"""Refreshing one OAuth grant the way its owning tool does, and what a failure means.

For each grant kind takod may refresh (pi's ``openai-codex``, ``anthropic``,
``github-copilot``, ``google-gemini-cli``, ``google-antigravity`` entries and
Codex's ``auth.json``) this module sends the owner's request (built in
:mod:`.endpoints`), reads the answer with the owner's rules, and turns every
failure into one of two exceptions:

- :class:`RefreshTransient`: worth retrying while the old access token still
  works (network errors, timeouts, 5xx, 429, unknown 4xx, a success answer
  that is not JSON at all, e.g. from a captive portal, or larger than
  ``MAX_ANSWER`` bytes).
- :class:`RefreshPermanent`: retrying cannot help and the user must log in
  again (``invalid_grant``, ``refresh_token_reused`` / ``_expired`` /
  ``_invalidated``, any 401, OAuth client errors, a JSON success answer
  without a usable token: the wrong shape, nested deeper than any token answer,
  or a lifetime that is not a number of seconds in (0, ``MAX_LIFETIME_S``]).
  Codex draws the same line (providers.md A5).

Answers are read as pi stores them (pi-auth.md §1.3, §2.1): pi replaces the
whole entry with what its refresh returns, so extras survive only where pi's
refresh carries them (``accountId`` re-derived from the new token,
``enterpriseUrl``, ``projectId``). Two deliberate departures, both so that a
refresh never loses a usable token: an answer without ``refresh_token``
keeps the old one (pi would fail or store none), and an ``openai-codex``
access token without an account claim keeps the previous ``accountId``
instead of failing after the provider already rotated the refresh token.

Nothing here logs. Exception text never holds a token or a response body:
only status codes and OAuth error codes that look like codes.
"""

from __future__ import annotations

import email.utils
import math
import re
from collections.abc import Mapping
from datetime import timezone
from typing import Any, ClassVar, TypeVar

import anyio
import httpx
import msgspec

from takod_daemon.credentials.codex_auth import CodexAuth, TokenRefresh
from takod_daemon.credentials.jwt import OPENAI_AUTH_CLAIM, JwtError, decode_payload
from takod_daemon.credentials.pi_auth import OAuthEntry
from takod_daemon.credentials.summary import SecretStruct
from takod_daemon.peer_input import TooDeep, TooLarge, decode_json, fetch
from takod_daemon.redact import redact_text
from takod_daemon.refresh.endpoints import (
    GOOGLE_CLIENTS,
    TokenRequest,
    anthropic_request,
    codex_request,
    copilot_request,
    google_request,
    openai_codex_request,
)

REQUEST_TIMEOUT_S = 30.0
# A refresh holds the tools' locks across its request (docs/refresh.md): pi 1.x
# waits 30 s for its lock and times its own refresh out after 15 s, so ours is
# bounded the same, leaving a waiting pi time to read the result.
LOCKED_REQUEST_TIMEOUT_S = 15.0
# Token answers are a few KiB; the endpoint may not make takod hold more.
MAX_ANSWER = 1024 * 1024
# A token living longer than this is not an answer to take: its expiry might not
# even fit pi's file (and 1e308 s overflows).
MAX_LIFETIME_S = 10 * 365 * 24 * 3600
# The grant name of Codex's own auth.json login (pi grants are named by provider id).
CODEX_GRANT = "codex"

_FIVE_MINUTES_MS = 5 * 60 * 1000
# What pi subtracts from the real expiry before storing ``expires`` (pi-auth.md §2.1).
PI_EXPIRY_MARGIN_MS: Mapping[str, int] = {
    "openai-codex": 0,
    "anthropic": _FIVE_MINUTES_MS,
    "github-copilot": _FIVE_MINUTES_MS,
    "google-gemini-cli": _FIVE_MINUTES_MS,
    "google-antigravity": _FIVE_MINUTES_MS,
}
REFRESHABLE_PI_PROVIDERS: frozenset[str] = frozenset(PI_EXPIRY_MARGIN_MS)
# pi 1.x refreshes when ``now + 5 min >= expires``; Codex when the JWT ``exp`` is
# within 5 minutes. Legacy pi waits for ``expires`` itself, which is later.
TOOL_REFRESH_WINDOW_MS = _FIVE_MINUTES_MS

# Error codes after which the same refresh token can never work again. The last
# four mean the request itself is refused; no retry of it can succeed either.
PERMANENT_CODES = frozenset(
    {
        "invalid_grant",
        "refresh_token_reused",
        "refresh_token_expired",
        "refresh_token_invalidated",
        "invalid_client",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
    }
)
# OAuth error codes are words joined by underscores; anything else in an error
# field (a token echoed back, free text) is never repeated.
_CODE_RE = re.compile(r"[A-Za-z]+(?:_[A-Za-z]+)*")
_MAX_CODE_CHARS = 64
_DETAIL_CHARS = 200

_WHY: Mapping[str, str] = {
    "refresh_token_reused": "The refresh token was already used: another program refreshed this login first.",
    "refresh_token_expired": "The refresh token has expired.",
    "refresh_token_invalidated": "The refresh token was revoked (by a login or logout elsewhere).",
    "invalid_grant": "The provider no longer accepts this login's refresh token.",
    "unauthorized": "The provider rejected the stored credentials (HTTP 401).",
    "malformed_response": "The token endpoint answered without a usable token.",
    "missing_project_id": "The entry has no projectId, which this provider needs to refresh.",
    "no_refresh_token": "The login holds no refresh token.",
}


# --- failures ---------------------------------------------------------------------------


class RefreshError(Exception):
    """A refresh that did not produce new credentials. The stored ones are untouched."""


class RefreshTransient(RefreshError):
    """Worth retrying later. ``retry_after``: seconds the server asked to wait, if it did."""

    def __init__(self, reason: str, retry_after: float | None = None):
        suffix = f"; retry after {retry_after:g} s" if retry_after is not None else ""
        super().__init__(reason + suffix)
        self.reason = reason
        self.retry_after = retry_after


class RefreshPermanent(RefreshError):
    """Retrying cannot help. ``code`` is a stable snake_case word; ``guidance`` is
    the sentence to show the user, ending with how to log in again."""

    def __init__(self, code: str, guidance: str, status: int | None = None):
        super().__init__(f"{code}: {guidance}")
        self.code = code
        self.guidance = guidance
        self.status = status


def reauth_guidance(grant: str, code: str) -> str:
    """What to tell the user when ``grant`` failed permanently with ``code``."""
    why = _WHY.get(code, f"The token endpoint refused the refresh ({code}).")
    if grant == CODEX_GRANT:
        how = "Log in again: run `codex login`."
    elif grant in GOOGLE_CLIENTS:
        # pi 0.71 removed both Google providers; only an older pi can log in again.
        how = f"Log in again with `/login {grant}` in pi 0.70 or older (later pi versions dropped {grant})."
    else:
        how = f"Log in again: run `takod login {grant}` (or `/login {grant}` inside pi)."
    return f"{why} {how}"


def _permanent(grant: str, code: str, status: int | None = None) -> RefreshPermanent:
    return RefreshPermanent(code, reauth_guidance(grant, code), status)


def error_code(body: bytes) -> str | None:
    """The OAuth error code of an error answer, lower-cased, as Codex reads it:
    ``error`` as a string, else ``error.code`` (then ``error.type``), else a
    top-level ``code``. None when there is none or it does not look like a code."""
    try:
        doc = decode_json(body)
    except msgspec.DecodeError:  # not JSON, or nested too deeply to be an error answer
        return None
    if not isinstance(doc, dict):
        return None
    error = doc.get("error")
    candidates = [error] if isinstance(error, str) else []
    if isinstance(error, dict):
        candidates += [error.get("code"), error.get("type")]
    candidates.append(doc.get("code"))
    for candidate in candidates:
        if isinstance(candidate, str) and len(candidate) <= _MAX_CODE_CHARS and _CODE_RE.fullmatch(candidate):
            return candidate.lower()
    return None


def parse_retry_after(value: str | None, now_s: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or an
    HTTP-date, read against ``now_s``); None when absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if re.fullmatch(r"[0-9]+", text):
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - now_s)


def classify_failure(
    grant: str, status: int, body: bytes, retry_after: str | None, now_s: float
) -> RefreshTransient | RefreshPermanent:
    """What a non-2xx answer from ``grant``'s token endpoint means.

    Permanent: a code in :data:`PERMANENT_CODES` (whatever the status, as Codex
    does) or any 401. Everything else is transient: 429 and 5xx, but also
    other 4xx, as Codex treats them. ``retry_after`` is the raw header.
    """
    code = error_code(body)
    if code in PERMANENT_CODES:
        return _permanent(grant, code, status)
    if status == 401:
        return _permanent(grant, "unauthorized", status)
    if status == 429:
        reason = "rate limited (HTTP 429)"
    elif status >= 500:
        reason = f"server error (HTTP {status})"
    else:
        reason = f"unexpected answer (HTTP {status})"
    if code:
        reason += f", error {code}"
    return RefreshTransient(reason, parse_retry_after(retry_after, now_s))


# --- answers ----------------------------------------------------------------------------


class OAuthTokenResponse(SecretStruct, frozen=True):
    """An RFC 6749 token answer; every field optional, unknown ones ignored."""

    __secret_fields__: ClassVar[frozenset[str]] = frozenset({"access_token", "refresh_token", "id_token"})

    access_token: str | None = None
    refresh_token: str | None = None
    expires_in: float | None = None
    id_token: str | None = None


class CopilotTokenResponse(SecretStruct, frozen=True):
    """GitHub's Copilot token answer: ``expires_at`` is epoch seconds."""

    __secret_fields__: ClassVar[frozenset[str]] = frozenset({"token"})

    token: str | None = None
    expires_at: float | None = None


_Answer = TypeVar("_Answer", OAuthTokenResponse, CopilotTokenResponse)


def _decode_answer(body: bytes, answer_type: type[_Answer], grant: str) -> _Answer:
    try:
        return decode_json(body, answer_type)
    except (msgspec.ValidationError, TooDeep):
        # JSON of the wrong shape (no token answer nests 1000 levels) came from the
        # endpoint itself: a retry would post a refresh token it may already have spent.
        raise _permanent(grant, "malformed_response") from None
    except msgspec.DecodeError:
        raise RefreshTransient("the token endpoint's success answer is not JSON") from None


def lifetime_ok(seconds: float | None) -> bool:
    """Is ``seconds`` a token lifetime to store (finite, in (0, MAX_LIFETIME_S])?"""
    # A token already expired (or forever valid, or inf) is not a usable answer, and
    # storing it would have the scheduler refresh again at once, in a loop.
    return seconds is not None and math.isfinite(seconds) and 0 < seconds <= MAX_LIFETIME_S


# Extras pi's refresh hands back unchanged; it drops every other one.
_KEPT_EXTRAS: Mapping[str, tuple[str, ...]] = {
    "github-copilot": ("enterpriseUrl",),
    "google-gemini-cli": ("projectId",),
    "google-antigravity": ("projectId",),
}


def _kept_extras(provider: str, entry: OAuthEntry) -> dict[str, Any]:
    names = _KEPT_EXTRAS.get(provider, ())
    return {k: v for k, v in entry.extra.items() if k in names}


def openai_account_id(access_token: str) -> str | None:
    """The ChatGPT account id pi reads: ``https://api.openai.com/auth`` ->
    ``chatgpt_account_id`` of the access token."""
    try:
        claim = decode_payload(access_token).get(OPENAI_AUTH_CLAIM)
    except JwtError:
        return None
    account = claim.get("chatgpt_account_id") if isinstance(claim, dict) else None
    return account if isinstance(account, str) and account else None


def parse_pi_response(provider: str, entry: OAuthEntry, body: bytes, now_ms: int) -> OAuthEntry:
    """The entry pi would store after ``provider``'s token endpoint answered
    ``body`` (2xx) to a refresh of ``entry`` sent at ``now_ms``."""
    if provider == "github-copilot":
        copilot = _decode_answer(body, CopilotTokenResponse, provider)
        lifetime = None if copilot.expires_at is None else copilot.expires_at - now_ms / 1000
        if not copilot.token or not lifetime_ok(lifetime):
            raise _permanent(provider, "malformed_response")
        assert copilot.expires_at is not None
        # The GitHub token is the "refresh": it never changes.
        return OAuthEntry(
            access=copilot.token,
            refresh=entry.refresh,
            expires=pi_stored_expires(provider, int(copilot.expires_at * 1000)),
            extra=_kept_extras(provider, entry),
        )

    answer = _decode_answer(body, OAuthTokenResponse, provider)
    if not answer.access_token or not lifetime_ok(answer.expires_in):
        raise _permanent(provider, "malformed_response")
    assert answer.expires_in is not None
    extra = _kept_extras(provider, entry)
    if provider == "openai-codex":
        account = openai_account_id(answer.access_token) or entry.extra_str("accountId")
        if account:
            extra["accountId"] = account
    return OAuthEntry(
        access=answer.access_token,
        refresh=answer.refresh_token or entry.refresh,
        expires=pi_stored_expires(provider, int(now_ms + answer.expires_in * 1000)),
        extra=extra,
    )


def parse_codex_response(body: bytes) -> TokenRefresh:
    """Codex's reading of a refresh answer: each token optional, only those
    present are written. An ``id_token`` Codex could not parse is left out
    (the stored one stays), since Codex refuses to load a file holding one."""
    answer = _decode_answer(body, OAuthTokenResponse, CODEX_GRANT)
    if not answer.access_token:
        raise _permanent(CODEX_GRANT, "malformed_response")
    id_token = answer.id_token or None
    if id_token is not None:
        try:
            decode_payload(id_token)
        except JwtError:
            id_token = None
    return TokenRefresh(
        id_token=id_token,
        access_token=answer.access_token,
        refresh_token=answer.refresh_token or None,
    )


# --- expiry -----------------------------------------------------------------------------


class GrantExpiry(msgspec.Struct, frozen=True):
    """A grant's expiry, epoch milliseconds.

    - ``real_ms``: when the provider stops accepting the access token.
    - ``stored_ms``: what the owning tool stores: pi's ``expires`` (margin
      already subtracted), Codex's access-token ``exp``.
    - ``tool_refresh_ms``: the earliest moment the owning tool refreshes by
      itself (pi 1.x and Codex: 5 minutes before ``stored_ms``); takod must
      have refreshed before then.
    """

    real_ms: int
    stored_ms: int
    tool_refresh_ms: int


def pi_stored_expires(provider: str, real_expiry_ms: int) -> int:
    """pi's ``expires`` for a token that really expires at ``real_expiry_ms``."""
    return real_expiry_ms - PI_EXPIRY_MARGIN_MS[provider]


def pi_grant_expiry(provider: str, entry: OAuthEntry) -> GrantExpiry:
    """The expiry of a pi entry of a refreshable ``provider``."""
    return GrantExpiry(
        real_ms=entry.expires + PI_EXPIRY_MARGIN_MS[provider],
        stored_ms=entry.expires,
        tool_refresh_ms=entry.expires - TOOL_REFRESH_WINDOW_MS,
    )


def codex_grant_expiry(auth: CodexAuth) -> GrantExpiry | None:
    """The expiry of Codex's login from its access token's ``exp``; None when the
    token has none (Codex then refreshes when ``last_refresh`` is 8 days old)."""
    if auth.expires_at is None:
        return None
    exp_ms = int(auth.expires_at * 1000)
    return GrantExpiry(real_ms=exp_ms, stored_ms=exp_ms, tool_refresh_ms=exp_ms - TOOL_REFRESH_WINDOW_MS)


# --- requests and I/O -------------------------------------------------------------------


def pi_request(provider: str, entry: OAuthEntry, env: Mapping[str, str]) -> TokenRequest:
    """The refresh request for pi's ``provider`` entry. Raises ValueError for a
    provider takod does not refresh, and :class:`RefreshPermanent` when the
    entry lacks what the refresh needs (as pi, without a network call)."""
    if provider not in REFRESHABLE_PI_PROVIDERS:
        raise ValueError(f"takod does not refresh pi provider {provider!r}")
    if not entry.refresh:
        raise _permanent(provider, "no_refresh_token")
    if provider == "openai-codex":
        return openai_codex_request(entry.refresh, env)
    if provider == "anthropic":
        return anthropic_request(entry.refresh, env)
    if provider == "github-copilot":
        return copilot_request(entry.refresh, entry.extra_str("enterpriseUrl"), env)
    if not entry.extra.get("projectId"):
        raise _permanent(provider, "missing_project_id")
    return google_request(provider, entry.refresh, env)


async def _exchange(
    request: TokenRequest, grant: str, http: httpx.AsyncClient, now_s: float, timeout: float
) -> bytes:
    """Send ``request``; the body of a 2xx answer, else the classified failure."""
    try:
        # httpx's timeout is per phase; fail_after bounds the whole exchange.
        with anyio.fail_after(timeout):
            response = await fetch(
                http, request.method, request.url, limit=MAX_ANSWER,
                headers=request.headers, content=request.body, timeout=timeout,
            )
    except (TimeoutError, httpx.TimeoutException):
        raise RefreshTransient(f"no answer within {timeout:g} s") from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        detail = redact_text(str(exc))[:_DETAIL_CHARS]
        raise RefreshTransient(f"network error: {type(exc).__name__}: {detail}") from None
    except TooLarge:
        raise RefreshTransient(f"the token endpoint's success answer is larger than {MAX_ANSWER} bytes") from None
    if response.is_success:
        return response.content
    raise classify_failure(grant, response.status_code, response.content, response.headers.get("Retry-After"), now_s)


async def refresh_pi_entry(
    provider: str,
    entry: OAuthEntry,
    http: httpx.AsyncClient,
    env: Mapping[str, str],
    now_ms: int,
    *,
    timeout: float = REQUEST_TIMEOUT_S,
) -> OAuthEntry:
    """Refresh pi's ``provider`` entry; the new entry as pi would store it.

    ``now_ms`` is taken before the request, so ``expires`` errs early by the
    request's duration. Raises :class:`RefreshTransient` or
    :class:`RefreshPermanent`; ValueError for a provider takod does not refresh.
    """
    request = pi_request(provider, entry, env)
    body = await _exchange(request, provider, http, now_ms / 1000, timeout)
    return parse_pi_response(provider, entry, body, now_ms)


async def refresh_codex(
    auth: CodexAuth,
    http: httpx.AsyncClient,
    env: Mapping[str, str],
    now: float,
    *,
    timeout: float = REQUEST_TIMEOUT_S,
) -> TokenRefresh:
    """Refresh Codex's login as Codex does; the tokens to write with
    ``codex_auth.write_refreshed_tokens``. ``now`` is epoch seconds. Raises
    :class:`RefreshTransient` or :class:`RefreshPermanent`."""
    if not auth.refresh_token:
        raise _permanent(CODEX_GRANT, "no_refresh_token")
    body = await _exchange(codex_request(auth.refresh_token, env), CODEX_GRANT, http, now, timeout)
    return parse_codex_response(body)
