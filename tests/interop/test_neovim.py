"""A stock Neovim (``--clean``, no plugins) uses takod through its built-in
msgpack-rpc client only: ``sockconnect(..., {rpc = true})``, ``rpcrequest`` and
``User`` autocmds for pushed events. The Lua driver is tests/interop/nvim/takod_client.lua;
it writes what it saw to a JSON file and quits, and this test judges it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from takod.schema import PROVIDERS
from tests.harness import DaemonProcess, clean_env, wait_for

pytestmark = pytest.mark.interop

SCRIPT = Path(__file__).resolve().parent / "nvim" / "takod_client.lua"
EVENT_WAIT_MS = 20_000  # inside nvim: how long it waits for the pushed event
GUARD = 60  # outside: the longest nvim may take before it is killed


@pytest.fixture
def nvim() -> str:
    """The stock nvim binary (checked before the daemon starts)."""
    path = shutil.which("nvim")
    if path:
        return path
    message = "nvim not found on PATH; install Debian's neovim (scripts/test.sh sets up the test tools)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def log_records(daemon: DaemonProcess) -> list[dict[str, Any]]:
    records = []
    for line in daemon.log_text().splitlines():
        line = line.strip()
        if line.startswith("{"):
            records.append(json.loads(line))
    return records


def run_nvim_client(nvim: str, daemon: DaemonProcess, tmp: Path) -> tuple[dict[str, Any], int]:
    """Run the Lua driver; send SIGHUP once it has subscribed. Returns (results, nvim pid)."""
    out, ready = tmp / "nvim-out.json", tmp / "nvim-ready"
    nvim_home = tmp / "nvim-home"
    nvim_home.mkdir()
    env = clean_env(
        nvim_home,
        TAKOD_NVIM_SOCKET=str(daemon.socket),
        TAKOD_NVIM_OUT=str(out),
        TAKOD_NVIM_READY=str(ready),
        TAKOD_NVIM_WAIT_MS=str(EVENT_WAIT_MS),
    )
    env.pop("TAKOD_SOCKET", None)  # the script gets the socket only from TAKOD_NVIM_SOCKET
    log_path = tmp / "nvim.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [nvim, "--headless", "--clean", "-n", "-i", "NONE", "-c", f"luafile {SCRIPT}"],
            env=env,
            cwd=nvim_home,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    try:
        # The script writes `ready` after subscribing, or quits early if a step failed.
        wait_for(lambda: ready.exists() or proc.poll() is not None, timeout=GUARD)
        if ready.exists():
            daemon.signal(signal.SIGHUP)  # publishes daemon {"state": "reloaded"}
        proc.wait(GUARD)
    except (subprocess.TimeoutExpired, AssertionError):
        proc.kill()
        proc.wait(10)
        pytest.fail(f"nvim did not finish within {GUARD} s; its output:\n{log_path.read_text(errors='replace')}")
    assert proc.returncode == 0, f"nvim exited {proc.returncode}:\n{log_path.read_text(errors='replace')}"
    assert out.exists(), f"nvim wrote no results:\n{log_path.read_text(errors='replace')}"
    return json.loads(out.read_text()), proc.pid


def test_stock_neovim_is_a_client(nvim: str, daemon: DaemonProcess, tmp_path: Path) -> None:
    res, nvim_pid = run_nvim_client(nvim, daemon, tmp_path)

    # The daemon saw this nvim, kept to the protocol with it, and nvim rejected
    # nothing we sent (an autocmd notification nvim 0.7 cannot run comes back as
    # nvim_error_event, which the daemon logs as "editor reported an error").
    # Read the log once the daemon has finished with the connection (nvim hung up on exit).
    nvim_conns = {r["conn"] for r in log_records(daemon) if r.get("peer_pid") == nvim_pid and "conn" in r}
    assert nvim_conns, "the daemon log has no record of the nvim connection"
    wait_for(
        lambda: any(r.get("event") == "connection closed" and r.get("conn") in nvim_conns for r in log_records(daemon)),
        timeout=10,
    )
    records = log_records(daemon)
    violations = [r for r in records if "protocol violation" in str(r.get("event"))]
    assert not violations, violations
    editor_errors = [r for r in records if r.get("event") == "editor reported an error"]
    assert not editor_errors, editor_errors

    assert res["ok"], res.get("error")
    assert res["channel"] > 0

    # status: the daemon's own pid, and the five providers in their fixed order.
    assert "status_error" not in res, res.get("status_error")
    status = res["status"]
    assert status["daemon"]["pid"] == daemon.pid
    # The five in their fixed order first; the API backends follow.
    assert [p["name"] for p in status["providers"]][:5] == list(PROVIDERS) == ["pi", "ollama", "codex", "claude", "gemini"]
    assert res["ping"] == "pong"

    # An unknown method fails that call only, with our code in nvim's message.
    assert res["no_such"]["ok"] is False
    assert "no_method" in res["no_such"]["error"], res["no_such"]
    assert "no.such" in res["no_such"]["error"]
    assert res.get("ping_after_error") == "pong", res.get("ping_after_error_error")

    # Lua {} arrives as an empty array and is taken as "no options".
    assert "status_empty_table_error" not in res, res.get("status_empty_table_error")
    assert res["status_empty_table"]["daemon"]["pid"] == daemon.pid

    # subscribe -> SIGHUP -> a User TakodEvent autocmd fired with g:takod_event set.
    assert "subscribe_error" not in res, res.get("subscribe_error")
    sub = res["subscribe"]
    assert sub["topics"] == ["daemon"] and sub["deliver"] == "autocmd"
    assert res["event_arrived"] is True, res
    event = res["events"][0]
    assert event["match"] == "TakodEvent"
    g = event["g"]
    assert g["topic"] == "daemon"
    assert g["payload"]["state"] == "reloaded"
    assert g["sub_id"] == sub["sub_id"]
    if res["has_nvim_08"]:
        assert event["data"] == g  # ev.data carries the same event from nvim 0.8 on
    else:
        assert event["data"] == "absent"  # nvim 0.7 has no autocmd data; we must not send it
    # Nothing after the event broke the channel.
    assert res.get("ping_after_event") == "pong", res.get("ping_after_event_error")
    assert res["chanclose"] == 1


NESTED = Path(__file__).resolve().parent / "nvim" / "nested_requests.lua"


def test_event_handlers_that_call_takod_never_break_the_channel(nvim: str, daemon: DaemonProcess, tmp_path: Path) -> None:
    """A TakodEvent handler calls rpcrequest(ch, 'status') while the editor may be blocked in
    settings.set or keys.set, with events arriving at any moment (a SIGHUP storm). Neovim 0.7
    closes the channel if a reply comes out of its LIFO order; 10 of 10 runs must keep it."""
    for run in range(10):
        out = tmp_path / f"nested-{run}.json"
        nvim_home = tmp_path / f"nvim-home-{run}"
        nvim_home.mkdir()
        env = clean_env(nvim_home, TAKOD_NVIM_SOCKET=str(daemon.socket), TAKOD_NVIM_OUT=str(out), TAKOD_NVIM_ROUNDS="30")
        env.pop("TAKOD_SOCKET", None)
        proc = subprocess.Popen([nvim, "--headless", "--clean", "-n", "-i", "NONE", "-c", f"luafile {NESTED}"],
                                env=env, cwd=nvim_home, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + GUARD
        try:
            while proc.poll() is None:  # events at any moment: each SIGHUP publishes daemon "reloaded"
                daemon.signal(signal.SIGHUP)
                try:
                    proc.wait(0.02)
                except subprocess.TimeoutExpired:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"run {run}: nvim did not finish within {GUARD} s")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        res = json.loads(out.read_text())
        assert res["errors"] == [] and res["handler_errors"] == [], (run, res)
        assert res["rounds"] == 30 and res["channel_alive"] is True, (run, res)
        assert res["handler_calls"] > 0, (run, res)  # the handlers ran, and their requests were answered
