"""The warm `status` answer is spliced from bytes encoded once (the daemon's fixed
facts, the workspace's fields) and the two values that change per call: it must
decode to exactly the StatusResult the Struct path builds, for every client."""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
import pytest

from takod.schema import DaemonInfo, KeyStoreInfo, ProviderStatus, StatusResult
from takod_daemon.methods.status import encode_fields, encode_status
from takod_daemon.state import Workspace

class FakeDaemon:
    """What the status encoder reads of a Daemon."""

    pid, version, protocol, activated = 4242, "0.1.0", 1, True
    socket_path = Path("/run/user/1000/takod/rpc.sock")
    state_dir = Path("/home/me/.local/state/tåkod")

    def __init__(self, up: float, connections: int):
        self.started_at = time.time() - up
        self.connections = set(range(connections))


def _daemon_info(d: FakeDaemon, raw: dict) -> DaemonInfo:
    """The DaemonInfo the Struct path would build for ``d``, at the uptime the answer carries."""
    return DaemonInfo(
        pid=d.pid, version=d.version, protocol=d.protocol, started_at=d.started_at, uptime_s=raw["uptime_s"],
        socket=str(d.socket_path), state_dir=str(d.state_dir), activated=d.activated, connections=len(d.connections),
    )
PROVIDERS = [
    ProviderStatus(name="pi", ready=True, level="ready", reason=None, hint=None, detail={"auth": "oauth"}),
    ProviderStatus(name="ollama", ready=False, level="reachable", reason="model-not-pulled",
                   hint="pull it (`ollama pull llama3.2`)", detail={"url": "http://127.0.0.1:11434", "models": []}),
    ProviderStatus(name="codex", ready=False, level="not-installed", reason="not-installed", hint="install Codex", detail={}),
]
KEY_STORES = [
    None,
    KeyStoreInfo(backend="SecretService Keyring", secure=True, reason=None, hint=None),
    KeyStoreInfo(backend="file", secure=False, reason="no-keyring", hint="start a Secret Service ünïcode"),
]


def _workspace(selected: str | None, seq: int, providers: list[ProviderStatus]) -> Workspace:
    ws = Workspace(root=Path("/home/me/tako"))
    ws.providers, ws.selected, ws.seq, ws.updated_at = providers, selected, seq, 1796518441.25
    return ws


@pytest.mark.parametrize("key_store", KEY_STORES)
@pytest.mark.parametrize(
    ("selected", "seq", "providers", "up", "connections"),
    [("pi", 7, PROVIDERS, 12.3456, 3), (None, 0, [], 0.0, 0), (None, 2**40, PROVIDERS[1:], 86400.5, 5000)],
)
def test_spliced_status_decodes_to_the_struct(key_store, selected, seq, providers, up, connections):
    d = FakeDaemon(up, connections)
    ws = _workspace(selected, seq, providers)
    spliced = bytes(encode_status(d, encode_fields(ws, key_store)))
    raw = msgspec.msgpack.decode(spliced)
    assert list(raw) == list(StatusResult.__struct_fields__)
    assert sorted(raw["daemon"]) == sorted(DaemonInfo.__struct_fields__)
    assert raw["daemon"]["uptime_s"] == pytest.approx(up, abs=0.5)
    whole = StatusResult(
        daemon=_daemon_info(d, raw["daemon"]), workspace=str(ws.root), selected=selected, providers=providers,
        seq=seq, updated_at=ws.updated_at, key_store=key_store,
    )
    assert msgspec.msgpack.decode(spliced, type=StatusResult) == whole
    assert raw == msgspec.msgpack.decode(msgspec.msgpack.encode(whole))


def test_spliced_status_inside_a_response_frame():
    from takod.protocol import Response, decode_message, encode_response

    ws = _workspace("pi", 3, PROVIDERS)
    frame = encode_response(9, None, encode_status(FakeDaemon(1.0, 3), encode_fields(ws, KEY_STORES[1])))
    msg = decode_message(frame)
    assert isinstance(msg, Response) and msg.msgid == 9 and msg.error is None
    assert msg.result["daemon"]["connections"] == 3
    assert [p["name"] for p in msg.result["providers"]] == ["pi", "ollama", "codex"]
    assert msg.result["key_store"]["backend"] == "SecretService Keyring"
