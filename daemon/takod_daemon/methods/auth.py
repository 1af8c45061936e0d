"""Credential methods: auth.inventory and keys.* (API keys in the OS keyring)."""

from __future__ import annotations

import time

import anyio

from takod.protocol import RpcError, invalid
from takod.schema import (
    AuthParams,
    AuthRefreshParams,
    AuthRefreshResult,
    AuthResult,
    CredentialInfo,
    KeyClearParams,
    KeyClearResult,
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

from ..api import registry
from ..credentials.settings import remove_api_keys
from ..key_names import CATALOGUE, UnknownKeyName, normalise_key_name
from ..keystore import KeyStore, KeyStoreError
from ..rpc import Call
from .core import require_trusted, workspace_of


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


@registry.method("keys.set", KeySetParams, secret_params=True)
async def key_set(call: Call, p: KeySetParams) -> KeyInfoResult:
    try:
        info = await call.daemon.keys.set(p.name, p.value)
    except (UnknownKeyName, KeyStoreError, ValueError) as exc:
        raise _key_error(exc) from None
    await call.daemon.state.keys_changed()
    return KeyInfoResult(name=info.name, backend=info.backend, masked=info.masked)


@registry.method("keys.clear", KeyClearParams)
async def key_clear(call: Call, p: KeyClearParams) -> KeyClearResult:
    try:
        removed = await call.daemon.keys.delete(p.name)
    except (UnknownKeyName, KeyStoreError, ValueError) as exc:
        raise _key_error(exc) from None
    await call.daemon.state.keys_changed()
    return KeyClearResult(name=normalise_key_name(p.name), removed=removed)


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
    ws = await state.workspace(workspace_of(call, p.workspace))
    # Keys from someone else's settings file must not become the user's own.
    await require_trusted(call, ws, "copy keys out of the settings")
    if ws.settings_problem:
        raise RpcError("settings_unreadable", f"not touching an unreadable settings file: {ws.settings_problem}")
    result = await call.daemon.keys.migrate(ws.settings.api_keys)
    removed: list[str] = []
    if result.stored:
        removed = await anyio.to_thread.run_sync(remove_api_keys, ws.settings_file, result.stored)
        await state.settings_changed(ws)
    await state.keys_changed()
    return KeyMigrateResult(
        migrated=sorted(result.stored),
        failed=sorted(result.failed),
        removed_from_settings=sorted(removed),
        store=store_info(call.daemon.keys),
    )
