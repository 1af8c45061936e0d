"""The warm `status` answer is spliced from a per-call `daemon` map and fields
encoded once per change: it must be byte for byte what msgspec makes of the
StatusResult Struct, so every client decodes the same thing either way."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from takod.schema import DaemonInfo, KeyStoreInfo, ProviderStatus, StatusResult
from takod_daemon.methods.status import encode_fields, encode_status
from takod_daemon.state import Workspace

DAEMON = DaemonInfo(
    pid=4242, version="0.1.0", protocol=1, started_at=1796518440.5377939, uptime_s=12.345,
    socket="/run/user/1000/takod/rpc.sock", state_dir="/home/me/.local/state/takod",
    activated=False, connections=3,
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
    ("selected", "seq", "providers"),
    [("pi", 7, PROVIDERS), (None, 0, []), (None, 2**40, PROVIDERS[1:])],
)
def test_spliced_status_is_the_structs_encoding(key_store, selected, seq, providers):
    ws = _workspace(selected, seq, providers)
    whole = StatusResult(
        daemon=DAEMON, workspace=str(ws.root), selected=selected, providers=providers,
        seq=seq, updated_at=ws.updated_at, key_store=key_store,
    )
    spliced = encode_status(DAEMON, encode_fields(ws, key_store))
    assert bytes(spliced) == msgspec.msgpack.encode(whole)
    assert msgspec.msgpack.decode(bytes(spliced), type=StatusResult) == whole


def test_spliced_status_inside_a_response_frame():
    from takod.protocol import Response, decode_message, encode_response

    ws = _workspace("pi", 3, PROVIDERS)
    frame = encode_response(9, None, encode_status(DAEMON, encode_fields(ws, KEY_STORES[1])))
    msg = decode_message(frame)
    assert isinstance(msg, Response) and msg.msgid == 9 and msg.error is None
    assert msg.result["daemon"]["connections"] == 3
    assert [p["name"] for p in msg.result["providers"]] == ["pi", "ollama", "codex"]
    assert msg.result["key_store"]["backend"] == "SecretService Keyring"
