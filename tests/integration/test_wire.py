"""The wire contract (BRIEF §3) against a real daemon, spoken by a bare msgpack peer.

No takod.Client here: requests are packed by msgpack-python and answers read
with its Unpacker, so these tests see exactly what Neovim or pynvim would.
The one slow method is ``subscribe`` with ``deliver="autocmd"``: it asks the
peer (an editor, normally) a nested question and waits for the answer, which
the test controls.
"""

from __future__ import annotations

import select
import signal
import socket
import time
from typing import Any

import msgpack
import pytest

from tests.harness import DaemonProcess, wait_for
from tests.procfs import rss_kib
from tests.rawrpc import WAIT, Closed, RawConn, error_of, served, start_slow_request


# pipelining and ordering --------------------------------------------------------


def test_pipelined_requests_in_one_write_are_all_answered_by_msgid(daemon: DaemonProcess) -> None:
    ids = [0, 2**32 - 1, 2**64 - 1, *range(1, 198)]  # msgids are echoed unchanged, whatever their size
    methods = ["ping", "hello", "status"]
    with RawConn(daemon.socket) as conn:
        conn.send(*([0, msgid, methods[i % 3], []] for i, msgid in enumerate(ids)))
        answers = {}
        while len(answers) < len(ids):
            msg = conn.recv()
            assert msg[0] == 1 and msg[1] not in answers, msg
            answers[msg[1]] = msg
    assert sorted(answers) == sorted(ids)
    for i, msgid in enumerate(ids):
        _, _, error, result = answers[msgid]
        assert error is None
        if methods[i % 3] == "ping":
            assert result == "pong"
        elif methods[i % 3] == "hello":
            assert result["server"] == "takod" and result["pid"] == daemon.pid
        else:
            assert result["daemon"]["pid"] == daemon.pid


def test_answers_go_out_as_work_finishes_not_in_request_order(daemon: DaemonProcess) -> None:
    with RawConn(daemon.socket) as conn:
        nested_id = start_slow_request(conn, 1)
        conn.request(2, "ping")
        assert conn.recv() == [1, 2, None, "pong"]  # overtakes request 1
        conn.respond(nested_id, None, 1)  # "yes, this Neovim has autocmd data"
        _, msgid, error, result = conn.recv()
        assert (msgid, error) == (1, None)
        assert result["deliver"] == "autocmd" and result["topics"] == ["daemon"]
        sub_id = result["sub_id"]
        # Events for a stock Neovim arrive as API notifications it can run.
        daemon.signal(signal.SIGHUP)
        kind, method, (code, args) = conn.recv()
    data = {"sub_id": sub_id, "seq": 1, "topic": "daemon", "payload": {"state": "reloaded"}}
    # One Lua chunk Neovim schedules on its main loop: g:takod_event, then the User autocmd (§6.3).
    assert (kind, method) == (2, "nvim_exec_lua")
    assert "vim.schedule(" in code and "nvim_exec_autocmds('User', opts)" in code
    assert args == ["takod_event", data, {"pattern": "TakodEvent", "modeline": False, "data": data}]


@pytest.mark.parametrize(
    "answer, with_data",
    [((None, 1), True), ((None, True), True), ((None, 0), False), ((None, False), False), ((None, None), False),
     (([1, "no_method: nvim_call_function"], None), True)],
    ids=["1", "true", "0", "false", "nil", "error"],
)
def test_autocmd_data_follows_the_editors_answer(daemon: DaemonProcess, answer: tuple[Any, Any], with_data: bool) -> None:
    # docs/PROTOCOL.md §6.3: 0, false or nil leave `data` out; anything else (an error too) keeps it.
    with RawConn(daemon.socket) as conn:
        nested_id = start_slow_request(conn, 1)
        conn.respond(nested_id, *answer)
        assert conn.response(1)[2] is None
        daemon.signal(signal.SIGHUP)
        autocmd, _ = conn.recv_until(lambda m: m[:2] == [2, "nvim_exec_lua"])
    opts = autocmd[2][1][2]
    assert opts["pattern"] == "TakodEvent"
    assert ("data" in opts) is with_data


# errors that keep the connection ------------------------------------------------


@pytest.mark.parametrize("method", ["frobnicate", b"frobnicate", "nvim_get_api_info", "m" * 100])
def test_unknown_method_is_a_validation_error_and_the_connection_stays(daemon: DaemonProcess, method: Any) -> None:
    name = method.decode() if isinstance(method, bytes) else method
    with RawConn(daemon.socket) as conn:
        assert conn.call(1, method) == [1, 1, [1, f"no_method: {name}"], None]
        assert conn.call(2, "ping") == [1, 2, None, "pong"]


@pytest.mark.parametrize(
    "method, params",
    [
        ("ping", [{"bogus": 1}]),  # unknown option: typos surface
        ("ping", [{}, {}]),  # at most one argument
        ("status", ["workspace"]),  # the argument must be a map
        ("status", [{"workspace": 5}]),
        ("subscribe", [{"topics": ["nonsense"]}]),
        ("subscribe", [{"deliver": "carrier-pigeon"}]),
        ("unsubscribe", []),  # a required option is missing
        ("unsubscribe", [{"sub_id": 3.0}]),  # types are strict
        ("unsubscribe", [{"sub_id": True}]),
        ("status", [{"workspace": b"/tmp"}]),  # bin is not str
        ("status", [{"workspace": msgpack.ExtType(1, b"x")}]),
    ],
)
def test_bad_params_are_a_validation_error(daemon: DaemonProcess, method: str, params: list[Any]) -> None:
    with RawConn(daemon.socket) as conn:
        response = conn.call(1, method, *params)
        assert response[3] is None
        assert error_of(response) == (1, "invalid_params")
        assert conn.call(2, "ping") == [1, 2, None, "pong"]


def test_invalid_utf8_inside_request_params_is_a_validation_error(daemon: DaemonProcess) -> None:
    with RawConn(daemon.socket) as conn:
        conn.send_bytes(b"\x94\x00\x01\xa6status\x91\x81\xa9workspace\xa2\xff\xfe")  # {"workspace": <bad str>}
        response = conn.recv()
        assert response[1] == 1 and error_of(response) == (1, "invalid_params")
        assert conn.call(2, "ping") == [1, 2, None, "pong"]


@pytest.mark.parametrize("options", [[], {}], ids=["lua-empty-table-as-array", "map"])
def test_empty_options_as_array_or_map_are_accepted(daemon: DaemonProcess, options: Any) -> None:
    # Neovim sends Lua's {} as an empty array: vim.rpcrequest(ch, "status", {}).
    with RawConn(daemon.socket) as conn:
        _, _, error, result = conn.call(1, "status", options)
        assert error is None and result["daemon"]["pid"] == daemon.pid
        assert conn.call(2, "ping", options) == [1, 2, None, "pong"]


def test_bin_method_names_are_served(daemon: DaemonProcess) -> None:
    with RawConn(daemon.socket) as conn:
        conn.send_bytes(b"\x94\x00\x07\xc4\x04ping\x90")  # [0, 7, bin "ping", []], spelled out
        assert conn.recv() == [1, 7, None, "pong"]
        _, _, error, result = conn.call(8, b"hello", {"client": "bin-client"})
        assert error is None and result["server"] == "takod"


def test_pynvim_socket_session_works_unchanged(daemon: DaemonProcess) -> None:
    from pynvim.msgpack_rpc import socket_session

    session = socket_session(str(daemon.socket))  # sends nvim_set_client_info as bin at once
    try:
        assert session.request("ping") == "pong"
        with pytest.raises(Exception, match="^no_method: nope$"):  # pynvim reads err[1]
            session.request("nope")
        assert session.request("hello", {"client": "pynvim"})["server"] == "takod"
    finally:
        session.close()
    wait_for(lambda: '"client": "python3-client", "event": "client identified"' in daemon.log_text())


def test_client_info_unknown_notifications_and_stray_responses_get_no_answer(daemon: DaemonProcess) -> None:
    with RawConn(daemon.socket) as conn:
        conn.send(
            [2, b"nvim_set_client_info", ["my-editor", {"major": 0}, "remote", {}, {}]],
            [2, "nvim_set_client_info", ["my-editor-2", {}, "remote", {}, {}]],
            [2, "totally.unknown", [1, 2, 3]],
            [2, "$/cancel", [12345]],  # nothing in flight by that id
            [2, "$/cancel", ["not-an-id"]],
            [1, 999, None, "an answer to a question nobody asked"],
            [0, 1, "ping", []],
        )
        assert conn.recv() == [1, 1, None, "pong"]  # the first and only thing sent back
        with pytest.raises(TimeoutError):
            conn.recv(timeout=0.3)
    log = daemon.log_text()
    assert '"client": "my-editor", "event": "client identified"' in log
    assert '"client": "my-editor-2", "event": "client identified"' in log


def test_cancel_of_an_in_flight_request_answers_cancelled(daemon: DaemonProcess) -> None:
    with RawConn(daemon.socket) as conn:
        nested_id = start_slow_request(conn, 41)
        conn.notify("$/cancel", 41)
        response = conn.recv()
        assert response[:2] == [1, 41] and response[3] is None
        assert error_of(response) == (0, "cancelled")
        conn.respond(nested_id, None, 1)  # too late: ignored
        assert conn.call(42, "ping") == [1, 42, None, "pong"]
        # The cancelled subscribe left no subscription behind: a reload reaches nobody.
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: '"event": "reload requested"' in daemon.log_text())
        conn.request(43, "ping")
        assert conn.recv() == [1, 43, None, "pong"]
        with pytest.raises(TimeoutError):
            conn.recv(timeout=0.3)


# errors that close the connection (and only it) ------------------------------------


def nest(depth: int) -> bytes:
    return b"\x91" * (depth - 1) + b"\x90"


BAD_FRAMES = {
    "byte-c1": (b"\xc1", "frame must be an array, got byte 0xc1"),
    "c1-inside": (b"\x94\x00\x01\xa4ping\x91\xc1", "invalid msgpack byte 0xc1"),
    "not-an-array": (msgpack.packb({"method": "ping"}), "frame must be an array"),
    # Only the header of a 17 MiB string is sent: the daemon must not wait for the rest.
    "oversize": (b"\x94\x00\x01\xa4ping\x91\xdb" + (17 * 2**20).to_bytes(4, "big"), "frame larger than 16777216 bytes"),
    "too-deep": (b"\x94\x00\x01\xa4ping" + nest(64), "nesting deeper than 64"),  # 1 + 64 levels
    "params-not-array": (msgpack.packb([0, 1, "ping", {}]), "params must be an array"),
    "method-too-long": (msgpack.packb([0, 1, "m" * 101, []]), "longer than 100 bytes"),
    "negative-msgid": (msgpack.packb([0, -1, "ping", []]), "msgid must be an unsigned integer"),
    "unknown-type": (msgpack.packb([3, 1, "ping", []]), "malformed message"),
    "too-few-elements": (msgpack.packb([0, 1, "ping"]), "malformed message"),
    # A str must be UTF-8 in a notification (which cannot be answered) and in a response.
    "notification-bad-utf8": (b"\x93\x02\xa4note\x91\xa2\xff\xfe", "undecodable params"),
    "response-bad-utf8": (b"\x94\x01\x05\xc0\xa2\xff\xfe", "malformed message"),
}


@pytest.mark.parametrize("name", list(BAD_FRAMES))
def test_protocol_violation_closes_that_connection_only(daemon: DaemonProcess, name: str) -> None:
    data, reason = BAD_FRAMES[name]
    with RawConn(daemon.socket) as bystander, RawConn(daemon.socket) as offender:
        assert offender.call(1, "ping") == [1, 1, None, "pong"]
        offender.send_bytes(data)
        assert offender.read_to_close() == []
        assert bystander.call(1, "ping") == [1, 1, None, "pong"]
    assert served(daemon.socket)
    wait_for(lambda: "protocol violation, closing connection" in daemon.log_text())
    assert reason in daemon.log_text()


def test_nesting_of_exactly_64_is_served(daemon: DaemonProcess) -> None:
    with RawConn(daemon.socket) as conn:
        conn.send_bytes(b"\x94\x00\x01\xa4ping" + nest(63))  # 1 + 63 levels
        response = conn.recv()
        assert error_of(response) == (1, "invalid_params")  # judged by the method, not the framer


def test_client_hanging_up_mid_request_does_not_disturb_the_daemon(daemon: DaemonProcess) -> None:
    with RawConn(daemon.socket) as conn:
        start_slow_request(conn, 1)  # the daemon now waits on us
    with RawConn(daemon.socket) as conn:
        conn.send(*([0, i, "status", []] for i in range(500)))  # and leave without reading
    with RawConn(daemon.socket) as conn:
        conn.send_bytes(msgpack.packb([0, 1, "ping", []])[:-2])  # half a frame
    with daemon.client() as client:
        assert client.call("ping") == "pong"
        wait_for(lambda: client.call("status")["daemon"]["connections"] == 1, timeout=WAIT)
    assert daemon.proc is not None and daemon.proc.poll() is None
    log = daemon.log_text()
    assert '"event": "connection failed' not in log and '"event": "handler failed"' not in log


# back-pressure -----------------------------------------------------------------------


def send_until_stalled(sock: socket.socket, data: bytes, sent: int, patience: float) -> int:
    """Send from ``sent`` on until everything is out or the daemon stops reading for ``patience`` s."""
    while sent < len(data):
        try:
            sent += sock.send(data[sent : sent + 65536])
        except BlockingIOError:
            _, writable, _ = select.select([], [sock], [], patience)
            if not writable:
                break
    return sent


def test_client_that_never_reads_is_bounded_then_fully_answered(daemon: DaemonProcess) -> None:
    count = 40_000
    # hello answers are ~600 bytes, so unread answers fill the socket quickly.
    data = b"".join(msgpack.packb([0, i, "hello", [{"client": "hog" * 30}]]) for i in range(count))
    assert served(daemon.socket)
    before = rss_kib(daemon.pid)
    with RawConn(daemon.socket) as hog:
        hog.sock.setblocking(False)
        sent = send_until_stalled(hog.sock, data, 0, patience=2.0)
        # The daemon stopped reading: it holds a bounded number of requests, not all of them.
        assert sent < len(data)
        assert served(daemon.socket)
        grown = rss_kib(daemon.pid) - before
        assert grown < 64 * 1024, f"daemon grew by {grown} KiB for one client that does not read"

        # Now read: every request is answered exactly once.
        answered: set[int] = set()
        unpacker = msgpack.Unpacker(raw=False)
        deadline = time.monotonic() + 180
        while len(answered) < count:
            assert time.monotonic() < deadline, f"only {len(answered)} of {count} answered"
            want_write = [hog.sock] if sent < len(data) else []
            readable, writable, _ = select.select([hog.sock], want_write, [], 5)
            if readable:
                chunk = hog.sock.recv(1 << 20)
                if not chunk:
                    raise Closed(f"daemon closed after {len(answered)} answers")
                unpacker.feed(chunk)
                for kind, msgid, error, result in unpacker:
                    assert kind == 1 and error is None and result["server"] == "takod"
                    assert msgid not in answered
                    answered.add(msgid)
            if writable:
                sent = send_until_stalled(hog.sock, data, sent, patience=0)
    assert answered == set(range(count))
    assert served(daemon.socket)
