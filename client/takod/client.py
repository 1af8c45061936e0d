"""A synchronous takod client over the daemon's Unix socket.

    with Client() as c:
        status = c.call("status")
        for method, params in c.notifications(timeout=5): ...

If nothing listens and ``TAKOD_NO_SPAWN`` is unset, the client starts the
daemon itself (see :mod:`takod.autostart`). Before it sends a byte it checks
that the daemon is its user's own: the socket's directory is ours and 0700,
and the process listening is our uid (:class:`UntrustedSocket` otherwise).
Standard library and msgspec only.
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import time
from collections import deque
from pathlib import Path
from typing import Any, Iterator, TypeVar

import msgspec

from . import __version__
from .paths import check_private_dir, socket_is_explicit
from .paths import socket_path as default_socket_path
from .peercred import peer_of
from .protocol import (
    CANCEL_METHOD,
    STREAM_METHOD,
    ERROR_VALIDATION,
    FrameSplitter,
    Message,
    Notification,
    ProtocolError,
    Request,
    Response,
    RpcError,
    decode_message,
    encode_notification,
    encode_request,
    encode_response,
)

T = TypeVar("T")


class TakodError(Exception):
    """Base of every error this client raises."""


class ConnectError(TakodError):
    """The daemon could not be reached."""


class UntrustedSocket(ConnectError):
    """The socket's directory or the process listening on it is not this user's;
    nothing was sent to it (the message names the path and the owner)."""


class DaemonStartError(ConnectError):
    """The daemon was not running and could not be started; the message is the daemon's own."""


class CallTimeout(TakodError):
    """No response within the call's timeout."""


class ConnectionLost(TakodError):
    """The daemon closed the connection (it stopped, or refused us)."""


class RemoteError(TakodError):
    """The daemon answered with an error. ``code`` is a stable word to branch on."""

    def __init__(self, code: str, message: str, kind: int):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.kind = kind

    @property
    def is_bad_request(self) -> bool:
        return self.kind == ERROR_VALIDATION


_CONNECT_BACKOFF = [0.01 * 2**i for i in range(10)]  # ~10 s in total, Watchman's schedule


def _spawn_allowed() -> bool:
    return os.environ.get("TAKOD_NO_SPAWN", "") in ("", "0")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: os.fsdecode of bytes that are not UTF-8
        return False
    return True


class Client:
    """One connection to takod. Not thread-safe; use one per thread."""

    def __init__(
        self,
        socket_path: str | Path | None = None,
        *,
        spawn: bool | None = None,
        timeout: float = 30.0,
        workspace: str | Path | None = None,
        name: str = f"takod-python/{__version__}",
    ):
        self.socket_path = Path(socket_path) if socket_path else default_socket_path()
        # A path someone named (argument, --socket, TAKOD_SOCKET) must already have its
        # directory: a typo must not start a second daemon beside the real one.
        self.explicit_socket = bool(socket_path) or socket_is_explicit()
        self.spawn = _spawn_allowed() if spawn is None else spawn
        self.timeout = timeout
        self.workspace = str(workspace) if workspace else None
        if self.workspace and not _is_utf8(self.workspace):
            # Said before connecting: such a path cannot even be encoded into a request
            # (every other bad path is the daemon's to refuse, as invalid_params).
            raise TakodError(f"workspace is not valid UTF-8: {ascii(self.workspace)}; use a workspace whose path "
                             "is UTF-8 (set TAKO_WORKSPACE, or run from another directory)")
        self.name = name
        self.started_daemon = False
        self._sock: socket.socket | None = None
        self._splitter = FrameSplitter()
        self._ids = itertools.count(1)
        self._responses: dict[int, Response] = {}
        self._notifications: deque[tuple[str, Any]] = deque()
        self._hello_id: int | None = None

    # connection -------------------------------------------------------------

    def connect(self) -> "Client":
        """Connect (starting the daemon if allowed and needed) and say hello."""
        if self._sock is not None:
            return self
        self._check_directory()
        try:
            sock = self._connect_once()
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ECONNREFUSED):
                raise ConnectError(f"cannot connect to takod at {self.socket_path}: {exc.strerror}") from None
            if not self.spawn:
                raise ConnectError(
                    f"takod is not running (no daemon at {self.socket_path}); start it with `takod serve`"
                    " or unset TAKOD_NO_SPAWN to let clients start it"
                ) from None
            # Imported only here: it pulls in subprocess, which most CLI runs never need.
            from .autostart import StartFailed, spawn_daemon, start_service

            try:
                if not start_service(self.socket_path):
                    spawn_daemon(self.socket_path)
            except StartFailed as start:
                raise DaemonStartError(str(start)) from None
            self.started_daemon = True
            self._check_directory()
            sock = self._connect_with_backoff()
        self._sock = self._own_daemon(sock)
        # Pipelined: the hello answer is read together with the first call's.
        self._hello_id = self._send_request(
            "hello", {"client": self.name, **({"workspace": self.workspace} if self.workspace else {})}
        )
        return self

    def _check_directory(self) -> None:
        """Refuse a socket directory that is not ours and private (tmux's rule), and a
        named socket whose directory does not exist. A missing default directory is
        fine: the daemon we start creates it."""
        directory = self.socket_path.parent
        if not os.path.lexists(directory):
            if self.explicit_socket:
                raise ConnectError(
                    f"takod is not running at {self.socket_path}: its directory {directory} does not exist."
                    " Check --socket / TAKOD_SOCKET (takod never creates a directory you name and never starts"
                    f" a second daemon there); to use this path, create it first: mkdir -m 700 '{directory}'"
                )
            return
        problem = check_private_dir(directory)
        if problem is not None:
            raise UntrustedSocket(
                f"refusing to talk to takod at {self.socket_path}: socket directory {problem}; nothing was sent"
            )

    def _own_daemon(self, sock: socket.socket) -> socket.socket:
        """``sock`` if the process listening on it runs as our uid; else close it and refuse."""
        try:
            uid = peer_of(sock).uid
        except OSError as exc:
            sock.close()
            raise UntrustedSocket(
                f"refusing to talk to takod at {self.socket_path}: cannot tell who listens there ({exc}); nothing was sent"
            ) from None
        if uid != os.getuid():
            sock.close()
            raise UntrustedSocket(
                f"refusing to talk to takod at {self.socket_path}: the process listening there runs as uid {uid},"
                f" not as you (uid {os.getuid()}), so it is not your takod; nothing was sent."
                " Set TAKOD_SOCKET (or XDG_RUNTIME_DIR) to a path in a private directory of your own"
            )
        return sock

    def _connect_once(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(os.fsencode(self.socket_path))
        except BaseException:
            sock.close()
            raise
        return sock

    def _connect_with_backoff(self) -> socket.socket:
        last: OSError | None = None
        for delay in [0.0, *_CONNECT_BACKOFF]:
            time.sleep(delay)
            try:
                return self._connect_once()
            except OSError as exc:
                last = exc
        raise ConnectError(f"takod started but {self.socket_path} does not accept connections: {last}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> "Client":
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # calls --------------------------------------------------------------------

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        type: type[T] | None = None,
    ) -> Any:
        """Call ``method`` with an options map; return its result (converted to
        ``type`` if given) or raise :class:`RemoteError`."""
        msgid = self.send(method, params)
        return self.wait(msgid, timeout=timeout, type=type)

    def send(self, method: str, params: dict[str, Any] | None = None) -> int:
        """Send a request without waiting (pipelining); returns its msgid for :meth:`wait`."""
        self.connect()
        return self._send_request(method, params)

    def wait(self, msgid: int, *, timeout: float | None = None, type: type[T] | None = None) -> Any:
        """Wait for the response to ``msgid``; notifications arriving meanwhile are queued."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while msgid not in self._responses:
            self._read(deadline)
        self._check_hello()
        resp = self._responses.pop(msgid)
        if resp.error is not None:
            err = RpcError.from_wire(resp.error)
            raise RemoteError(err.code, err.message, err.kind)
        if type is not None:
            return msgspec.convert(resp.result, type)
        return resp.result

    def stream(
        self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> Iterator[tuple[str, Any]]:
        """Call a streaming method (e.g. ``infer`` with ``stream: True``): yield
        ``(kind, payload)`` for each ``takod.stream`` chunk of this call, then
        ``("result", result)``. Other notifications stay queued. Closing the
        generator early sends ``$/cancel`` so the daemon stops the work."""
        msgid = self.send(method, params)
        finished = False
        try:
            while True:
                for i, (name, args) in enumerate(self._notifications):
                    if name == STREAM_METHOD and len(args) == 4 and args[0] == msgid:
                        del self._notifications[i]
                        yield args[2], args[3]
                        break
                else:
                    if msgid in self._responses:
                        finished = True
                        yield "result", self.wait(msgid)
                        return
                    deadline = None if timeout is None else time.monotonic() + timeout
                    self._read(deadline)
        finally:
            if not finished and self._sock is not None:
                self.notify(CANCEL_METHOD, [msgid])

    def notify(self, method: str, params: list[Any] | None = None) -> None:
        """Send a notification (no response), e.g. ``$/cancel``."""
        self.connect()
        self._sendall(encode_notification(method, params or []))

    def notifications(self, timeout: float | None = None) -> Iterator[tuple[str, Any]]:
        """Yield ``(method, params)`` notifications as they arrive; stop after
        ``timeout`` seconds without one (None: wait forever)."""
        self.connect()
        while True:
            while self._notifications:
                yield self._notifications.popleft()
            deadline = None if timeout is None else time.monotonic() + timeout
            try:
                while not self._notifications:
                    self._read(deadline)
            except CallTimeout:
                return

    # internals ---------------------------------------------------------------

    def _check_hello(self) -> None:
        if self._hello_id is not None and self._hello_id in self._responses:
            resp = self._responses.pop(self._hello_id)
            self._hello_id = None
            if resp.error is not None:
                err = RpcError.from_wire(resp.error)
                raise RemoteError(err.code, err.message, err.kind)

    def _send_request(self, method: str, params: dict[str, Any] | None) -> int:
        msgid = next(self._ids) & 0xFFFFFFFF
        self._sendall(encode_request(msgid, method, [params] if params else []))
        return msgid

    def _sendall(self, frame: bytes) -> None:
        assert self._sock is not None
        try:
            self._sock.sendall(frame)
        except OSError as exc:
            self.close()
            raise ConnectionLost(f"connection to takod lost: {exc.strerror}") from None

    def _read(self, deadline: float | None) -> None:
        """Read at least one chunk and file away every complete message in it."""
        if self._sock is None:
            raise ConnectionLost("not connected")
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CallTimeout("takod did not answer in time")
            self._sock.settimeout(remaining)
        else:
            self._sock.settimeout(None)
        try:
            data = self._sock.recv(262144)
        except socket.timeout:
            raise CallTimeout("takod did not answer in time") from None
        except OSError as exc:
            self.close()
            raise ConnectionLost(f"connection to takod lost: {exc.strerror}") from None
        if not data:
            self.close()
            raise ConnectionLost("takod closed the connection")
        try:
            for msg in self._messages(data):
                if isinstance(msg, Response):
                    self._responses[msg.msgid] = msg
                elif isinstance(msg, Notification):
                    self._notifications.append((msg.method, msgspec.msgpack.decode(msg.params)))
                elif isinstance(msg, Request):
                    # We serve no methods; answer so the daemon does not wait.
                    self._sendall(encode_response(msg.msgid, [1, f"no_method: {msg.method}"], None))
        except (ProtocolError, msgspec.DecodeError, UnicodeDecodeError) as exc:
            self.close()
            raise ConnectionLost(f"takod sent something unreadable: {exc}") from None

    def _messages(self, data: bytes) -> list[Message]:
        """The messages that ``data`` completes, with what earlier reads left over."""
        if not self._splitter.buffered:
            # A reply to a sequential call usually arrives as exactly one whole
            # message in one read. msgspec then checks and decodes it in one pass
            # of C, where the splitter's pure-Python header scan alone costs ~40 µs
            # for a status reply. Anything else (part of a message, several of
            # them) msgspec rejects, and the splitter takes over. This skips the
            # splitter's nesting limit for such a message (msgspec's recursion
            # limit applies instead): fine for replies from our own daemon, and
            # the size limit still holds, as one recv is at most 256 KiB. The
            # daemon keeps every limit: it always splits.
            try:
                return [decode_message(data)]
            except (ProtocolError, RecursionError):
                pass
        return [decode_message(frame) for frame in self._splitter.feed(data)]
