"""Readiness methods: status, providers.probe."""

from __future__ import annotations

import os
import time

from takod.schema import DaemonInfo, ProbeParams, StatusParams, StatusResult

from ..api import registry
from ..rpc import Call
from .core import workspace_of


async def status_of(call: Call, workspace: str | None) -> StatusResult:
    d = call.daemon
    ws = await d.state.workspace(workspace_of(call, workspace))
    now = time.time()
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
        selected=ws.selected,
        providers=ws.providers,
        seq=ws.seq,
        updated_at=ws.updated_at,
    )


@registry.method("status", StatusParams)
async def status(call: Call, p: StatusParams) -> StatusResult:
    """Warm state only: never spawns a provider or touches the network."""
    return await status_of(call, p.workspace)


@registry.method("providers.probe", ProbeParams, timeout=60)
async def probe(call: Call, p: ProbeParams) -> StatusResult:
    """Re-detect the CLIs, re-read every credential and re-probe Ollama now."""
    await call.daemon.state.workspace(workspace_of(call, p.workspace))
    await call.daemon.state.reload()
    return await status_of(call, p.workspace)
