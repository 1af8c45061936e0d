"""Bad values are bad requests (issue 13, finding 5): an impossible workspace
path, environment or name is `invalid_params` (kind 1) at the RPC boundary of
every method, never `internal`, nothing is written, and the connection that
sent it is served as before, even after a `hello` that carried one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fuzzwire import _pack_any, _RawStr
from tests.harness import DaemonProcess
from tests.rawrpc import RawConn

IMPOSSIBLE: dict[str, Any] = {
    "nul": "/tmp/ws\x00evil",
    "relative": "relative/ws",
    "tilde": "~/ws",
    "over_path_max": "/" + "a/" * 2100,
    "over_name_max": "/tmp/" + "b" * 256,
    "not_utf8": _RawStr(b"/tmp/\xed\xa0\x80"),  # a lone surrogate, CESU-8 encoded
}
# Every method that takes a workspace, with the other options it needs.
WORKSPACE_METHODS: dict[str, dict[str, Any]] = {
    "status": {}, "providers.probe": {}, "auth.inventory": {}, "auth.refresh": {}, "settings.get": {},
    "settings.set": {"field": "ollama_model", "value": "llama3"}, "keys.migrate": {}, "infer": {"prompt": "hi"},
    "embed": {"texts": ["hi"]}, "models.list": {}, "health": {}, "login.start": {"provider": "anthropic"},
    "doctor": {},
}


def call_raw(conn: RawConn, msgid: int, method: str, options: dict[str, Any]) -> list[Any]:
    conn.send_bytes(_pack_any([0, msgid, method, [options]]))
    return conn.response(msgid, timeout=30)


def assert_invalid(reply: list[Any]) -> str:
    assert reply[2] is not None and reply[2][0] == 1, reply
    assert reply[2][1].startswith("invalid_params: "), reply
    return reply[2][1]


@pytest.mark.parametrize("value", IMPOSSIBLE.values(), ids=IMPOSSIBLE.keys())
def test_an_impossible_workspace_is_invalid_params_for_every_method(
    daemon: DaemonProcess, home: Path, value: Any
) -> None:
    with RawConn(daemon.socket) as conn:
        for n, (method, options) in enumerate(WORKSPACE_METHODS.items(), start=1):
            message = assert_invalid(call_raw(conn, n, method, {**options, "workspace": value}))
            assert "workspace" in message or "utf-8" in message  # non-UTF-8 fails in the decoder already
            # The same connection is served as before.
            assert conn.call(1000 + n, "status")[2] is None
    assert not (home / ".tako" / "state" / "inference-settings.json").exists()  # settings.set wrote nothing
    assert "Traceback" not in daemon.log_text() and '"internal' not in daemon.log_text()


@pytest.mark.parametrize("value", IMPOSSIBLE.values(), ids=IMPOSSIBLE.keys())
def test_a_hello_with_an_impossible_workspace_never_spoils_the_connection(daemon: DaemonProcess, value: Any) -> None:
    with RawConn(daemon.socket) as conn:
        assert_invalid(call_raw(conn, 1, "hello", {"client": "t", "workspace": value}))
        status = conn.call(2, "status")
        assert status[2] is None
        assert status[3]["workspace"] == str(daemon.home)  # the default, not the bad one
        assert conn.call(3, "settings.get")[2] is None


def test_a_workspace_behind_a_symlink_loop_is_invalid_params(daemon: DaemonProcess, home: Path) -> None:
    loop = home / "loop"
    loop.symlink_to(loop)
    with RawConn(daemon.socket) as conn:
        message = assert_invalid(conn.call(1, "status", {"workspace": str(loop / "ws")}))
        assert str(loop / "ws") in message
        assert_invalid(call_raw(conn, 2, "hello", {"workspace": "/x\x00"}))
        assert conn.call(3, "ping")[3] == "pong"


@pytest.mark.parametrize("env", [{"KEY": "a\x00b"}, {"KEY\x00": "v"}, {"A=B": "v"}, {"": "v"}])
@pytest.mark.parametrize("method", ["status", "infer"])
def test_an_environment_no_process_could_have_is_invalid_params(
    daemon: DaemonProcess, method: str, env: dict[str, str]
) -> None:
    with RawConn(daemon.socket) as conn:
        options: dict[str, Any] = {"env": env, **({"prompt": "hi"} if method == "infer" else {})}
        assert_invalid(conn.call(1, method, options))
        assert conn.call(2, "status", {"env": {"KEY": "fine"}})[2] is None


@pytest.mark.parametrize("field", ["model", "provider", "thinking"])
def test_a_name_with_control_characters_never_reaches_a_command_line(daemon: DaemonProcess, field: str) -> None:
    with RawConn(daemon.socket) as conn:
        assert_invalid(conn.call(1, "infer", {"prompt": "hi", field: "claude\x00--dangerously"}))
        assert_invalid(conn.call(2, "models.list", {"provider": "ollama\n"}))
        assert_invalid(conn.call(3, "login.start", {"provider": "anthropic\x00"}))


@pytest.mark.parametrize("field", ["ollama_host", "ollama_model", "type1_model"])
def test_settings_with_control_characters_are_refused_and_the_file_kept(
    daemon: DaemonProcess, home: Path, field: str
) -> None:
    with RawConn(daemon.socket) as conn:
        assert conn.call(1, "settings.set", {"field": "ollama_model", "value": "llama3"})[2] is None
        path = home / ".tako" / "state" / "inference-settings.json"
        before = path.read_bytes()
        reply = conn.call(2, "settings.set", {"field": field, "value": "http://127.0.0.1\x00:11434"})
        assert reply[2] is not None and reply[2][0] == 1 and reply[2][1].startswith("invalid_value: "), reply
        assert path.read_bytes() == before
        assert json.loads(before)["ollama_model"] == "llama3"


def test_a_default_workspace_the_protocol_cannot_name_falls_back_to_home(home: Path) -> None:
    from tests.harness import clean_env

    odd = os.fsdecode(b"/tmp/takod-not-utf8-\xff\xfe")
    daemon = DaemonProcess(home, clean_env(home, TAKO_WORKSPACE=odd)).start()
    try:
        with RawConn(daemon.socket) as conn:
            status = conn.call(1, "status")
            assert status[2] is None and status[3]["workspace"] == str(home)
        assert "default workspace unusable" in daemon.log_text()
    finally:
        daemon.stop()


def test_the_cli_in_a_directory_the_protocol_cannot_name_says_so(home: Path, tmp_path: Path) -> None:
    from tests.harness import clean_env

    odd = Path(os.fsdecode(bytes(tmp_path) + b"/not-utf8-\xff"))
    odd.mkdir()
    (odd / "tako.toml").write_text("")
    done = subprocess.run([sys.executable, "-m", "takod", "status"], cwd=odd, capture_output=True, text=True,
                          env=clean_env(home, TAKOD_NO_SPAWN="1"), timeout=60)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "not valid UTF-8" in done.stderr and "TAKO_WORKSPACE" in done.stderr
