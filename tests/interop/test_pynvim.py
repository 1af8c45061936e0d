"""pynvim's own msgpack-rpc session (a second, independent client implementation)
talks to takod unchanged: it announces itself with ``nvim_set_client_info`` sent
as a *bin* method name, reads errors as ``err[1]``, and gets our codes back."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from takod.schema import PROVIDERS
from tests.harness import DaemonProcess, wait_for

pytestmark = pytest.mark.interop

try:
    from pynvim.api.common import NvimError, decode_if_bytes
    from pynvim.msgpack_rpc import socket_session
    from pynvim.msgpack_rpc.session import Session
except ImportError as exc:  # pragma: no cover - depends on the machine
    _MISSING: str | None = f"pynvim is not importable ({exc}); install the test extras (scripts/test.sh does)"
else:
    _MISSING = None


@pytest.fixture(autouse=True)
def _need_pynvim() -> None:
    if _MISSING:
        if os.environ.get("CI"):
            pytest.fail(_MISSING)
        pytest.skip(_MISSING)


def log_records(daemon: DaemonProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in daemon.log_text().splitlines() if line.strip().startswith("{")]


def conn_closed(daemon: DaemonProcess, conn: int) -> bool:
    return any(r.get("event") == "connection closed" and r.get("conn") == conn for r in log_records(daemon))


def close_session(s: "Session") -> None:
    """Close like pynvim does (``Session.close()``), but let the socket really close.

    pynvim 0.6's asyncio loop closes the transport and then the loop without
    running it again, so the socket stays open (and warns) until the transport
    is garbage-collected. Running the loop once lets the transport finish closing.
    """
    loop = s.loop  # pynvim's event loop wrapper (public); its asyncio parts are not
    transport = getattr(loop, "_transport", None)
    aio = getattr(loop, "_loop", None)
    if transport is not None and aio is not None and not aio.is_closed():
        transport.close()  # schedules the socket's close on the loop
        aio.call_soon(aio.stop)
        aio.run_forever()  # one pass: the socket closes (pynvim's connection_lost also stops the loop)
    s.close()


@pytest.fixture
def session(daemon: DaemonProcess) -> Iterator["Session"]:
    s = socket_session(str(daemon.socket))
    # Exactly what pynvim's Nvim.from_session installs: errors become NvimError(err[1]).
    s.error_wrapper = lambda e: NvimError(decode_if_bytes(e[1]))
    try:
        yield s
    finally:
        close_session(s)


def test_pynvim_session_requests_and_errors(daemon: DaemonProcess, session: "Session") -> None:
    status = session.request("status")
    assert status["daemon"]["pid"] == daemon.pid
    assert [p["name"] for p in status["providers"]][:5] == list(PROVIDERS)  # then the API backends
    assert session.request("ping") == "pong"
    # bin method names work for requests too (pynvim itself sends its own that way)
    assert session.request(b"ping") == "pong"

    with pytest.raises(NvimError) as no_method:
        session.request("no.such")
    assert str(no_method.value) == "no_method: no.such"

    with pytest.raises(NvimError) as bad_field:
        session.request("status", {"no_such_option": 1})
    assert str(bad_field.value).startswith("invalid_params: ")
    with pytest.raises(NvimError) as bad_type:
        session.request("status", {"workspace": 42})
    assert str(bad_type.value).startswith("invalid_params: ")
    with pytest.raises(NvimError) as too_many:
        session.request("status", {}, {})
    assert str(too_many.value).startswith("invalid_params: ")

    # The session survives its errors.
    assert session.request("ping") == "pong"


def test_pynvim_default_error_wrapper_reads_our_errors(daemon: DaemonProcess) -> None:
    """Without Nvim.from_session, pynvim wraps errors as Exception(err[1]): still our text."""
    s = socket_session(str(daemon.socket))
    try:
        with pytest.raises(Exception) as exc:
            s.request("no.such")
        assert exc.value.args == ("no_method: no.such",)
        assert s.request("ping") == "pong"
    finally:
        close_session(s)


def test_pynvim_client_name_is_recorded_and_close_is_clean(daemon: DaemonProcess) -> None:
    s = socket_session(str(daemon.socket))
    assert s.request("ping") == "pong"  # the client-info notification went out before this request
    identified = wait_for(
        lambda: [r for r in log_records(daemon) if r.get("event") == "client identified"], timeout=10
    )
    assert identified[0]["client"] == "python3-client"  # pynvim's get_client_info('client', ...) name
    conn = identified[0]["conn"]
    assert identified[0]["peer_pid"] == os.getpid()

    close_session(s)
    wait_for(lambda: conn_closed(daemon, conn), timeout=10)  # the daemon saw the hang-up

    records = log_records(daemon)
    assert not [r for r in records if "protocol violation" in str(r.get("event"))]
    assert not [r for r in records if r.get("conn") == conn and r.get("level") in ("warning", "error", "critical")]
    # The daemon is fine afterwards.
    with daemon.client() as c:
        assert c.call("ping") == "pong"


DOC = Path(__file__).resolve().parents[2] / "docs" / "editors.md"


def test_the_documented_pynvim_way_in_works(daemon: DaemonProcess) -> None:
    """docs/editors.md's Python block, run as is: pynvim's socket_session talks to takod."""
    [block] = re.findall(r"^```python\n(.*?)^```$", DOC.read_text(), re.S | re.M)
    takod = shutil.which("takod")
    assert takod, "the takod console script is not on PATH"
    env = dict(daemon.env, TAKOD_NO_SPAWN="1", PATH=f"{Path(takod).parent}:/usr/bin:/bin")
    result = subprocess.run([sys.executable, "-c", block], env=env, cwd=daemon.home, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    with daemon.client() as c:
        assert result.stdout.strip() == str(c.call("status")["selected"])


def test_pynvim_attach_is_refused_at_once_as_the_docs_say(daemon: DaemonProcess) -> None:
    import pynvim

    with pytest.raises(Exception) as refused:  # pynvim.attach asks nvim_get_api_info first
        pynvim.attach("socket", path=str(daemon.socket))
    assert "no_method: nvim_get_api_info" in str(refused.value)
    assert "nvim_get_api_info" in DOC.read_text() and "socket_session" in DOC.read_text()
