"""A loopback stand-in for every OAuth token endpoint takod refreshes against.

One server on ``127.0.0.1:<free port>`` serves four endpoints on distinct paths:

| endpoint    | path                                   | stands in for                                   |
|-------------|----------------------------------------|-------------------------------------------------|
| ``openai``  | ``/openai/oauth/token``                | ``auth.openai.com/oauth/token`` (pi and Codex)  |
| ``anthropic`` | ``/anthropic/v1/oauth/token``        | ``platform.claude.com/v1/oauth/token``          |
| ``copilot`` | ``/copilot/copilot_internal/v2/token`` | ``api.github.com/copilot_internal/v2/token``    |
| ``google``  | ``/google/token``                      | ``oauth2.googleapis.com/token``                 |

It checks every request as strictly as the real endpoint would (research
pi-auth.md §2.1, providers.md A5): content type, exact field set,
``grant_type``, client id (and Google's client secret), no ``scope`` for
Anthropic, the Bearer GitHub token and Copilot headers for Copilot. A wrong
request gets a 400/401 OAuth error the test can see (and
:attr:`FakeOAuthServer.requests` records it). It deliberately imports
nothing from takod: it is the oracle, not a copy.

Grants are registered with :meth:`FakeOAuthServer.add_grant`. The server
knows each grant's current refresh token and every spent one: OpenAI,
Anthropic (and Google grants created with ``rotate=True``) rotate on every
refresh; presenting a spent token answers ``refresh_token_reused`` (OpenAI,
401 with OpenAI's nested error body) or ``invalid_grant`` (others). Copilot's
"refresh token" is the GitHub token, which never changes.

Issued tokens look like the real ones: OpenAI access and id tokens are
unsigned JWTs with ``exp``/``iat`` and the ``https://api.openai.com/auth``
claims (``chatgpt_account_id`` ...), encoded so that pi's ``atob`` can read
them; Anthropic ``sk-ant-oat01-...``; Copilot ``tid=...;exp=...;proxy-ep=...``;
Google ``ya29....``.

Failure modes (each optionally limited to one endpoint):

- :meth:`~FakeOAuthServer.slow`: answer ``seconds`` late. By default the
  delay comes before the grant is touched and a client that gave up meanwhile
  is not served (nothing rotates); ``after_rotation=True`` rotates first,
  the case where a client that gives up loses the new token.
- :meth:`~FakeOAuthServer.fail_transient`: the next ``times`` requests get a
  503 (optionally with ``Retry-After``) or a dropped connection.
- :meth:`~FakeOAuthServer.rate_limit`: the next ``times`` requests get 429
  with ``Retry-After``.
- :meth:`~FakeOAuthServer.fail_permanent`: every request gets
  ``invalid_grant`` (Copilot: 401 "Bad credentials") until :meth:`reset_modes`.
- :attr:`~FakeOAuthServer.echo_secrets`: error bodies quote the token the
  client sent, as a careless server might; for canary tests.
- any bytes at all: :meth:`~tests.fakes.http_base.LoopbackServer.answer_with`
  (recorded with outcome ``canned``; the grant is not touched).

Use it as a context manager (``with FakeOAuthServer() as server:``) or through
the ``oauth_server`` fixture; :meth:`~FakeOAuthServer.env` gives the
``TAKOD_*_TOKEN_URL`` variables pointing at it (plus Codex's own
``CODEX_REFRESH_TOKEN_URL_OVERRIDE``, so a real ``codex`` refreshes here too).
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Literal
from urllib.parse import parse_qs

import pytest

from tests.fakes.http_base import FakeHandler, LoopbackServer

Endpoint = Literal["openai", "anthropic", "copilot", "google"]
ENDPOINTS: tuple[Endpoint, ...] = ("openai", "anthropic", "copilot", "google")

PATHS: dict[Endpoint, str] = {
    "openai": "/openai/oauth/token",
    "anthropic": "/anthropic/v1/oauth/token",
    "copilot": "/copilot/copilot_internal/v2/token",
    "google": "/google/token",
}
ENV_VARS: dict[Endpoint, str] = {
    "openai": "TAKOD_OPENAI_TOKEN_URL",
    "anthropic": "TAKOD_ANTHROPIC_TOKEN_URL",
    "copilot": "TAKOD_COPILOT_TOKEN_URL",
    "google": "TAKOD_GOOGLE_TOKEN_URL",
}

OPENAI_CLIENT_ID = "app_EMoamEEZ73f0CkXaXp7hrann"
ANTHROPIC_CLIENT_ID = "9d1c250a-e61b-44d9-88ed-5944d1962f5e"
GOOGLE_CLIENTS: dict[str, tuple[str, str]] = {  # pi provider id -> (client id, client secret)
    "google-gemini-cli": (
        "681255809395-oo8ft2oprdrnp9e3aqf6av3hmdib135j.apps.googleusercontent.com",
        "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",
    ),
    "google-antigravity": (
        "1071006060591-tmhssin2h21lcre235vtolojh4g403ep.apps.googleusercontent.com",
        "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",
    ),
}
COPILOT_HEADERS = {
    "User-Agent": "GitHubCopilotChat/0.35.0",
    "Editor-Version": "vscode/1.107.0",
    "Editor-Plugin-Version": "copilot-chat/0.35.0",
    "Copilot-Integration-Id": "vscode-chat",
}
OPENAI_AUTH_CLAIM = "https://api.openai.com/auth"
OPENAI_PROFILE_CLAIM = "https://api.openai.com/profile"
# What pi subtracts from the real expiry when it stores ``expires``.
PI_MARGIN_MS: dict[Endpoint, int] = {"openai": 0, "anthropic": 300_000, "copilot": 300_000, "google": 300_000}
DEFAULT_LIFETIME_S: dict[Endpoint, int] = {"openai": 864_000, "anthropic": 28_800, "copilot": 1_800, "google": 3_599}

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"

Outcome = Literal["ok", "rejected", "fault", "dropped", "abandoned", "canned"]


# --- tokens ---------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(claims: dict[str, Any]) -> str:
    """An unsigned JWT carrying ``claims``.

    The payload must decode with the *standard* base64 alphabet too: pi reads
    it with ``atob``, which rejects ``-`` and ``_``. For ASCII JSON without
    ``>``, ``?`` and ``~`` base64url never produces them; the assertion keeps
    that true for whatever claims a test passes.
    """
    header = _b64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "fake-oauth"}).encode())
    payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    assert "-" not in payload and "_" not in payload, "claims would not survive pi's atob()"
    # Not a signature, just distinct per token like a real one (hex: no "-" or "_").
    return f"{header}.{payload}.{secrets.token_hex(32)}"


# --- grants ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    """A grant's current state as the server sees it (a snapshot)."""

    name: str
    endpoint: Endpoint
    refresh: str  # the current refresh token (Copilot: the GitHub token)
    access: str
    expires_at: int  # epoch seconds of ``access``
    lifetime_s: int
    rotate: bool
    account_id: str
    email: str
    id_token: str | None = None  # OpenAI only
    client: str | None = None  # Google: the pi provider id whose client issued it
    project_id: str | None = None  # Google: pi's projectId
    enterprise_url: str | None = None  # Copilot: pi's enterpriseUrl
    refreshes: int = 0  # successful refreshes so far
    spent: tuple[str, ...] = ()

    def pi_entry(self) -> dict[str, Any]:
        """The grant as pi stores it in ``auth.json`` (``expires`` with pi's margin)."""
        entry: dict[str, Any] = {
            "type": "oauth",
            "access": self.access,
            "refresh": self.refresh,
            "expires": self.expires_at * 1000 - PI_MARGIN_MS[self.endpoint],
        }
        if self.endpoint == "openai":
            entry["accountId"] = self.account_id
        elif self.endpoint == "google":
            entry["projectId"] = self.project_id
            entry["email"] = self.email
        elif self.endpoint == "copilot" and self.enterprise_url:
            entry["enterpriseUrl"] = self.enterprise_url
        return entry

    def codex_auth(self) -> dict[str, Any]:
        """An OpenAI grant as Codex's ``auth.json`` holds it."""
        assert self.endpoint == "openai", "only OpenAI grants are Codex logins"
        return {
            "auth_mode": "chatgpt",
            "OPENAI_API_KEY": None,
            "tokens": {
                "id_token": self.id_token,
                "access_token": self.access,
                "refresh_token": self.refresh,
                "account_id": self.account_id,
            },
            "last_refresh": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }


def _new_refresh(endpoint: Endpoint) -> str:
    if endpoint == "openai":
        return "rt_" + secrets.token_hex(24)
    if endpoint == "anthropic":
        return "sk-ant-ort01-" + secrets.token_hex(24)
    if endpoint == "copilot":
        return "gho_" + secrets.token_hex(18)
    return "1//0" + secrets.token_hex(24)


def _new_access(grant: Grant, issued_at: int) -> tuple[str, str | None]:
    """A fresh access token (and id token for OpenAI) for ``grant``, issued now."""
    exp = issued_at + grant.lifetime_s
    if grant.endpoint == "openai":
        auth = {
            "chatgpt_account_id": grant.account_id,
            "chatgpt_plan_type": "plus",
            "chatgpt_user_id": "user-" + grant.name,
            "user_id": "user-" + grant.name,
        }
        profile = {"email": grant.email, "email_verified": True}
        access = make_jwt(
            {
                "aud": ["https://api.openai.com/v1"],
                "client_id": OPENAI_CLIENT_ID,
                "exp": exp,
                "iat": issued_at,
                "iss": "https://auth.openai.com",
                "jti": secrets.token_hex(8),
                "scp": ["openid", "profile", "email", "offline_access"],
                "sub": "auth0|" + grant.name,
                OPENAI_AUTH_CLAIM: auth,
                OPENAI_PROFILE_CLAIM: profile,
            }
        )
        id_token = make_jwt(
            {
                "aud": [OPENAI_CLIENT_ID],
                "email": grant.email,
                "exp": issued_at + 3600,
                "iat": issued_at,
                "iss": "https://auth.openai.com",
                "sub": "auth0|" + grant.name,
                OPENAI_AUTH_CLAIM: auth,
            }
        )
        return access, id_token
    if grant.endpoint == "anthropic":
        return "sk-ant-oat01-" + secrets.token_hex(24), None
    if grant.endpoint == "copilot":
        fields = [
            f"tid={secrets.token_hex(16)}",
            f"exp={exp}",
            "sku=copilot_individual",
            "proxy-ep=proxy.individual.githubcopilot.com",
            f"8kp=1:{secrets.token_hex(16)}",
        ]
        return ";".join(fields), None
    return "ya29.a0" + secrets.token_hex(32), None


# --- requests -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    """One request as received, and what the server did with it.

    ``grant`` is the grant whose (current or spent) token was presented, if
    any; ``status`` is None when no answer was sent (dropped or abandoned).
    A request is recorded just before its answer is sent.
    """

    endpoint: Endpoint | None
    grant: str | None
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int | None
    outcome: Outcome


@dataclass
class _Fault:
    kind: Literal["503", "drop", "429"]
    remaining: int
    endpoint: Endpoint | None
    retry_after: str | None


@dataclass
class _Slow:
    seconds: float
    endpoint: Endpoint | None
    after_rotation: bool


class _Reject(Exception):
    """Answer the request with ``status`` and ``body`` (an OAuth-style error)."""

    def __init__(self, status: int, body: dict[str, Any]):
        super().__init__(status)
        self.status = status
        self.body = body


class FakeOAuthServer(LoopbackServer):
    """The fake token server; see the module docstring."""

    def __init__(self) -> None:
        super().__init__(_Handler)
        self.requests: list[RecordedRequest] = []
        self.echo_secrets = False
        self._grants: dict[str, Grant] = {}
        self._by_token: dict[str, str] = {}  # every refresh token ever issued -> grant name
        self._faults: list[_Fault] = []
        self._slow: _Slow | None = None
        self._permanent: set[Endpoint | None] = set()
        self._recorded = threading.Condition(self._lock)

    # --- addresses ---

    def url(self, endpoint: Endpoint) -> str:
        return self.origin + PATHS[endpoint]

    def env(self) -> dict[str, str]:
        """``TAKOD_*_TOKEN_URL`` for every endpoint, and Codex's own override."""
        found = {ENV_VARS[e]: self.url(e) for e in ENDPOINTS}
        found["CODEX_REFRESH_TOKEN_URL_OVERRIDE"] = self.url("openai")
        return found

    # --- grants ---

    def add_grant(
        self,
        name: str,
        endpoint: Endpoint,
        *,
        refresh_token: str | None = None,
        access_token: str | None = None,
        lifetime_s: int | None = None,
        rotate: bool | None = None,
        client: str | None = None,
        account_id: str | None = None,
        email: str | None = None,
        project_id: str = "fake-project-123",
        enterprise_url: str | None = None,
    ) -> Grant:
        """Register a login, as if the user had just logged in; returns its state.

        ``rotate`` defaults to the provider's behaviour (OpenAI and Anthropic
        rotate, Google does not; Copilot never does). ``client`` names the Google
        client (a pi provider id), by default ``name`` when it is one, else
        ``google-gemini-cli``. Tests may pass their own (canary) tokens.
        """
        if endpoint == "google":
            client = client or (name if name in GOOGLE_CLIENTS else "google-gemini-cli")
        if endpoint == "copilot":
            rotate = False  # the GitHub token is not a refresh token at all
        elif rotate is None:
            rotate = endpoint in ("openai", "anthropic")
        grant = Grant(
            name=name,
            endpoint=endpoint,
            refresh=refresh_token or _new_refresh(endpoint),
            access="",
            expires_at=0,
            lifetime_s=lifetime_s or DEFAULT_LIFETIME_S[endpoint],
            rotate=rotate,
            account_id=account_id or "acct-" + secrets.token_hex(6),
            email=email or f"{name}@example.test",
            client=client,
            project_id=project_id if endpoint == "google" else None,
            enterprise_url=enterprise_url,
        )
        issued = int(time.time())
        access, id_token = _new_access(grant, issued)
        grant = replace(
            grant, access=access_token or access, id_token=id_token, expires_at=issued + grant.lifetime_s
        )
        with self._lock:
            assert name not in self._grants, f"grant {name!r} exists"
            assert grant.refresh not in self._by_token, "refresh token already issued"
            self._grants[name] = grant
            self._by_token[grant.refresh] = name
        return grant

    def grant(self, name: str) -> Grant:
        with self._lock:
            return self._grants[name]

    def current_refresh(self, name: str) -> str:
        """The one refresh token of ``name`` the server accepts now."""
        return self.grant(name).refresh

    def count(self, grant: str | None = None, *, outcome: Outcome | None = None) -> int:
        """Requests received (for ``grant``, with ``outcome``), all endpoints."""
        with self._lock:
            return sum(
                1
                for r in self.requests
                if (grant is None or r.grant == grant) and (outcome is None or r.outcome == outcome)
            )

    def wait_for_requests(self, n: int, timeout: float) -> bool:
        """Wait until ``n`` requests have been handled (answered, dropped or
        abandoned); False on timeout."""
        with self._recorded:
            return self._recorded.wait_for(lambda: len(self.requests) >= n, timeout)

    # --- modes ---

    def slow(self, seconds: float, *, endpoint: Endpoint | None = None, after_rotation: bool = False) -> None:
        self._slow = _Slow(seconds, endpoint, after_rotation)

    def fail_transient(
        self,
        times: int,
        *,
        kind: Literal["503", "drop"] = "503",
        endpoint: Endpoint | None = None,
        retry_after: str | None = None,
    ) -> None:
        with self._lock:
            self._faults.append(_Fault(kind, times, endpoint, retry_after))

    def rate_limit(self, times: int, *, retry_after: str = "7", endpoint: Endpoint | None = None) -> None:
        with self._lock:
            self._faults.append(_Fault("429", times, endpoint, retry_after))

    def fail_permanent(self, *, endpoint: Endpoint | None = None) -> None:
        with self._lock:
            self._permanent.add(endpoint)

    def reset_modes(self) -> None:
        with self._lock:
            self._faults.clear()
            self._permanent.clear()
            self._slow = None

    # --- used by the handler ---

    def _record(self, request: RecordedRequest) -> None:
        with self._recorded:
            self.requests.append(request)
            self._recorded.notify_all()

    def _grant_of(self, token: str | None) -> str | None:
        with self._lock:
            return self._by_token.get(token) if token else None

    def _take_fault(self, endpoint: Endpoint) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.remaining > 0 and fault.endpoint in (None, endpoint):
                    fault.remaining -= 1
                    return fault
        return None

    def _permanent_for(self, endpoint: Endpoint) -> bool:
        with self._lock:
            return bool(self._permanent & {None, endpoint})

    def _slow_for(self, endpoint: Endpoint) -> _Slow | None:
        slow = self._slow
        return slow if slow is not None and slow.endpoint in (None, endpoint) else None

    def _redeem(self, endpoint: Endpoint, token: str, client: str | None) -> Grant:
        """Refresh the grant holding ``token``; the grant's new state. Raises
        :class:`_Reject` for a spent, unknown or foreign token."""
        with self._lock:
            name = self._by_token.get(token)
            grant = self._grants.get(name) if name else None
            if grant is None or grant.endpoint != endpoint:
                raise _Reject(*_unknown_token(endpoint, token, self.echo_secrets))
            if endpoint == "google" and grant.client != client:
                raise _Reject(400, {"error": "unauthorized_client", "error_description": "Unauthorized"})
            if token != grant.refresh:
                raise _Reject(*_spent_token(endpoint, token, self.echo_secrets))
            issued = int(time.time())
            access, id_token = _new_access(grant, issued)
            new_refresh = _new_refresh(endpoint) if grant.rotate else grant.refresh
            spent = grant.spent + (token,) if grant.rotate else grant.spent
            grant = replace(
                grant,
                refresh=new_refresh,
                access=access,
                id_token=id_token,
                expires_at=issued + grant.lifetime_s,
                refreshes=grant.refreshes + 1,
                spent=spent,
            )
            self._grants[grant.name] = grant
            self._by_token[new_refresh] = grant.name
            return grant


def _with_token(body: dict[str, Any], token: str, echo: bool) -> dict[str, Any]:
    if echo:
        body = {**body, "error_description": f"{body.get('error_description', 'rejected')} for token {token}"}
    return body


def _unknown_token(endpoint: Endpoint, token: str, echo: bool) -> tuple[int, dict[str, Any]]:
    if endpoint == "copilot":
        answer = {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"}
        return 401, _with_token(answer, token, echo)
    return 400, _with_token({"error": "invalid_grant", "error_description": "Invalid refresh token"}, token, echo)


def _spent_token(endpoint: Endpoint, token: str, echo: bool) -> tuple[int, dict[str, Any]]:
    if endpoint == "openai":
        message = (
            "Your refresh token has already been used to generate a new access token. Please try signing in again."
        )
        if echo:
            message += f" ({token})"
        error = {"message": message, "type": "invalid_request_error", "param": None, "code": "refresh_token_reused"}
        return 401, {"error": error}
    return 400, _with_token({"error": "invalid_grant", "error_description": "Refresh token already used"}, token, echo)


def _permanent_answer(endpoint: Endpoint, token: str, echo: bool) -> tuple[int, dict[str, Any]]:
    if endpoint == "copilot":
        return _unknown_token(endpoint, token, echo)
    return 400, _with_token({"error": "invalid_grant", "error_description": "Token has been revoked"}, token, echo)


def _parse_form(raw: bytes) -> dict[str, str]:
    """A form body whose every field appears exactly once."""
    try:
        pairs = parse_qs(raw.decode("ascii"), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        raise _Reject(400, {"error": "invalid_request", "error_description": "malformed form body"}) from None
    if any(len(values) != 1 for values in pairs.values()):
        raise _Reject(400, {"error": "invalid_request", "error_description": "repeated form field"})
    return {k: v[0] for k, v in pairs.items()}


def _parse_json(raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except ValueError:
        raise _Reject(400, {"error": "invalid_request", "error_description": "Invalid request format"}) from None
    if not isinstance(doc, dict):
        raise _Reject(400, {"error": "invalid_request", "error_description": "Invalid request format"})
    return doc


def _media_type(headers: dict[str, str]) -> str:
    return headers.get("content-type", "").split(";")[0].strip().lower()


def _require_fields(fields: dict[str, Any], expected: set[str]) -> None:
    missing, extra = expected - fields.keys(), fields.keys() - expected
    if "scope" in extra:
        # Anthropic's answer to pi before 0.58.2 (#2169); others would ignore it,
        # but no client takod imitates sends one.
        raise _Reject(400, {"error": "invalid_scope", "error_description": "scope is not allowed on refresh"})
    if missing or extra:
        detail = f"missing {sorted(missing)}, unexpected {sorted(extra)}"
        raise _Reject(400, {"error": "invalid_request", "error_description": detail})
    if fields["grant_type"] != "refresh_token":
        raise _Reject(400, {"error": "unsupported_grant_type", "error_description": "grant_type must be refresh_token"})
    if not isinstance(fields["refresh_token"], str) or not fields["refresh_token"]:
        raise _Reject(400, {"error": "invalid_request", "error_description": "refresh_token is required"})


def _validate(endpoint: Endpoint, method: str, headers: dict[str, str], raw: bytes) -> tuple[str, str | None]:
    """Check a request as the real endpoint would; (presented token, Google client)."""
    if endpoint == "copilot":
        if method != "GET":
            raise _Reject(405, {"message": "Method Not Allowed"})
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:]:
            raise _Reject(401, {"message": "Requires authentication"})
        wrong = [h for h, v in COPILOT_HEADERS.items() if headers.get(h.lower()) != v]
        if wrong or raw:
            detail = f"bad Copilot headers {wrong}" if wrong else "a GET carries no body"
            raise _Reject(400, {"message": detail})
        return auth[7:], None
    if method != "POST":
        raise _Reject(405, {"error": "invalid_request", "error_description": "use POST"})
    media = _media_type(headers)
    if endpoint == "openai":
        # pi posts a form, Codex JSON; the endpoint takes both.
        if media == FORM:
            fields: dict[str, Any] = _parse_form(raw)
        elif media == JSON:
            fields = _parse_json(raw)
            # Codex 0.169+ says why it refreshes ("proactive_expiry", ...); older ones do not.
            if isinstance(fields.get("refresh_reason"), str):
                fields.pop("refresh_reason")
        else:
            raise _Reject(400, {"error": "invalid_request", "error_description": f"unsupported content type {media!r}"})
        _require_fields(fields, {"grant_type", "refresh_token", "client_id"})
        if fields["client_id"] != OPENAI_CLIENT_ID:
            raise _Reject(401, {"error": "invalid_client", "error_description": "Unknown client"})
        return fields["refresh_token"], None
    if endpoint == "anthropic":
        if media != JSON:
            raise _Reject(400, {"error": "invalid_request", "error_description": "Invalid request format"})
        fields = _parse_json(raw)
        _require_fields(fields, {"grant_type", "client_id", "refresh_token"})
        if fields["client_id"] != ANTHROPIC_CLIENT_ID:
            raise _Reject(401, {"error": "invalid_client", "error_description": "Invalid client"})
        return fields["refresh_token"], None
    if media != FORM:
        raise _Reject(400, {"error": "invalid_request", "error_description": "Invalid content type"})
    fields = _parse_form(raw)
    _require_fields(fields, {"client_id", "client_secret", "refresh_token", "grant_type"})
    client = next((p for p, (cid, _) in GOOGLE_CLIENTS.items() if cid == fields["client_id"]), None)
    if client is None:
        raise _Reject(401, {"error": "invalid_client", "error_description": "The OAuth client was not found."})
    if GOOGLE_CLIENTS[client][1] != fields["client_secret"]:
        raise _Reject(401, {"error": "invalid_client", "error_description": "Unauthorized"})
    return fields["refresh_token"], client


def _success(grant: Grant) -> dict[str, Any]:
    if grant.endpoint == "copilot":
        return {
            "token": grant.access,
            "expires_at": grant.expires_at,
            "refresh_in": max(grant.lifetime_s - 300, 0),
            "sku": "copilot_individual",
            "endpoints": {"api": "https://api.individual.githubcopilot.com"},
        }
    answer: dict[str, Any] = {"access_token": grant.access, "expires_in": grant.lifetime_s, "token_type": "Bearer"}
    if grant.endpoint == "openai":
        answer |= {
            "id_token": grant.id_token,
            "refresh_token": grant.refresh,
            "scope": "openid profile email offline_access",
        }
    elif grant.endpoint == "anthropic":
        answer |= {"refresh_token": grant.refresh, "scope": "user:inference user:profile"}
    else:
        answer["scope"] = "https://www.googleapis.com/auth/cloud-platform"
        if grant.rotate:
            answer["refresh_token"] = grant.refresh
    return answer


class _Handler(FakeHandler[FakeOAuthServer]):
    server_version = "fake-oauth"

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        raw = self.read_body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        endpoint = next((e for e, p in PATHS.items() if p == self.path), None)
        fake = self.fake

        # Recorded before answering, so a client holding the answer sees the record.
        def record(grant: str | None, status: int | None, outcome: Outcome) -> None:
            fake._record(RecordedRequest(endpoint, grant, self.command, self.path, headers, raw, status, outcome))

        if endpoint is None:
            record(None, 404, "rejected")
            self._send(404, {"error": "not_found"})
            return
        presented = _sniff_token(endpoint, headers, raw)
        grant = fake._grant_of(presented)
        if self.send_canned(lambda answer: record(grant, answer.status, "canned")):
            return  # the grant is not touched: nothing rotates

        slow = fake._slow_for(endpoint)
        if slow is not None and not slow.after_rotation:
            fake.wait_released(slow.seconds)
            if self.client_gone():
                self.close_connection = True
                record(grant, None, "abandoned")
                return

        fault = fake._take_fault(endpoint)
        if fault is not None:
            if fault.kind == "drop":
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                record(grant, None, "dropped")
                return
            status = 503 if fault.kind == "503" else 429
            body = {"error": "temporarily_unavailable" if status == 503 else "rate_limit_exceeded"}
            if fake.echo_secrets and presented:
                body["error_description"] = f"try again later with {presented}"
            extra = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            record(grant, status, "fault")
            self._send(status, body, extra)
            return

        try:
            token, client = _validate(endpoint, self.command, headers, raw)
            if fake._permanent_for(endpoint):
                raise _Reject(*_permanent_answer(endpoint, token, fake.echo_secrets))
            refreshed = fake._redeem(endpoint, token, client)
        except _Reject as reject:
            record(grant, reject.status, "rejected")
            self._send(reject.status, reject.body)
            return
        if slow is not None and slow.after_rotation:
            fake.wait_released(slow.seconds)
        record(refreshed.name, 200, "ok")
        self._send(200, _success(refreshed))

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        try:
            self.send_json(status, body, headers)
        except OSError:
            self.close_connection = True  # the client gave up; nothing to tell it


def _sniff_token(endpoint: Endpoint, headers: dict[str, str], raw: bytes) -> str | None:
    """The token a request presents, read leniently (to attribute it to a grant
    even when the request is malformed or a fault answers it)."""
    if endpoint == "copilot":
        auth = headers.get("authorization", "")
        return auth.split(" ", 1)[1] if " " in auth else None
    try:
        if _media_type(headers) == JSON:
            value = json.loads(raw).get("refresh_token")
        else:
            value = parse_qs(raw.decode("ascii", "replace")).get("refresh_token", [None])[0]
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


@pytest.fixture
def oauth_server() -> Iterator[FakeOAuthServer]:
    """A running :class:`FakeOAuthServer`, stopped after the test."""
    with FakeOAuthServer() as server:
        yield server
