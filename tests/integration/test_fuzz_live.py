"""A short live fuzz (stress/fuzz_live.py runs the long one): the daemon outlives hostile peers and leaks nothing."""

from __future__ import annotations

import asyncio
import json
import os
import pytest

from tests.fuzzwire import connections_open, run_fuzz
from tests.harness import DaemonProcess, wait_for
from tests.procfs import alive, rss_kib

BUGS = ("handler failed", "connection failed, closed it", "result not encodable")


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.parametrize("seed", [1, 2])
def test_fuzzed_connections_never_kill_the_daemon_nor_leak(daemon: DaemonProcess, seed: int) -> None:
    path = str(daemon.socket)
    asyncio.run(run_fuzz(path, connections=30, workers=8, seed=seed + 1000))  # first-use allocations
    fds_before, rss_before = fds(daemon.pid), rss_kib(daemon.pid)

    result = asyncio.run(run_fuzz(path, connections=300, workers=8, seed=seed, read_for=0.1))

    assert alive(daemon.pid)
    assert result.control_calls > 0 and result.control_failures == []
    assert result.internal_errors == []
    assert result.closed_by_daemon > 0 and result.replies > 0  # both kinds of outcome were exercised
    # Closing is asynchronous on the daemon's side (even the asking connection's own close): wait, bounded.
    wait_for(lambda: connections_open(path) == 1, timeout=10)
    wait_for(lambda: fds(daemon.pid) <= fds_before, timeout=10)
    assert rss_kib(daemon.pid) - rss_before < 16 * 1024
    entries = [json.loads(line) for line in daemon.log_text().splitlines() if line.startswith("{")]
    # A handler's traceback, or asyncio's "Fatal error: protocol.data_received() call failed": bugs.
    assert not [e for e in entries if e.get("level") in ("error", "critical") or e.get("event") in BUGS]
