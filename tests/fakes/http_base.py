"""The loopback HTTP plumbing every fake server in tests/fakes shares.

A fake subclasses :class:`LoopbackServer` (start and stop, context manager,
``port`` and ``origin``, clients that went away mid-answer in ``disconnects``) and
gives ``__init__`` its request handler, a :class:`FakeHandler` subclass that
reaches the fake as ``self.fake`` and has the request and answer pieces the
fakes all need. The server is a threaded stdlib HTTP server on
``127.0.0.1:<port>``; while it runs, ``fake._server`` is that
``ThreadingHTTPServer`` (bench/relay.py sets options on its socket).

Hostile answers, for every fake: :meth:`LoopbackServer.answer_with` makes the
fake send a :class:`Canned` answer (any status, headers and bytes, whole or as
chunks: deeply nested JSON, non-UTF-8, a stream turning bad midway, tens of
MiB) instead of its own, for the requests whose path ends with ``path``; the
fake still records each request first. A handler calls
:meth:`FakeHandler.send_canned` where its own answer would begin.
"""

from __future__ import annotations

import json
import select
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Generic, Self, TypeVar


@dataclass(frozen=True)
class Canned:
    """An answer a fake sends instead of its own. ``body`` bytes go whole, with
    a Content-Length; a callable's chunks go one HTTP chunk each (a stream)."""

    body: bytes | Callable[[], Iterable[bytes]]
    status: int = 200
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


class LoopbackServer:
    """One fake's server: see the module docstring. Subclasses may share
    ``_lock`` (a plain lock for their own state)."""

    def __init__(self, handler: type[FakeHandler[Any]]) -> None:
        self.port = 0
        self.disconnects: list[str] = []  # paths of the answers a client went away from
        self._handler = handler
        self._lock = threading.Lock()
        self._disconnected = threading.Condition(self._lock)
        self._released = threading.Event()  # set at stop: ends hangs, stalls and slow answers
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._canned: list[tuple[str, Canned, int | None]] = []  # (path suffix, answer, times left)
        self.canned_sent = 0  # canned answers sent whole (a client that hung up is not counted)

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        """Listen on a free port and serve in a background thread."""
        self._listen(0)
        return self

    def stop(self) -> None:
        """End every waiting answer, stop serving and close the port."""
        self._released.set()
        if self._server is not None:
            self._close_listener()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _listen(self, port: int) -> None:
        server = _Server(("127.0.0.1", port), self._handler, self)
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def _close_listener(self) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._server = self._thread = None

    def answer_with(self, answer: Canned | None, *, path: str = "", times: int | None = None) -> None:
        """Answer requests whose path (without the query) ends with ``path`` with
        ``answer`` (the next ``times`` of them, or all); None: the fake's own answers again."""
        with self._lock:
            self._canned = [] if answer is None else [*self._canned, (path, answer, times)]

    def take_canned(self, path: str) -> Canned | None:
        """The canned answer for a request to ``path``, if any (counting it down)."""
        with self._lock:
            for i, (suffix, answer, times) in enumerate(self._canned):
                if path.split("?", 1)[0].endswith(suffix):
                    if times is not None:
                        self._canned[i] = (suffix, answer, times - 1)
                        self._canned = [c for c in self._canned if c[2] != 0]
                    return answer
        return None

    def wait_released(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True if the server is stopping."""
        return self._released.wait(seconds)

    def note_disconnect(self, path: str) -> None:
        with self._disconnected:
            self.disconnects.append(path)
            self._disconnected.notify_all()

    def wait_disconnect(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until a client went away mid-answer."""
        with self._disconnected:
            return self._disconnected.wait_for(lambda: bool(self.disconnects), timeout)


class _Server(ThreadingHTTPServer):
    def __init__(self, address: tuple[str, int], handler: type[FakeHandler[Any]], fake: LoopbackServer) -> None:
        self.fake = fake
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out or hang up mid-answer are part of the tests.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


FakeT = TypeVar("FakeT", bound=LoopbackServer)


class FakeHandler(BaseHTTPRequestHandler, Generic[FakeT]):
    """The request handler of a fake (``self.fake``): HTTP/1.1 (keep-alive,
    chunked answers), no request log."""

    protocol_version = "HTTP/1.1"

    @property
    def fake(self) -> FakeT:
        server: Any = self.server
        return server.fake

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    # --- request ---

    def read_body(self) -> bytes:
        """The request body as sent, framed by ``Transfer-Encoding: chunked`` or
        ``Content-Length`` (none: empty)."""
        if "chunked" not in (self.headers.get("Transfer-Encoding") or "").lower():
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""
        raw = bytearray()
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            raw += self.rfile.read(size)
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass  # trailers
        return bytes(raw)

    # --- whole answers ---

    def send_body(self, status: int, body: bytes, content_type: str, headers: Mapping[str, str] | None = None) -> None:
        """A whole answer with its ``Content-Length`` (headers only for ``HEAD``)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status: int, value: Any, headers: Mapping[str, str] | None = None) -> None:
        self.send_body(status, json.dumps(value).encode(), "application/json; charset=utf-8", headers)

    def send_canned(self, before: Callable[[Canned], None] | None = None) -> bool:
        """Send the fake's canned answer for this request, if it has one (see
        :meth:`LoopbackServer.answer_with`), calling ``before`` with it first;
        False when it has none."""
        answer = self.fake.take_canned(self.path)
        if answer is None:
            return False
        if before is not None:
            before(answer)
        self.close_connection = True  # a client may stop reading a hostile answer midway
        try:
            self.send_response(answer.status)
            self.send_header("Connection", "close")  # so no client sends its next request on it
            self.send_header("Content-Type", answer.content_type)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            if isinstance(answer.body, bytes):
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                view = memoryview(answer.body)
                for start in range(0, len(view), 1 << 20):
                    self.wfile.write(view[start : start + (1 << 20)])
            else:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for chunk in answer.body():
                    if chunk and not self.write_chunk(chunk):
                        return True
                if not self.write_chunk(b""):
                    return True
            self.wfile.flush()
        except OSError:
            self.gone()
            return True
        with self.fake._lock:
            self.fake.canned_sent += 1
        return True

    # --- streamed answers and clients that go away ---

    def start_chunked(self, content_type: str, headers: Mapping[str, str] | None = None) -> bool:
        """Answer 200 with a chunked body to follow (:meth:`write_chunk`); False,
        the disconnect noted, if the client is gone."""
        try:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
        except OSError:
            self.gone()
            return False
        return True

    def write_chunk(self, data: bytes) -> bool:
        """Write one HTTP chunk (empty: the end of the body); False, the
        disconnect noted, if the client is gone."""
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
            return True
        except OSError:
            self.gone()
            return False

    def gone(self) -> None:
        """The client went away mid-answer: note it and drop the connection."""
        self.close_connection = True
        self.fake.note_disconnect(self.path)

    def client_gone(self, timeout: float = 0.0) -> bool:
        """Watch the connection up to ``timeout`` seconds; True as soon as the
        client closed its end (a peek reads end-of-file). Bytes the client sends
        meanwhile (a pipelined request) are left unread."""
        deadline = time.monotonic() + timeout
        try:
            readable, _, _ = select.select([self.connection], [], [], timeout)
            if readable and self.connection.recv(1, socket.MSG_PEEK) == b"":
                return True
        except OSError:
            return True
        if readable:  # not closed, only more to read: wait out the time without spinning
            time.sleep(max(0.0, deadline - time.monotonic()))
        return False

    def wait(self, seconds: float | None) -> bool:
        """Wait ``seconds`` (None: until the server stops); False if the client
        went away (noted) or the server is stopping meanwhile."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while not self.fake.wait_released(0):
            step = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
            if step <= 0:
                return True
            if self.client_gone(step):
                self.gone()
                return False
        return False
