"""A bare msgpack-rpc peer for tests: a socket plus msgpack-python, none of our own code.

It sends whatever bytes a test wants (valid or not) and decodes what comes
back with an independent decoder, so the daemon is judged by what it puts on
the wire.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any, Callable

import msgpack

WAIT = 20.0  # bound on any single wait; only stops a broken daemon from hanging the suite


class Closed(Exception):
    """The daemon closed the connection."""


class RawConn:
    def __init__(self, path: Path | str, timeout: float = WAIT):
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(os.fsencode(path))
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "RawConn":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # sending ------------------------------------------------------------------

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, *messages: Any) -> None:
        """Pack each message (bytes as msgpack bin, like pynvim) and send them in one write."""
        self.send_bytes(b"".join(msgpack.packb(m, use_bin_type=True) for m in messages))

    def request(self, msgid: int, method: str | bytes, *params: Any) -> None:
        self.send([0, msgid, method, list(params)])

    def notify(self, method: str | bytes, *params: Any) -> None:
        self.send([2, method, list(params)])

    def respond(self, msgid: int, error: Any, result: Any) -> None:
        self.send([1, msgid, error, result])

    # receiving ----------------------------------------------------------------

    def recv(self, timeout: float | None = None) -> Any:
        """The next message; raises Closed at EOF and TimeoutError after ``timeout``."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            for msg in self.unpacker:
                return msg
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no message from the daemon in time")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError("no message from the daemon in time") from None
            except ConnectionResetError:
                data = b""
            if not data:
                raise Closed()
            self.unpacker.feed(data)

    def recv_until(self, match: Callable[[Any], bool], timeout: float | None = None) -> tuple[Any, list[Any]]:
        """Read until a message matches; returns it and everything read before it."""
        before: list[Any] = []
        while True:
            msg = self.recv(timeout)
            if match(msg):
                return msg, before
            before.append(msg)

    def response(self, msgid: int, timeout: float | None = None) -> list[Any]:
        """The response ``[1, msgid, error, result]`` (other messages are skipped)."""
        msg, _ = self.recv_until(lambda m: m[0] == 1 and m[1] == msgid, timeout)
        return msg

    def call(self, msgid: int, method: str | bytes, *params: Any) -> list[Any]:
        self.request(msgid, method, *params)
        return self.response(msgid)

    def read_to_close(self, timeout: float | None = None) -> list[Any]:
        """Everything the daemon sends until it closes the connection."""
        received: list[Any] = []
        try:
            while True:
                received.append(self.recv(timeout))
        except Closed:
            return received


def error_of(response: list[Any]) -> tuple[int, str]:
    """``(kind, code)`` of an error response."""
    error = response[2]
    assert isinstance(error, list) and len(error) == 2, f"not our error shape: {response!r}"
    kind, text = error
    return kind, text.partition(": ")[0]


def start_slow_request(conn: RawConn, msgid: int) -> int:
    """Send a request the daemon cannot finish until we answer its nested call; returns that call's id.

    ``subscribe`` with ``deliver="autocmd"`` first asks the peer (normally a
    Neovim) which version it is, and waits for the answer.
    """
    conn.request(msgid, "subscribe", {"topics": ["daemon"], "deliver": "autocmd"})
    nested = conn.recv()
    assert nested[0] == 0 and nested[2] == "nvim_call_function", nested
    assert nested[3] == ["has", ["nvim-0.8"]]
    return nested[1]


def served(path: Path | str) -> bool:
    """Whether a fresh connection to ``path`` gets its ping answered."""
    with RawConn(path) as conn:
        return conn.call(1, "ping") == [1, 1, None, "pong"]
