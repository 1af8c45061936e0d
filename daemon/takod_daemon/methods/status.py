"""Readiness methods: status, providers.probe."""

from __future__ import annotations

import time

import msgspec

from takod.schema import DaemonInfo, KeyStoreInfo, ProbeParams, StatusParams, StatusResult

from ..api import registry
from ..readiness import evaluate
from ..rpc import SLOW, Call, Slow
from ..state import Workspace
from .auth import store_info
from .core import workspace_of


def _daemon_info(call: Call) -> DaemonInfo:
    d = call.daemon
    return DaemonInfo(
        pid=d.pid,
        version=d.version,
        protocol=d.protocol,
        started_at=d.started_at,
        uptime_s=round(time.time() - d.started_at, 3),
        socket=str(d.socket_path),
        state_dir=str(d.state_dir),
        activated=d.activated,
        connections=len(d.connections),
    )


def _status(call: Call, ws: Workspace, env: dict[str, str]) -> StatusResult:
    """``status`` with the client's own keys: evaluated for this answer only, never cached."""
    providers, selected = evaluate(call.daemon.state.facts(ws, env))
    return StatusResult(
        daemon=_daemon_info(call),
        workspace=str(ws.root),
        selected=selected,
        providers=providers,
        seq=ws.seq,
        updated_at=ws.updated_at,
        key_store=store_info(call.daemon.keys),
    )


# Every field of StatusResult but `daemon` (uptime, connections) changes only when
# the workspace is re-evaluated (seq) or the key store changes state, so those are
# encoded once per change and the answer is spliced: map header, "daemon" and its
# value, then the cached fields. Building and encoding the whole Struct per call cost
# ~5 µs of the daemon's ~21 µs per `status` round trip (bench/rpc.py).
_FIELDS = StatusResult.__struct_fields__
assert _FIELDS[0] == "daemon" and len(_FIELDS) <= 15  # a fixmap header: one byte
_HEAD = bytes([0x80 | len(_FIELDS)]) + msgspec.msgpack.encode(_FIELDS[0])
_encode = msgspec.msgpack.Encoder().encode


def encode_fields(ws: Workspace, key_store: KeyStoreInfo | None) -> bytes:
    """The map entries of every StatusResult field after ``daemon``, encoded."""
    values = (str(ws.root), ws.selected, ws.providers, ws.seq, ws.updated_at, key_store)
    return _encode(dict(zip(_FIELDS[1:], values, strict=True)))[1:]  # minus the fixmap header


def encode_status(daemon: DaemonInfo, fields: bytes) -> msgspec.Raw:
    """A whole StatusResult, byte for byte as msgspec encodes the Struct, from ``fields``
    (:func:`encode_fields`)."""
    return msgspec.Raw(_HEAD + _encode(daemon) + fields)


def _warm(call: Call, ws: Workspace) -> msgspec.Raw:
    """The loaded workspace's ``status``; its fields encoded again only after ``ws.seq``
    or the key store's state changed."""
    keys = call.daemon.keys
    key_state = keys.status if keys.is_open else None
    cached = ws.status_wire
    if cached is None or cached[0] != ws.seq or cached[1] is not key_state:
        cached = ws.status_wire = (ws.seq, key_state, encode_fields(ws, store_info(keys)))
    return encode_status(_daemon_info(call), cached[2])


async def status_of(call: Call, workspace: str | None, env: dict[str, str] | None = None) -> StatusResult | msgspec.Raw:
    ws = await call.daemon.state.workspace(workspace_of(call, workspace))
    return _status(call, ws, env) if env else _warm(call, ws)


def warm_status(call: Call, p: StatusParams) -> msgspec.Raw | Slow:
    """``status`` inline when it is pure memory: the workspace is loaded and the
    client sent no keys of its own (those are evaluated per request)."""
    if p.env:
        return SLOW
    ws = call.daemon.state.loaded(workspace_of(call, p.workspace))
    return SLOW if ws is None else _warm(call, ws)


@registry.method("status", StatusParams, inline=warm_status)
async def status(call: Call, p: StatusParams) -> StatusResult | msgspec.Raw:
    """Warm state only: never spawns a provider or touches the network."""
    return await status_of(call, p.workspace, p.env)


@registry.method("providers.probe", ProbeParams, timeout=60)
async def probe(call: Call, p: ProbeParams) -> StatusResult | msgspec.Raw:
    """Re-detect the CLIs, re-read every credential and re-probe Ollama now."""
    await call.daemon.state.workspace(workspace_of(call, p.workspace))
    await call.daemon.state.reload()
    return await status_of(call, p.workspace)
