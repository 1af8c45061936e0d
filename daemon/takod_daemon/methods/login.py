"""Assisted login methods: login.start, login.answer, login.cancel, login.status."""

from __future__ import annotations

from pathlib import Path

import anyio

from takod.protocol import RpcError, invalid
from takod.schema import (
    LoginAnswerParams,
    LoginAnswerResult,
    LoginCancelParams,
    LoginCancelResult,
    LoginStartParams,
    LoginStartResult,
    LoginStatusParams,
)

from ..api import registry
from ..credentials import pi_auth
from ..credentials.files import FileProblem, check_dirs, write_target
from ..login import DEFAULT_TIMEOUT_S, LoginInfo, Session, resolve_provider
from ..rpc import Call
from .core import require_trusted, workspace_of


@registry.method("login.start", LoginStartParams)
async def start(call: Call, p: LoginStartParams) -> LoginStartResult:
    """Start a login and answer at once; its prompts arrive on the ``login`` topic."""
    if p.timeout is not None and not 0 < p.timeout <= 3600:
        raise invalid("invalid_params", "timeout must be in (0, 3600] seconds")
    ws = await call.daemon.state.workspace(workspace_of(call, p.workspace))
    await require_trusted(call, ws, "log in")
    await _check_auth_file(p.provider, Path(ws.root))
    try:
        session = call.daemon.logins.start(p.provider, Path(ws.root), call.daemon.state.env, p.timeout or DEFAULT_TIMEOUT_S)
    except ValueError as exc:
        raise invalid("unknown_provider", str(exc)) from None
    except RuntimeError as exc:
        raise RpcError("shutting_down", str(exc)) from None
    return LoginStartResult(login_id=session.login_id, provider=session.provider)


async def _check_auth_file(provider: str, workspace: Path) -> None:
    """An OAuth login ends by writing the workspace pi ``auth.json``: refuse at
    once, before the user goes through the browser, when a planted link there
    could never be written (docs/security.md, "Writes")."""
    try:
        flow, _ = resolve_provider(provider)
    except ValueError:
        return  # answered as unknown_provider by Logins.start
    if flow != "oauth":
        return
    path = pi_auth.workspace_auth_path(workspace)

    def check() -> None:
        check_dirs(workspace, path)
        write_target(path, pi_auth.PI_AUTH_KIND)

    try:
        await anyio.to_thread.run_sync(check)
    except FileProblem as exc:
        raise RpcError("unsafe_link", f"{exc}; nothing was started") from None


def _no_login(call: Call, login_id: str | None) -> str:
    """Why no login matches, and what to do instead."""
    running = call.daemon.logins.running()
    if login_id is not None:
        what = f"no login {login_id}"
    elif not running:
        return "no login is running; start one with `takod login PROVIDER`"
    else:
        what = f"{len(running)} logins are running"
    if not running:
        return f"{what}; start one with `takod login PROVIDER`"
    return f"{what}; pass one with --id: " + ", ".join(f"{s.login_id} ({s.provider})" for s in running)


def _session(call: Call, login_id: str | None) -> Session:
    session = call.daemon.logins.find(login_id)
    if session is None:
        raise invalid("no_login", _no_login(call, login_id))
    return session


@registry.method("login.answer", LoginAnswerParams, secret_params=True)
async def answer(call: Call, p: LoginAnswerParams) -> LoginAnswerResult:
    """Feed the login's pending prompt (a pasted code or URL, a key)."""
    session = _session(call, p.login_id)
    return LoginAnswerResult(login_id=session.login_id, accepted=call.daemon.logins.answer(session, p.text))


@registry.method("login.cancel", LoginCancelParams)
async def cancel(call: Call, p: LoginCancelParams) -> LoginCancelResult:
    session = _session(call, p.login_id)
    return LoginCancelResult(login_id=session.login_id, cancelled=call.daemon.logins.cancel(session))


@registry.method("login.status", LoginStatusParams)
async def status(call: Call, p: LoginStatusParams) -> dict[str, list[LoginInfo]]:
    """The logins the daemon remembers (running and recently finished), newest last."""
    sessions = [_session(call, p.login_id)] if p.login_id else list(call.daemon.logins.sessions.values())
    return {"logins": [s.info() for s in sessions]}
