"""Readiness methods: status, providers.probe."""

from __future__ import annotations

import os
import time

from takod.schema import DaemonInfo, ProbeParams, StatusParams, StatusResult

from ..api import registry
from ..readiness import evaluate
from ..rpc import Call
from .auth import store_info
from .core import workspace_of


async def status_of(call: Call, workspace: str | None, env: dict[str, str] | None = None) -> StatusResult:
    d = call.daemon
    ws = await d.state.workspace(workspace_of(call, workspace))
    now = time.time()
    providers, selected, seq = ws.providers, ws.selected, ws.seq
    if env:
        # The client's own keys: evaluated for this answer only, never cached.
        providers, selected = evaluate(d.state.facts(ws, env))
    return StatusResult(
        daemon=DaemonInfo(
            pid=os.getpid(),
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


@registry.method("status", StatusParams)
async def status(call: Call, p: StatusParams) -> StatusResult:
    """Warm state only: never spawns a provider or touches the network."""
    return await status_of(call, p.workspace, p.env)


@registry.method("providers.probe", ProbeParams, timeout=60)
async def probe(call: Call, p: ProbeParams) -> StatusResult:
    """Re-detect the CLIs, re-read every credential and re-probe Ollama now."""
    await call.daemon.state.workspace(workspace_of(call, p.workspace))
    await call.daemon.state.reload()
    return await status_of(call, p.workspace)
