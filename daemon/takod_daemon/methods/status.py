"""Readiness methods: status, providers.probe."""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any

import msgspec

from takod.schema import DaemonInfo, KeyStoreInfo, ProbeParams, StatusParams, StatusResult

from ..api import registry
from ..readiness import evaluate
from ..rpc import SLOW, Call, Slow
from ..state import Workspace
from .auth import store_info
from .core import workspace_of

if TYPE_CHECKING:
    from ..daemon import Daemon


def _uptime(d: Daemon) -> float:
    # Whole milliseconds; round(x, 3) goes through decimal conversion, a tenth of a warm answer's cost.
    return int((time.time() - d.started_at) * 1000) / 1000


def _daemon_info(d: Daemon) -> DaemonInfo:
    return DaemonInfo(
        pid=d.pid,
        version=d.version,
        protocol=d.protocol,
        started_at=d.started_at,
        uptime_s=_uptime(d),
        socket=str(d.socket_path),
        state_dir=str(d.state_dir),
        activated=d.activated,
        connections=len(d.connections),
    )


def _status(call: Call, ws: Workspace, env: dict[str, str]) -> StatusResult:
    """``status`` with the client's own keys: evaluated for this answer only, never cached."""
    providers, selected = evaluate(call.daemon.state.facts(ws, env))
    call.daemon.status_file.answered(str(ws.root), env, ws.evaluations, selected)
    return StatusResult(
        daemon=_daemon_info(call.daemon),
        workspace=str(ws.root),
        selected=selected,
        providers=providers,
        seq=ws.seq,
        updated_at=ws.updated_at,
        key_store=store_info(call.daemon.keys),
    )


# The warm answer is spliced from bytes encoded once: of StatusResult's fields only
# two in `daemon` change from call to call (uptime_s, connections); the workspace's
# fields change when it is re-evaluated (seq) or the key store changes state. The
# two go last in the `daemon` map, which a map's readers do not mind. Building and
# encoding the whole Struct per call cost ~5 µs of the daemon's ~21 µs per `status`
# round trip (bench/rpc.py, docs/performance.md).
_encode = msgspec.msgpack.Encoder().encode
_FIELDS = StatusResult.__struct_fields__
_PER_CALL = ("uptime_s", "connections")
assert _FIELDS[0] == "daemon" and max(len(_FIELDS), len(DaemonInfo.__struct_fields__)) <= 15  # one-byte fixmap headers
_HEAD = bytes([0x80 | len(_FIELDS)]) + _encode("daemon") + bytes([0x80 | len(DaemonInfo.__struct_fields__)])
_UPTIME_KEY, _CONNECTIONS_KEY = (_encode(name) for name in _PER_CALL)


def _entries(fields: dict[str, Any]) -> bytes:
    """The map entries of ``fields`` as msgspec encodes them, without the map's header."""
    return _encode(fields)[1:]


@functools.lru_cache(maxsize=1)  # one daemon per process: its fixed facts, encoded once
def _daemon_entries(d: Daemon) -> bytes:
    info = msgspec.structs.asdict(_daemon_info(d))
    return _entries({name: value for name, value in info.items() if name not in _PER_CALL})


def encode_fields(ws: Workspace, key_store: KeyStoreInfo | None) -> bytes:
    """The encoded map entries of every StatusResult field after ``daemon``."""
    values = (str(ws.root), ws.selected, ws.providers, ws.seq, ws.updated_at, key_store)
    return _entries(dict(zip(_FIELDS[1:], values, strict=True)))


def encode_status(d: Daemon, fields: bytes) -> msgspec.Raw:
    """A whole StatusResult for daemon ``d``, with the workspace's ``fields`` (:func:`encode_fields`)."""
    per_call = (_UPTIME_KEY, _encode(_uptime(d)), _CONNECTIONS_KEY, _encode(len(d.connections)))
    return msgspec.Raw(b"".join((_HEAD, _daemon_entries(d), *per_call, fields)))


def _warm(call: Call, ws: Workspace) -> msgspec.Raw:
    """The loaded workspace's ``status``; its fields encoded again only after ``ws.seq``
    or the key store's state changed."""
    keys = call.daemon.keys
    key_state = keys.status if keys.is_open else None
    cached = ws.status_wire
    if cached is None or cached[0] != ws.seq or cached[1] is not key_state:
        cached = ws.status_wire = (ws.seq, key_state, encode_fields(ws, store_info(keys)))
    return encode_status(call.daemon, cached[2])


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
