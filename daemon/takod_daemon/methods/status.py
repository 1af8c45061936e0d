"""Readiness methods: status, providers.probe."""

from __future__ import annotations

import time
from typing import Any

from takod.schema import DaemonInfo, ProbeParams, StatusParams, StatusResult

from ..api import registry
from ..readiness import evaluate
from ..rpc import SLOW, Call, Slow
from ..state import Workspace
from .auth import store_info
from .core import workspace_of


def _status(call: Call, ws: Workspace, env: dict[str, str] | None) -> StatusResult:
    d = call.daemon
    now = time.time()
    # Encoded once per change (msgspec writes a Raw as it is); a Raw in a typed field
    # is fine here because this result is only ever encoded, never read back.
    providers: Any = ws.providers_wire
    selected, seq = ws.selected, ws.seq
    if env:
        # The client's own keys: evaluated for this answer only, never cached.
        providers, selected = evaluate(d.state.facts(ws, env))
    return StatusResult(
        daemon=DaemonInfo(
            pid=d.pid,
            version=d.version,
            protocol=d.protocol,
            started_at=d.started_at,
            uptime_s=round(now - d.started_at, 3),
            socket=str(d.socket_path),
            state_dir=str(d.state_dir),
            activated=d.activated,
            connections=len(d.connections),
        ),
        workspace=str(ws.root),
        selected=selected,
        providers=providers,
        seq=seq,
        updated_at=ws.updated_at,
        key_store=store_info(d.keys),
    )


async def status_of(call: Call, workspace: str | None, env: dict[str, str] | None = None) -> StatusResult:
    ws = await call.daemon.state.workspace(workspace_of(call, workspace))
    return _status(call, ws, env)


def warm_status(call: Call, p: StatusParams) -> StatusResult | Slow:
    """``status`` inline when it is pure memory: the workspace is loaded and the
    client sent no keys of its own (those are evaluated per request)."""
    if p.env:
        return SLOW
    ws = call.daemon.state.loaded(workspace_of(call, p.workspace))
    return SLOW if ws is None else _status(call, ws, None)


@registry.method("status", StatusParams, inline=warm_status)
async def status(call: Call, p: StatusParams) -> StatusResult:
    """Warm state only: never spawns a provider or touches the network."""
    return await status_of(call, p.workspace, p.env)


@registry.method("providers.probe", ProbeParams, timeout=60)
async def probe(call: Call, p: ProbeParams) -> StatusResult:
    """Re-detect the CLIs, re-read every credential and re-probe Ollama now."""
    await call.daemon.state.workspace(workspace_of(call, p.workspace))
    await call.daemon.state.reload()
    return await status_of(call, p.workspace)
