"""Assisted login: pi's own OAuth flows (Codex PKCE, Anthropic PKCE), run natively,
and API-key prompts, each as a cancellable task in the daemon's task group.

``login.start`` answers at once with a login id; every prompt the flow needs is
published on the ``login`` topic and fed by ``login.answer``. Tokens go to the
workspace pi ``auth.json`` under pi's lock (:func:`pi_auth.replace_entry`),
API keys to the key store. Answers and tokens are never logged or published.

Flows follow pi 0.58.3 (pi-auth.md §2, pi-ai ``utils/oauth``): the same client ids,
scopes, authorize parameters, redirect URIs and token exchange bodies, so that
the credential pi later refreshes is indistinguishable from one pi obtained.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs, urlencode, urlsplit

import anyio
import anyio.abc
import httpx
import msgspec
import structlog

from .credentials import pi_auth
from .credentials.files import FileProblem
from .credentials.pi_auth import OAuthEntry
from .credentials.pi_lock import LockError
from .key_names import UnknownKeyName, normalise_key_name
from .keystore import KeyStoreError
from .peer_input import TooLarge, decode_json, fetch
from .refresh import endpoints
from .refresh.endpoints import Endpoint
from .refresh.grants import RefreshError, error_code, lifetime_ok, openai_account_id, parse_pi_response

if TYPE_CHECKING:
    from .daemon import Daemon

log = structlog.get_logger("takod.login")
LOGIN_LOCK_TIMEOUT_S = 40.0  # beyond a refresh holding the lock (docs/refresh.md)

Kind = Literal["open_url", "device_code", "paste", "secret", "done", "failed"]
DEFAULT_TIMEOUT_S = 900.0  # Takobot's pi login timeout
FINISHED_KEPT = 32  # finished logins kept for login.status

OPENAI_AUTH = Endpoint("TAKOD_OPENAI_AUTH_URL", "https://auth.openai.com/oauth/authorize")
ANTHROPIC_AUTH = Endpoint("TAKOD_ANTHROPIC_AUTH_URL", "https://claude.ai/oauth/authorize")
CODEX_CALLBACK_PORT = 1455
CODEX_REDIRECT = "http://localhost:1455/auth/callback"
CODEX_SCOPE = "openid profile email offline_access"
ANTHROPIC_REDIRECT = "http://localhost:53692/callback"
ANTHROPIC_SCOPES = "org:create_api_key user:profile user:inference user:sessions:claude_code user:mcp_servers user:file_upload"
ANTHROPIC_MARGIN_MS = 300_000
# GitHub's device flow on github.com (pi asks for a GHE domain; takod does github.com only).
COPILOT_DEVICE = Endpoint("TAKOD_COPILOT_DEVICE_URL", "https://github.com/login/device/code")
COPILOT_AUTH = Endpoint("TAKOD_COPILOT_AUTH_URL", "https://github.com/login/oauth/access_token")
COPILOT_CLIENT_ID = "Iv1.b507a08c87ecfe98"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
# pi waits interval*1.2 between polls, *1.4 after a slow_down (pi-auth.md §2.1).
POLL_FACTOR, SLOW_POLL_FACTOR = 1.2, 1.4

# Login provider names (and aliases) -> pi provider id of an OAuth flow.
OAUTH_PROVIDERS = {
    "openai-codex": "openai-codex", "codex": "openai-codex", "anthropic": "anthropic", "claude": "anthropic",
    "github-copilot": "github-copilot", "copilot": "github-copilot",
}
# API-key provider names -> the key store name the key goes under.
KEY_PROVIDERS = {
    "openai": "OPENAI_API_KEY",
    "anthropic-key": "ANTHROPIC_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "google": "GEMINI_API_KEY",
    "openrouter": "OPENROUTER_API_KEY",
    "groq": "GROQ_API_KEY",
    "mistral": "MISTRAL_API_KEY",
    "xai": "XAI_API_KEY",
}


class LoginFailed(Exception):
    """A flow ended without a credential. ``code`` is snake_case; ``hint`` says what to do."""

    def __init__(self, code: str, hint: str):
        super().__init__(f"{code}: {hint}")
        self.code = code
        self.hint = hint


class LoginInfo(msgspec.Struct, frozen=True):
    """What ``login.status`` shows of one login (never a secret); every key always present."""

    login_id: str
    provider: str
    state: Literal["running", "done", "failed", "cancelled"]
    step: int
    kind: str | None = None  # the last prompt's kind
    message: str | None = None
    url: str | None = None
    code: str | None = None
    waiting: bool = False  # a prompt waits for login.answer
    stored: str | None = None
    error: str | None = None
    hint: str | None = None


def resolve_provider(name: str) -> tuple[str, str]:
    """``(flow, target)``: ("oauth", pi provider id) or ("key", key store name).
    Raises ValueError naming the accepted providers."""
    lowered = name.strip().lower()
    if lowered in OAUTH_PROVIDERS:
        return "oauth", OAUTH_PROVIDERS[lowered]
    if lowered in KEY_PROVIDERS:
        return "key", KEY_PROVIDERS[lowered]
    try:  # an env var name from the key catalogue, e.g. DEEPSEEK_API_KEY
        return "key", normalise_key_name(name)
    except UnknownKeyName:
        pass
    known = ", ".join([*OAUTH_PROVIDERS, *KEY_PROVIDERS])
    raise ValueError(f"unknown login provider; use one of {known}, or an API key name such as OPENAI_API_KEY")


# --- pure helpers ------------------------------------------------------------------------


def pkce_pair() -> tuple[str, str]:
    """pi's PKCE: 32 random bytes base64url as verifier, S256 challenge."""
    verifier = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def codex_authorize_url(challenge: str, state: str, env: Mapping[str, str]) -> str:
    """pi's openai-codex authorize URL, parameters in pi's order."""
    params = [
        ("response_type", "code"),
        ("client_id", endpoints.OPENAI_CLIENT_ID),
        ("redirect_uri", CODEX_REDIRECT),
        ("scope", CODEX_SCOPE),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
        ("state", state),
        ("id_token_add_organizations", "true"),
        ("codex_cli_simplified_flow", "true"),
        ("originator", "pi"),
    ]
    return f"{OPENAI_AUTH.url(env)}?{urlencode(params)}"


def anthropic_authorize_url(challenge: str, verifier: str, env: Mapping[str, str]) -> str:
    """pi's anthropic authorize URL; the verifier doubles as ``state``, as in pi."""
    params = [
        ("code", "true"),
        ("client_id", endpoints.ANTHROPIC_CLIENT_ID),
        ("response_type", "code"),
        ("redirect_uri", ANTHROPIC_REDIRECT),
        ("scope", ANTHROPIC_SCOPES),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
        ("state", verifier),
    ]
    return f"{ANTHROPIC_AUTH.url(env)}?{urlencode(params)}"


def parse_authorization_input(text: str) -> tuple[str | None, str | None]:
    """``(code, state)`` from what the operator pasted, as pi's
    ``parseAuthorizationInput``: a redirect URL, ``code#state``, a query string, or a bare code."""
    value = text.strip()
    if not value:
        return None, None
    parts = urlsplit(value)
    if parts.scheme and parts.netloc:
        query = parse_qs(parts.query)
        return (query.get("code") or [None])[0], (query.get("state") or [None])[0]
    if "#" in value:
        code, state = value.split("#", 1)
        return code or None, state or None
    if "code=" in value:
        query = parse_qs(value.lstrip("?"))
        return (query.get("code") or [None])[0], (query.get("state") or [None])[0]
    return value, None


class _DeviceCode(msgspec.Struct, frozen=True):
    device_code: str
    user_code: str
    verification_uri: str
    interval: float = 5.0
    expires_in: float = 900.0


class _DevicePoll(msgspec.Struct, frozen=True):
    access_token: str | None = None
    error: str | None = None
    interval: float | None = None


class _Tokens(msgspec.Struct, frozen=True):
    access_token: str
    refresh_token: str
    expires_in: float


def parse_tokens(body: bytes, what: str) -> _Tokens:
    """The token endpoint's answer; LoginFailed when a field pi needs is missing."""
    try:
        tokens = decode_json(body, _Tokens)
    except msgspec.DecodeError:
        tokens = None
    # An expires_in of 1e308 would overflow the stored expiry: no usable answer either.
    if tokens is None or not lifetime_ok(tokens.expires_in):
        raise LoginFailed("bad_token_response", f"{what} answered without access_token, refresh_token and expires_in")
    return tokens


# --- sessions ---------------------------------------------------------------------------


@dataclass(eq=False)
class Session:
    """One login in flight (or finished, kept briefly for ``login.status``)."""

    login_id: str
    provider: str
    workspace: Path
    env: Mapping[str, str]
    step: int = 0
    state: Literal["running", "done", "failed", "cancelled"] = "running"
    last: dict[str, Any] = field(default_factory=dict)
    waiting: bool = False
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    answers: tuple[Any, Any] = field(default_factory=lambda: anyio.create_memory_object_stream[str](1))

    def info(self) -> LoginInfo:
        last = self.last
        return LoginInfo(
            login_id=self.login_id,
            provider=self.provider,
            state=self.state,
            step=self.step,
            kind=last.get("kind"),
            message=last.get("message"),
            url=last.get("url"),
            code=last.get("code"),
            waiting=self.waiting,
            stored=last.get("stored"),
            error=last.get("error"),
            hint=last.get("hint"),
        )


class LoginManager:
    """Owns the login sessions: one task each in the manager's task group."""

    def __init__(self, daemon: "Daemon"):
        self.daemon = daemon
        self.sessions: dict[str, Session] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self.http: httpx.AsyncClient | None = None

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Hold the task group and HTTP client logins run in, for the daemon's lifetime."""
        async with httpx.AsyncClient(timeout=30.0, trust_env=False) as http, anyio.create_task_group() as tg:
            self.http, self._tg = http, tg
            task_status.started()
            try:
                await anyio.sleep_forever()
            finally:
                self._tg = None

    def running(self) -> list[Session]:
        return [s for s in self.sessions.values() if s.state == "running"]

    def start(self, provider: str, workspace: Path, env: Mapping[str, str], timeout: float) -> Session:
        """Start a login; returns at once. Raises ValueError for an unknown provider
        and RuntimeError when the daemon is stopping."""
        flow, target = resolve_provider(provider)
        if self._tg is None:
            raise RuntimeError("takod is stopping")
        session = Session(secrets.token_hex(6), target, workspace, env)
        self.sessions[session.login_id] = session
        self._forget_old()
        self._tg.start_soon(self._run, session, flow, target, timeout)
        return session

    def find(self, login_id: str | None) -> Session | None:
        """The named login, or the only running one when no id is given."""
        if login_id is not None:
            return self.sessions.get(login_id)
        running = self.running()
        return running[0] if len(running) == 1 else None

    def answer(self, session: Session, text: str) -> bool:
        """Feed the pending prompt; False when none is pending."""
        if session.state != "running" or not session.waiting:
            return False
        try:
            session.answers[0].send_nowait(text)
        except anyio.WouldBlock:
            return False
        session.waiting = False
        return True

    def cancel(self, session: Session) -> bool:
        if session.state != "running":
            return False
        session.state = "cancelled"
        session.scope.cancel()
        return True

    def _forget_old(self) -> None:
        finished = [s for s in self.sessions.values() if s.state != "running"]
        for old in finished[: max(0, len(finished) - FINISHED_KEPT)]:
            del self.sessions[old.login_id]

    def publish(self, session: Session, kind: Kind, message: str, **extra: Any) -> None:
        session.step += 1
        payload = {"login_id": session.login_id, "provider": session.provider, "step": session.step,
                   "kind": kind, "message": message, **{k: v for k, v in extra.items() if v is not None}}
        session.last = payload
        session.waiting = kind in ("open_url", "paste", "secret")
        self.daemon.bus.publish("login", payload)

    async def ask(self, session: Session, kind: Kind, message: str, **extra: Any) -> str:
        """Publish a prompt and wait for its answer."""
        self.publish(session, kind, message, **extra)
        return await session.answers[1].receive()

    async def _run(self, session: Session, flow: str, target: str, timeout: float) -> None:
        log.info("login started", login_id=session.login_id, provider=target)
        try:
            with session.scope:
                with anyio.fail_after(timeout):
                    if flow == "key":
                        stored = await self._api_key(session, target)
                    elif target == "openai-codex":
                        stored = await self._codex(session)
                    elif target == "github-copilot":
                        stored = await self._copilot(session)
                    else:
                        stored = await self._anthropic(session)
                session.state = "done"
                self.publish(session, "done", f"logged in to {target}; stored in {stored}", stored=stored)
                log.info("login done", login_id=session.login_id, provider=target, stored=stored)
        except TimeoutError:
            self._fail(session, "timeout", f"no answer within {int(timeout)} s; run `takod login {target}` again")
        except LoginFailed as exc:
            self._fail(session, exc.code, exc.hint)
        except (msgspec.DecodeError, TooLarge):  # decode_json: bad UTF-8 and deep nesting are DecodeErrors too
            self._fail(session, "bad_response", "the login server answered something unexpected; retry later")
        except httpx.HTTPError as exc:
            self._fail(session, "unreachable", f"token endpoint unreachable ({type(exc).__name__}); check the network and retry")
        except Exception:  # a bug (or an answer nobody foresaw) ends this login, never the daemon
            log.exception("login failed unexpectedly", login_id=session.login_id, provider=target)
            self._fail(session, "internal", "the login failed unexpectedly; see the daemon log")
        finally:
            session.waiting = False
            for end in session.answers:
                end.close()
            if session.state == "cancelled":
                self.publish(session, "failed", "login cancelled", error="cancelled", hint="run it again when ready")
                log.info("login cancelled", login_id=session.login_id, provider=target)
            elif session.state == "running":  # the daemon is stopping
                session.state = "cancelled"

    def _fail(self, session: Session, code: str, hint: str) -> None:
        session.state = "failed"
        self.publish(session, "failed", f"login to {session.provider} failed: {code}", error=code, hint=hint)
        log.warning("login failed", login_id=session.login_id, provider=session.provider, error=code)

    # --- flows ----------------------------------------------------------------------

    async def _api_key(self, session: Session, name: str) -> str:
        value = (await self.ask(session, "secret", f"type the {name} value")).strip()
        if not value:
            raise LoginFailed("empty_key", f"no value given; run `takod login` again or `takod key set {name}`")
        try:
            info = await self.daemon.keys.set(name, value)
        except (KeyStoreError, ValueError) as exc:
            code = exc.code if isinstance(exc, KeyStoreError) else "invalid_value"
            raise LoginFailed(code, str(exc)) from None
        await self.daemon.state.keys_changed()
        return f"{info.backend}:{info.name}"

    async def _codex(self, session: Session) -> str:
        verifier, challenge = pkce_pair()
        state = secrets.token_hex(16)
        url = codex_authorize_url(challenge, state, session.env)
        async with anyio.create_task_group() as tg:
            listening = await _listen_callback(tg, session, state)
            how = "then come back here and" if listening else "the callback port 1455 is busy, so"
            text = await self.ask(
                session, "open_url",
                f"open this URL in a browser and sign in; {how} paste the final redirect URL (or the code) with `takod login answer`",
                url=url,
            )
            tg.cancel_scope.cancel()  # the callback listener, whichever answered
        code, got_state = parse_authorization_input(text)
        if not code:
            raise LoginFailed("no_code", "the answer held no authorization code; paste the whole redirect URL")
        if got_state is not None and got_state != state:
            raise LoginFailed("state_mismatch", "that redirect belongs to another login attempt; start again")
        fields = [("grant_type", "authorization_code"), ("client_id", endpoints.OPENAI_CLIENT_ID),
                  ("code", code), ("code_verifier", verifier), ("redirect_uri", CODEX_REDIRECT)]
        body = await self._post(endpoints.OPENAI.url(session.env), urlencode(fields), endpoints.FORM, "OpenAI")
        tokens = parse_tokens(body, "OpenAI")
        account = openai_account_id(tokens.access_token)
        if account is None:  # pi: "Failed to extract accountId from token"
            raise LoginFailed("no_account_id", "the access token names no ChatGPT account; sign in with a ChatGPT account")
        entry = OAuthEntry(access=tokens.access_token, refresh=tokens.refresh_token,
                           expires=int(time.time() * 1000 + tokens.expires_in * 1000), extra={"accountId": account})
        return await self._store(session, "openai-codex", entry)

    async def _anthropic(self, session: Session) -> str:
        verifier, challenge = pkce_pair()
        url = anthropic_authorize_url(challenge, verifier, session.env)
        text = await self.ask(
            session, "open_url",
            "open this URL in a browser and sign in, then paste the code shown (code#state) or the redirect URL "
            "with `takod login answer`", url=url,
        )
        code, got_state = parse_authorization_input(text)
        if not code:
            raise LoginFailed("no_code", "the answer held no authorization code; paste code#state as shown")
        if got_state is not None and got_state != verifier:
            raise LoginFailed("state_mismatch", "that code belongs to another login attempt; start again")
        body_json = msgspec.json.encode({
            "grant_type": "authorization_code", "client_id": endpoints.ANTHROPIC_CLIENT_ID, "code": code,
            "state": got_state or verifier, "redirect_uri": ANTHROPIC_REDIRECT, "code_verifier": verifier,
        }).decode()
        body = await self._post(endpoints.ANTHROPIC.url(session.env), body_json, endpoints.JSON, "Anthropic")
        tokens = parse_tokens(body, "Anthropic")
        entry = OAuthEntry(access=tokens.access_token, refresh=tokens.refresh_token,
                           expires=int(time.time() * 1000 + tokens.expires_in * 1000 - ANTHROPIC_MARGIN_MS))
        return await self._store(session, "anthropic", entry)

    async def _copilot(self, session: Session) -> str:
        env = session.env
        ua = {"User-Agent": endpoints.COPILOT_HEADERS["User-Agent"]}
        device = decode_json(await self._post(
            COPILOT_DEVICE.url(env), urlencode([("client_id", COPILOT_CLIENT_ID), ("scope", "read:user")]),
            endpoints.FORM, "GitHub", ua), _DeviceCode)
        self.publish(session, "device_code", f"open {device.verification_uri} and enter the code {device.user_code}",
                     url=device.verification_uri, code=device.user_code)
        github_token = await self._poll_device(session, device, ua)
        request = endpoints.copilot_request(github_token, None, env)
        assert self.http is not None
        response = await fetch(self.http, "GET", request.url, headers=request.headers)
        if response.status_code != 200:
            raise LoginFailed("copilot_refused", f"GitHub gave no Copilot token (HTTP {response.status_code}); "
                              "check that this account has Copilot")
        try:
            entry = parse_pi_response("github-copilot", OAuthEntry(access="", refresh=github_token, expires=0),
                                      response.content, int(time.time() * 1000))
        except RefreshError:
            raise LoginFailed("bad_token_response", "GitHub's Copilot token answer lacked token or expires_at") from None
        return await self._store(session, "github-copilot", entry)

    async def _poll_device(self, session: Session, device: "_DeviceCode", headers: dict[str, str]) -> str:
        """Poll GitHub until the user entered the code, pacing as pi does."""
        fields = urlencode([("client_id", COPILOT_CLIENT_ID), ("device_code", device.device_code), ("grant_type", DEVICE_GRANT)])
        interval, factor = max(1.0, device.interval), POLL_FACTOR
        with anyio.move_on_after(device.expires_in):
            while True:
                await anyio.sleep(interval * factor)
                raw = await self._post(COPILOT_AUTH.url(session.env), fields, endpoints.FORM, "GitHub", headers)
                answer = decode_json(raw, _DevicePoll)
                if answer.access_token:
                    return answer.access_token
                if answer.error == "slow_down":
                    interval = answer.interval if answer.interval and answer.interval > 0 else interval + 5
                    factor = SLOW_POLL_FACTOR
                elif answer.error != "authorization_pending":
                    # The error goes out as a code only if it looks like one (not free text, not megabytes).
                    raise LoginFailed(error_code(raw) or "device_flow_failed", "GitHub ended the device login; start it again")
        raise LoginFailed("device_code_expired", "the code expired before it was entered; start the login again")

    async def _post(self, url: str, content: str, content_type: str, who: str, extra: Mapping[str, str] | None = None) -> bytes:
        assert self.http is not None
        headers = {"Content-Type": content_type, "Accept": "application/json", **(extra or {})}
        response = await fetch(self.http, "POST", url, content=content, headers=headers)
        if response.status_code != 200:
            # The body may quote the code: only the status goes out.
            raise LoginFailed("token_exchange_failed", f"{who} refused the code (HTTP {response.status_code}); start the login again")
        return response.content

    async def _store(self, session: Session, provider: str, entry: OAuthEntry) -> str:
        path = pi_auth.workspace_auth_path(session.workspace)
        try:
            # A refresh may hold pi's lock across its token request (up to ~15 s): wait it out,
            # the new login's tokens are not to be dropped for a busy lock.
            await anyio.to_thread.run_sync(
                lambda: pi_auth.replace_entry(path, provider, lambda _current: entry, lock_timeout=LOGIN_LOCK_TIMEOUT_S)
            )
        except FileProblem as exc:
            raise LoginFailed("auth_file_unreadable", f"not overwriting {path}: {exc}; fix or move it, then log in again") from None
        except LockError as exc:
            raise LoginFailed(exc.reason, f"pi's lock on {path} could not be taken: {exc.detail}") from None
        await self.daemon.broker.rescan()
        return str(path)


async def _listen_callback(tg: anyio.abc.TaskGroup, session: Session, state: str) -> bool:
    """Serve pi's Codex callback on 127.0.0.1:1455 in ``tg``; a valid callback feeds
    the session's answer. False when the port is busy (paste only)."""
    try:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=CODEX_CALLBACK_PORT, reuse_port=False)
    except OSError:
        return False

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            with anyio.move_on_after(10), contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                data = b""
                while b"\r\n\r\n" not in data and len(data) < 16384:
                    chunk = await stream.receive(4096)
                    data += chunk
                line = data.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
                target = urlsplit(line[1] if len(line) > 1 else "/")
                query = parse_qs(target.query)
                ok = target.path == "/auth/callback" and query.get("state") == [state] and bool(query.get("code"))
                text = "Login complete: you can close this tab." if ok else "Login failed: state mismatch or missing code."
                status = "200 OK" if ok else "400 Bad Request"
                await stream.send(f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                                  f"Content-Length: {len(text)}\r\nConnection: close\r\n\r\n{text}".encode())
                if ok and session.waiting:
                    with contextlib.suppress(anyio.WouldBlock):
                        session.answers[0].send_nowait(f"{CODEX_REDIRECT}?{target.query}")
                        session.waiting = False

    async def serve() -> None:
        async with listener:
            await listener.serve(handle)

    tg.start_soon(serve)
    return True
