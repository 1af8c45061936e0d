"""Credential methods: auth.inventory and keys.* (API keys in the OS keyring)."""

from __future__ import annotations

import sys
import time

import anyio
import structlog

from takod.protocol import RpcError, invalid
from takod.schema import (
    AuthParams,
    AuthRefreshParams,
    AuthRefreshResult,
    AuthResult,
    CredentialInfo,
    KeyClearParams,
    KeyClearResult,
    KeyGetParams,
    KeyGetResult,
    KeyInfoResult,
    KeyListParams,
    KeyListResult,
    KeyMigrateParams,
    KeyMigrateResult,
    KeyNameInfo,
    KeyNamesParams,
    KeyNamesResult,
    KeySetParams,
    KeyStoreInfo,
)

from .. import takobot_keys
from ..api import registry
from ..credentials import pi_auth
from ..credentials.files import FileProblem
from ..credentials.pi_lock import LockError
from ..credentials.settings import remove_api_keys
from ..key_names import CATALOGUE, UnknownKeyName, normalise_key_name
from ..keystore import KeyStore, KeyStoreError
from ..links import is_tako_workspace
from ..rpc import Call
from ..state import Workspace
from .core import require_trusted, workspace_of

log = structlog.get_logger("takod.keys")

PI_LOCK_TIMEOUT = 5.0


def store_info(keys: KeyStore) -> KeyStoreInfo | None:
    """The key store's state; None while it is still probing the keyring."""
    if not keys.is_open:
        return None
    st = keys.status
    return KeyStoreInfo(backend=st.keyring or st.backend if st.secure else "file", secure=st.secure, reason=st.reason, hint=st.hint)


@registry.method("auth.inventory", AuthParams)
async def inventory(call: Call, p: AuthParams) -> AuthResult:
    """Every credential takod can see, masked, and which one each provider uses."""
    state = call.daemon.state
    ws = await state.workspace(workspace_of(call, p.workspace))
    facts = state.facts(ws)
    now = time.time()
    found: list[CredentialInfo] = []
    for provider in ("pi", "codex", "claude", "gemini"):
        winner_seen = False
        for cred in facts.credentials.get(provider, []):
            wins = not winner_seen and not cred.needs_login(now)
            winner_seen = winner_seen or wins
            found.append(
                CredentialInfo(
                    provider=provider,
                    backend=cred.provider,
                    source=cred.source,
                    kind=cred.kind,
                    masked=cred.masked,
                    expires_at=cred.expires_at,
                    expired=cred.expired(now),
                    refreshable=cred.refreshable,
                    read_only=cred.read_only,
                    account=cred.account,
                    note=cred.note,
                    unverified=cred.unverified,
                    wins=wins,
                )
            )
    problems = [text for texts in facts.problems.values() for text in texts]
    if ws.settings_problem:
        problems.append(ws.settings_problem)
    broker = call.daemon.broker
    return AuthResult(
        workspace=str(ws.root),
        credentials=found,
        problems=sorted(set(problems)),
        key_store=store_info(call.daemon.keys),
        grants=[broker.info(g) for g in broker.grants.values()],
    )


# pi provider ids whose grants each takod provider name covers
_GRANTS_OF = {"pi": None, "codex": {"openai-codex"}, "claude": {"anthropic"}, "copilot": {"github-copilot"}}


@registry.method("auth.refresh", AuthRefreshParams, timeout=120)
async def refresh(call: Call, p: AuthRefreshParams) -> AuthRefreshResult:
    """Refresh now every grant (or those of ``provider``), concurrently; single flight per grant."""
    state, broker = call.daemon.state, call.daemon.broker
    await state.workspace(workspace_of(call, p.workspace))
    await broker.rescan()
    wanted = None if p.provider is None else _GRANTS_OF.get(p.provider, {p.provider})
    keys = [g.key for g in broker.grants.values() if wanted is None or g.provider in wanted]
    if p.provider is not None and not keys:
        raise RpcError("no_grant", f"no refreshable OAuth login found for {p.provider}; `takod auth` lists the logins "
                       "takod keeps fresh (by codex, claude, copilot or a pi provider id), `takod login PROVIDER` adds one")
    results: dict[str, object] = {}

    async def one(key: str) -> None:
        results[key] = await broker.refresh(key)

    async with anyio.create_task_group() as tg:
        for key in keys:
            tg.start_soon(one, key)
    return AuthRefreshResult(grants=[broker.info(g) for g in results.values() if g is not None])


def _key_error(exc: Exception) -> RpcError:
    if isinstance(exc, UnknownKeyName):
        return invalid("unknown_key_name", str(exc))
    if isinstance(exc, KeyStoreError):
        return RpcError(exc.code, str(exc))
    return invalid("invalid_value", str(exc))


async def _pi_entry(call: Call, ws: Workspace, name: str) -> tuple[str | None, str]:
    """Point ``ws``'s pi auth.json at the stored key ``name`` (Takobot's pi reads
    only that file or the settings' plaintext keys). Returns the file, or None,
    and what happened or why not."""
    if not is_tako_workspace(ws.root):
        return None, "not a Tako workspace"
    if name not in takobot_keys.BRIDGED:
        return None, takobot_keys.takobot_would_lose(name) or "not read by pi"
    state = call.daemon.state
    command = takobot_keys.key_command(name, python=sys.executable, env=state.env)
    target = ws.pi_auth_file
    try:
        outcome = await anyio.to_thread.run_sync(
            takobot_keys.bridge, target, name, command, pi_auth.home_auth_paths(state.env, state.home), PI_LOCK_TIMEOUT
        )
    except (FileProblem, LockError, OSError) as exc:
        log.warning("could not give the workspace pi the stored key", key=name, path=str(target), error=str(exc))
        return None, f"{target} could not be updated: {exc}"
    return str(target), outcome


@registry.method("keys.set", KeySetParams, secret_params=True)
async def key_set(call: Call, p: KeySetParams) -> KeyInfoResult:
    try:
        info = await call.daemon.keys.set(p.name, p.value)
    except (UnknownKeyName, KeyStoreError, ValueError) as exc:
        raise _key_error(exc) from None
    await call.daemon.state.keys_changed()
    ws = await call.daemon.state.workspace(workspace_of(call, p.workspace))
    path, outcome = await _pi_entry(call, ws, info.name)
    return KeyInfoResult(name=info.name, backend=info.backend, masked=info.masked, pi_entry=path,
                         pi_entry_outcome=outcome if path else None)


@registry.method("keys.get", KeyGetParams)
async def key_get(call: Call, p: KeyGetParams) -> KeyGetResult:
    """A stored key's value, for pi's ``!command`` entries (``takod key get``).
    Only the socket's owner can connect, as only they can read their keyring."""
    try:
        name = normalise_key_name(p.name)
        value = await call.daemon.keys.get(name)
    except (UnknownKeyName, KeyStoreError, ValueError) as exc:
        raise _key_error(exc) from None
    if not value:
        raise RpcError("no_key", f"no stored key {name}: `takod key set {name}` stores one")
    return KeyGetResult(name=name, value=value)


@registry.method("keys.clear", KeyClearParams)
async def key_clear(call: Call, p: KeyClearParams) -> KeyClearResult:
    try:
        removed = await call.daemon.keys.delete(p.name)
    except (UnknownKeyName, KeyStoreError, ValueError) as exc:
        raise _key_error(exc) from None
    name = normalise_key_name(p.name)
    state = call.daemon.state
    if removed and name in takobot_keys.BRIDGED:
        # Its workspace pi entries would now run a command that fails, yet count as a credential.
        for ws in list(state.workspaces.values()):
            try:
                await anyio.to_thread.run_sync(takobot_keys.unbridge, ws.pi_auth_file, name, PI_LOCK_TIMEOUT)
            except (FileProblem, LockError, OSError) as exc:
                log.warning("could not remove the workspace pi entry of a cleared key", key=name,
                            path=str(ws.pi_auth_file), error=str(exc))
    await state.keys_changed()
    return KeyClearResult(name=name, removed=removed)


@registry.method("keys.list", KeyListParams)
async def key_list(call: Call, p: KeyListParams) -> KeyListResult:
    infos = await call.daemon.keys.list()
    return KeyListResult(
        keys=[KeyInfoResult(name=i.name, backend=i.backend, masked=i.masked) for i in infos],
        store=store_info(call.daemon.keys),
    )


@registry.method("keys.names", KeyNamesParams)
async def key_names(call: Call, p: KeyNamesParams) -> KeyNamesResult:
    """Every key name ``keys.set`` accepts, sorted, with who reads it."""
    return KeyNamesResult(names=[
        KeyNameInfo(name=e.name, providers=list(e.providers), description=e.description)
        for e in sorted(CATALOGUE, key=lambda e: e.name)
    ])


@registry.method("keys.migrate", KeyMigrateParams, secret_params=True)
async def key_migrate(call: Call, p: KeyMigrateParams) -> KeyMigrateResult:
    """Move plaintext ``api_keys`` from the workspace settings file into the key store,
    then remove exactly the ones stored from the file."""
    state = call.daemon.state
    keys = call.daemon.keys
    ws = await state.workspace(workspace_of(call, p.workspace))
    # Keys from someone else's settings file must not become the user's own.
    await require_trusted(call, ws, "copy keys out of the settings")
    if ws.settings_problem:
        raise RpcError("settings_unreadable", f"not touching an unreadable settings file: {ws.settings_problem}")
    if ws.settings.api_keys and keys.is_open and not keys.status.secure and not p.to_file:
        st = keys.status
        raise RpcError(
            "no_secure_store",
            f"no OS keyring is usable here ({st.reason}): migrating would only move "
            f"{', '.join(sorted(ws.settings.api_keys))} from one plaintext file ({ws.settings_file}) to another "
            f"({st.path}, mode 0600). Set up or unlock a keyring ({st.hint or '`takod doctor`'}), "
            "or run `takod key migrate --to-file` to move them there anyway",
        )
    # Takobot's pi can read a moved key only through an entry in the workspace pi
    # auth.json; a key no such entry can stand for stays where Takobot reads it.
    tako = is_tako_workspace(ws.root)
    kept = {} if not tako else {
        name: f"kept for Takobot: {why}; moved, it would be lost to Takobot, which reads it only from this file"
        for name in ws.settings.api_keys if (why := takobot_keys.takobot_would_lose(name.upper()))
    }
    result = await keys.migrate({k: v for k, v in ws.settings.api_keys.items() if k not in kept})
    movable: list[str] = []
    pi_entries: list[str] = []
    for given in result.stored:
        name = normalise_key_name(given)
        if tako:
            path, outcome = await _pi_entry(call, ws, name)
            if path is None:
                kept[given] = f"kept for Takobot: stored in takod, but {outcome}"
                continue
            pi_entries.append(name)
        movable.append(given)
    removed: list[str] = []
    if movable:
        removed = await anyio.to_thread.run_sync(remove_api_keys, ws.settings_file, movable)
        await state.settings_changed(ws)
    await state.keys_changed()
    return KeyMigrateResult(
        migrated=sorted(result.stored),
        failed=sorted(result.failed),
        removed_from_settings=sorted(removed),
        store=store_info(keys),
        kept=dict(sorted(kept.items())),
        pi_entries=sorted(pi_entries),
    )
