"""Load limits that hold by construction: the fd limit and the accept backlog.

The figures (throughput, latency, memory over a million requests) come from
stress/load.py; these tests pin the two properties that made 1,000
connections work at all.
"""

from __future__ import annotations

import errno
import resource
import signal
import socket
from pathlib import Path
from typing import Iterator

import pytest

from tests.harness import DaemonProcess
from tests.rawrpc import RawConn, error_of

BURST = 1000


def nofile_soft(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open-files line")


@pytest.fixture
def fd_room() -> Iterator[int]:
    """Room for BURST sockets in this process; the hard limit, restored afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < BURST + 200:
        pytest.skip(f"hard fd limit {hard} is too low for {BURST} connections")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        yield hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_daemon_started_with_a_low_soft_fd_limit_lifts_it(home: Path, daemon_env: dict[str, str], fd_room: int) -> None:
    # Login sessions commonly hand out a soft limit of 1024: too few for 1,000 clients.
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, fd_room))
    try:
        daemon = DaemonProcess(home, daemon_env).start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (fd_room, fd_room))
    try:
        assert nofile_soft(daemon.pid) == (65536 if fd_room == resource.RLIM_INFINITY else fd_room)
    finally:
        daemon.stop()


def test_a_burst_of_connects_while_the_daemon_is_stalled_waits_in_the_backlog(daemon: DaemonProcess, fd_room: int) -> None:
    # A non-blocking connect (libuv, asyncio) to a full accept backlog fails with EAGAIN
    # on Linux. With the daemon stopped nothing is accepted, so all BURST must fit.
    socks: list[socket.socket] = []
    refused = 0
    daemon.signal(signal.SIGSTOP)
    try:
        for _ in range(BURST):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(str(daemon.socket))
            except BlockingIOError as exc:
                assert exc.errno == errno.EAGAIN
                refused += 1
                s.close()
                continue
            socks.append(s)
    finally:
        daemon.signal(signal.SIGCONT)
    try:
        assert refused == 0
        for s in socks:
            s.setblocking(True)
            s.sendall(b"\x94\x00\x01\xa4ping\x90")
        for s in socks:
            s.settimeout(20)
            assert s.recv(64) == b"\x94\x01\x01\xc0\xa4pong"
        with RawConn(daemon.socket) as control:
            status = control.call(1, "status")[3]
            assert status["daemon"]["connections"] == BURST + 1
    finally:
        for s in socks:
            s.close()


def test_subscriptions_per_connection_are_capped_and_the_connection_stays(daemon: DaemonProcess) -> None:
    # Each subscription holds a queue and a task: uncapped, one connection could hold any amount of memory.
    with RawConn(daemon.socket) as conn:
        conn.send(*[[0, i, "subscribe", [{"topics": ["daemon"]}]] for i in range(1, 66)])
        replies = {msg[1]: msg for msg in (conn.response(i) for i in range(1, 66))}
        ok = [r for r in replies.values() if r[2] is None]
        refused = [r for r in replies.values() if r[2] is not None]
        assert len(ok) == 64
        assert [error_of(r) for r in refused] == [(1, "too_many_subscriptions")]
        assert conn.call(100, "unsubscribe", {"sub_id": ok[0][3]["sub_id"]})[3] == {"removed": True}
        assert conn.call(101, "subscribe", {"topics": ["daemon"]})[2] is None
        with RawConn(daemon.socket) as other:  # the cap is per connection
            assert other.call(1, "subscribe", {})[2] is None
