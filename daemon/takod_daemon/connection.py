"""One client connection: frames in, replies out, over an asyncio Transport.

Why a Transport and not an anyio byte stream: a ``status`` round trip should
cost little more than the least a Python msgpack-rpc server can do
(bench/rpc.py). With a Protocol the socket stays registered with the event
loop (no epoll add/remove per read), bytes arrive in a callback, and replies go
straight to ``transport.write``: no reader or writer task, no queue between
them, no wake-ups.

Reading. Every connection of a daemon reads into one buffer shared by all (a
BufferedProtocol: ``recv_into``), because a plain Protocol gets a fresh
256 KiB ``bytes`` per read, which glibc may serve with mmap + mremap +
munmap, three syscalls and ~10 µs per request (bench/rpc.py saw it happen
to the echo server). Sharing is safe: asyncio calls ``buffer_updated`` right
after each read on the one event-loop thread, and the splitter copies the
bytes before it returns. The drain splits the byte stream into frames and
dispatches them in order, at most SCAN_SLICE bytes split and BATCH frames
dispatched per event-loop pass, so one client cannot hold the loop for long
(splitting costs about a microsecond per msgpack item: 16 MiB of one-byte
items would be seconds in one go). Bytes not yet split, and frames split but
not yet dispatched, wait; reading pauses meanwhile: it never holds more than
one read.

Serving. Inline methods (see rpc.py: plain ``def`` handlers, or an async
method's fast path when it can answer from warm state) are answered during
dispatch, and the replies of one pass leave in one write. Every other request
runs in its own task in the connection's task group, under a cancel scope
carrying the method's time limit: ``$/cancel``, ``close`` (shutdown, with a
reason) and a hang-up (the group is cancelled) really stop the work. The task
group also holds subscription pumps, background streams and nested calls to
the peer.

Back-pressure, never unbounded buffers:
- the transport calls ``pause_writing`` when more than its high-water mark
  (64 KiB) of output is unsent: dispatching and reading stop, and tasks wait
  in :meth:`send` until ``resume_writing``. A client that never reads its
  replies costs bounded memory and, once stalled, no CPU;
- MAX_OUTSTANDING requests running in tasks: reading stops until one finishes.
Each subscription has its own bounded queue, drained by its pump through
:meth:`send`, so publishers never wait on a slow client.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import socket
from collections import deque
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import anyio
import msgspec
import structlog

from takod.protocol import (
    CANCEL_METHOD,
    EVENT_METHOD,
    FrameSplitter,
    Message,
    Notification,
    ProtocolError,
    Request,
    RpcError,
    decode_message,
    encode_notification,
    encode_request,
    encode_response,
)

from .events import Subscription
from .rpc import SLOW, Call, Method, decode_params

if TYPE_CHECKING:
    from .daemon import Daemon

log = structlog.get_logger("takod.conn")

READ_SIZE = 256 * 1024  # bytes per read: asyncio's own default for a plain Protocol
MAX_OUTSTANDING = 1000  # requests running in tasks per connection before we stop reading
BATCH = 64  # frames dispatched per event-loop pass, before other connections get their turn
SCAN_SLICE = 8 * 1024  # bytes split per event-loop pass: ~2 ms at worst (stress/readers.py measures it)


# One notification per event, so g:var and the autocmd can never be split by another event.
_SCHEDULED_AUTOCMD = (
    "local var, data, opts = ...\n"
    "vim.schedule(function() vim.g[var] = data; vim.api.nvim_exec_autocmds('User', opts) end)"
)


class Connection(asyncio.BufferedProtocol):
    """One client. The asyncio Protocol callbacks run on the event loop outside
    any task and never wait; everything that awaits runs in :meth:`run`'s task group."""

    def __init__(self, daemon: "Daemon", sock: socket.socket, conn_id: int, peer_pid: int | None):
        self.daemon = daemon
        self.conn_id = conn_id
        self.peer_pid = peer_pid
        self.client_name: str | None = None
        self.workspace: str | None = None
        self.nvim_data: bool | None = None  # the peer Neovim accepts autocmd data (asked on first need)
        self._sock = sock  # the transport owns it once run() has started
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: asyncio.Transport | None = None
        # Resolved once: through the lazy proxy each call costs ~0.5 µs, even when debug is off.
        self._log_debug = log.bind().debug
        self._read_buffer = daemon.read_buffer  # one per daemon (so per event loop): see "Reading" above
        self._splitter = FrameSplitter()
        self._backlog: deque[bytes] = deque()  # frames split, not dispatched yet
        self._drain_scheduled = False
        self._write_resumed: anyio.Event | None = None  # set by resume_writing; None while writes flow
        self._outstanding = 0  # requests running in tasks, until their reply is written
        self._inflight: dict[int, anyio.CancelScope] = {}
        self._streams: dict[int, anyio.CancelScope] = {}  # stream_id -> its work, after the request
        self._cancel_reason: dict[int, RpcError] = {}
        self._subs: dict[int, Subscription] = {}
        self._calls: dict[int, list[Any]] = {}  # our own requests to the peer: [event, error, result]
        self._call_ids = itertools.count(1)
        self._tg: anyio.abc.TaskGroup | None = None
        self._closing = False  # dispatch nothing more
        self._done = anyio.Event()  # the peer hung up or broke the protocol, or close() has finished
        self._delivering = 0  # pumps between taking events and writing them

    # lifetime ---------------------------------------------------------------

    async def run(self) -> None:
        """Serve until the peer hangs up, breaks the protocol, or the daemon stops."""
        with structlog.contextvars.bound_contextvars(conn=self.conn_id, peer_pid=self.peer_pid):
            try:
                async with anyio.create_task_group() as tg:
                    self._tg = tg  # before the transport exists: buffer_updated may start tasks at once
                    # The protocol callbacks run in a copy of this context: their log lines carry conn too.
                    await asyncio.get_running_loop().connect_accepted_socket(lambda: self, self._sock)
                    await self._done.wait()
                    tg.cancel_scope.cancel()  # in-flight work, pumps and streams stop with the connection
            finally:
                self._hang_up()  # a drain still scheduled must not start tasks in the finished group
                for sub in self._subs.values():
                    self.daemon.bus.unsubscribe(sub)
                self._subs.clear()
                # close() has given queued output its time; a peer that is gone or not reading gets no more.
                if self._transport is not None:
                    self._transport.abort()
                else:
                    self._sock.close()
                log.debug("connection closed", client=self.client_name)

    async def close(self, reason: RpcError) -> None:
        """Stop serving: read nothing more, answer in-flight requests with
        ``reason``, give queued replies and events about a second to go out,
        then drop the connection."""
        self._closing = True
        if self._transport is not None:
            self._transport.pause_reading()
        for msgid, scope in list(self._inflight.items()):
            self._cancel_reason[msgid] = reason
            scope.cancel()
        with anyio.move_on_after(1):
            while self._sending():
                await anyio.sleep(0.01)
        self._done.set()

    def _sending(self) -> bool:
        """Whether replies or already-published events (e.g. "stopping") are still on their way out."""
        if self._done.is_set():
            return False
        transport = self._transport
        return bool(
            self._outstanding
            or self._delivering
            or any(sub.queue or sub.lost for sub in self._subs.values())
            or (transport is not None and transport.get_write_buffer_size())
        )

    # asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports have every asyncio.Transport method without subclassing it.
        self._transport = transport  # type: ignore[assignment]
        self._loop = asyncio.get_running_loop()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        if self._closing:
            return
        # Buffered here (a small whole request comes back split at once): _drain splits
        # the rest a slice at a time. Reading pauses until it is all split.
        try:
            self._backlog.extend(self._splitter.feed(self._read_buffer[:nbytes], max_scan=0))
        except ProtocolError as exc:
            self._violation(exc)
            return
        self._drain()

    def eof_received(self) -> None:
        self._hang_up()  # a peer that stops sending has hung up: its requests are not answered

    def connection_lost(self, exc: Exception | None) -> None:
        self._hang_up()

    def pause_writing(self) -> None:
        self._write_resumed = anyio.Event()

    def resume_writing(self) -> None:
        if self._write_resumed is not None:
            self._write_resumed.set()
            self._write_resumed = None
        self._schedule_drain()

    def _hang_up(self) -> None:
        self._closing = True
        self._backlog.clear()
        self._done.set()

    def _violation(self, exc: ProtocolError) -> None:
        log.warning("protocol violation, closing connection", reason=str(exc))
        self._hang_up()
        assert self._transport is not None
        self._transport.abort()  # at once: the peer learns it now, and unsent replies are dropped

    # reading ----------------------------------------------------------------

    def _stalled(self) -> bool:
        """Whether dispatching (and so reading) must wait."""
        return self._closing or self._write_resumed is not None or self._outstanding >= MAX_OUTSTANDING

    def _schedule_drain(self) -> None:
        """Go on with the backlog, and with reading, on the next event-loop pass."""
        if not self._drain_scheduled and self._loop is not None:
            self._drain_scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        """Dispatch backlogged frames; then read on, unless something holds us back."""
        self._drain_scheduled = False
        transport = self._transport
        assert transport is not None
        replies: list[bytes] = []  # inline answers of this pass, written together
        budget = BATCH
        split = False  # one slice per pass
        try:
            while budget and not self._stalled():
                if not self._backlog:
                    if split or not self._splitter.unscanned:
                        break
                    self._backlog.extend(self._splitter.feed(max_scan=SCAN_SLICE))
                    split = True
                    continue
                budget -= 1
                self._dispatch(decode_message(self._backlog.popleft()), replies)
        except ProtocolError as exc:
            self._violation(exc)
            return
        if replies and not transport.is_closing():
            transport.write(b"".join(replies))  # may call pause_writing: checked just below
        pending = bool(self._backlog or self._splitter.unscanned)
        if pending or self._stalled():
            transport.pause_reading()
            if pending and not self._stalled():
                self._schedule_drain()  # out of budget: continue after the loop's other callbacks
            # else whatever stalls us schedules the drain when it clears
        else:
            transport.resume_reading()

    def _dispatch(self, msg: Message, replies: list[bytes]) -> None:
        if isinstance(msg, Request):
            self._request(msg, replies)
        elif isinstance(msg, Notification):
            try:
                params = msgspec.msgpack.decode(msg.params)
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # no reply can say so: close
                raise ProtocolError(f"notification {msg.method!r} has undecodable params: {exc}") from None
            self._notification(msg.method, params)
        else:
            pending = self._calls.pop(msg.msgid, None)
            if pending is None:
                log.debug("response to unknown request ignored", msgid=msg.msgid)
                return
            pending[1], pending[2] = msg.error, msg.result
            pending[0].set()

    def _notification(self, method: str, params: list[Any]) -> None:
        if method == CANCEL_METHOD and params and isinstance(params[0], int) and params[0] in self._streams:
            self._streams[params[0]].cancel()  # a stream that outlived its request (stream: "async")
        elif method == CANCEL_METHOD:
            if params and isinstance(params[0], int) and params[0] in self._inflight:
                self._cancel_reason[params[0]] = RpcError("cancelled", "request cancelled by the client")
                self._inflight[params[0]].cancel()
        elif method == "nvim_set_client_info":
            name = params[0] if params else None
            if isinstance(name, bytes):
                name = name.decode("utf-8", "replace")
            self.client_name = str(name)[:100] if name is not None else None
            log.info("client identified", client=self.client_name)
        elif method == "nvim_error_event":
            # Neovim's reply to a notification it could not run (e.g. an autocmd handler error).
            log.warning("editor reported an error", error=str(params[-1] if params else "")[:500])
        else:
            log.debug("unknown notification ignored", method=method)

    # serving ----------------------------------------------------------------

    def _request(self, req: Request, replies: list[bytes]) -> None:
        """Answer ``req`` inline if its method can, else start its task."""
        call = Call(self.daemon, self, req.msgid, req.method)
        method = self.daemon.registry.get(req.method)
        try:
            if method is None:
                raise RpcError("no_method", req.method, 1)
            params = decode_params(method, req.params)
            if not method.secret_params:
                self._log_debug("request", method=req.method, msgid=req.msgid)
            if method.inline is not None:
                result = method.inline(call, params)
                if result is not SLOW:
                    replies.append(self._response(call, None, result))
                    return
        except Exception as exc:
            replies.append(self._response(call, self._error(call, method, exc), None))
            return
        # Registered now, not when the task first runs, so that a $/cancel
        # right behind the request in the same read finds it.
        timeout = math.inf if method.timeout is None else method.timeout
        scope = anyio.CancelScope(deadline=anyio.current_time() + timeout)
        self._inflight[req.msgid] = scope
        self._outstanding += 1
        assert self._tg is not None
        self._tg.start_soon(self._serve, call, method, params, scope)

    async def _serve(self, call: Call, method: Method, params: Any, scope: anyio.CancelScope) -> None:
        """A request that may wait, in its own task; its slot is freed once the reply is written."""
        error: Any = None
        result: Any = None
        try:
            try:
                assert method.handler is not None, f"inline-only method {call.method} returned SLOW"
                with scope:
                    result = await method.handler(call, params)
                if scope.cancelled_caught:
                    # $/cancel and close() leave a reason; without one, the time limit struck.
                    raise self._cancel_reason.pop(call.msgid, None) or RpcError(
                        "timeout", f"{call.method} took longer than {method.timeout} s"
                    )
            except Exception as exc:
                error, result = self._error(call, method, exc), None
            finally:
                if self._inflight.get(call.msgid) is scope:
                    del self._inflight[call.msgid]
                self._cancel_reason.pop(call.msgid, None)
            await self.send(self._response(call, error, result))
        finally:
            self._outstanding -= 1
            if self._outstanding == MAX_OUTSTANDING - 1:
                self._schedule_drain()  # a slot is free again: dispatch and read on

    def _error(self, call: Call, method: Method | None, exc: Exception) -> list[Any]:
        """The wire error for a request that raised ``exc``; a bug is logged, never sent."""
        if isinstance(exc, RpcError):
            return exc.to_wire()
        if isinstance(exc, TimeoutError):  # a time limit of the handler's own
            timeout = method.timeout if method is not None else None
            return RpcError("timeout", f"{call.method} took longer than {timeout} s").to_wire()
        log.exception("handler failed", method=call.method)
        return RpcError("internal", f"{call.method} failed unexpectedly; see the daemon log").to_wire()

    def _response(self, call: Call, error: Any, result: Any) -> bytes:
        try:
            return encode_response(call.msgid, error, result)
        except (TypeError, msgspec.EncodeError):
            log.exception("result not encodable", method=call.method)
            return encode_response(call.msgid, RpcError("internal", "result not encodable").to_wire(), None)

    # writing ----------------------------------------------------------------

    async def send(self, frame: bytes) -> None:
        """Write one encoded frame; waits while the client is not reading.
        Dropped once the connection is going away: the peer would not see it."""
        while self._write_resumed is not None:
            await self._write_resumed.wait()
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(frame)

    async def notify(self, method: str, params: list[Any]) -> None:
        await self.send(encode_notification(method, params))

    async def notify_autocmd(self, var: str, pattern: str, data: dict[str, Any], with_data: bool) -> None:
        """Fire ``User pattern`` in the peer Neovim, ``g:var`` set to ``data`` first.

        Scheduled on Neovim's main loop (``vim.schedule``), never run where it
        arrives: Neovim runs what arrives while it waits in ``rpcrequest()``
        inside that wait, so a handler's own ``rpcrequest`` would nest in it, and
        Neovim (before 0.10) closes the channel when the outer reply comes
        first ("returned a response with an unknown request id"). No rule on
        our side can prevent that (a request can cross the event in flight);
        the main loop runs handlers only once no ``rpcrequest`` is waiting."""
        opts: dict[str, Any] = {"pattern": pattern, "modeline": False}
        if with_data:  # autocmd `data` needs Neovim >= 0.8; g:var works on every version
            opts["data"] = data
        await self.send(encode_notification("nvim_exec_lua", [_SCHEDULED_AUTOCMD, [var, data, opts]]))

    # background streams ----------------------------------------------------------

    def start_stream(self, stream_id: int, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work`` after the current request's answer, for as long as the
        connection lives; ``$/cancel [stream_id]`` or a hang-up stops it."""
        scope = anyio.CancelScope()
        self._streams[stream_id] = scope

        async def run() -> None:
            try:
                with scope:
                    await work()
            finally:
                if self._streams.get(stream_id) is scope:
                    del self._streams[stream_id]

        assert self._tg is not None
        self._tg.start_soon(run)

    # calls to the peer (e.g. asking a Neovim which API it has) --------------

    async def call(self, method: str, params: list[Any], timeout: float) -> Any:
        """Send a request to the peer and wait for its response."""
        msgid = next(self._call_ids) & 0xFFFFFFFF
        pending: list[Any] = [anyio.Event(), None, None]
        self._calls[msgid] = pending
        try:
            await self.send(encode_request(msgid, method, params))
            with anyio.fail_after(timeout):
                await pending[0].wait()
        finally:
            self._calls.pop(msgid, None)
        if pending[1] is not None:
            raise RpcError.from_wire(pending[1])
        return pending[2]

    # subscriptions ------------------------------------------------------------

    @property
    def subscription_count(self) -> int:
        return len(self._subs)

    def add_subscription(self, sub: Subscription, nvim_data: bool) -> None:
        self._subs[sub.sub_id] = sub
        assert self._tg is not None
        self._tg.start_soon(self._pump, sub, nvim_data)

    def remove_subscription(self, sub_id: int) -> bool:
        sub = self._subs.pop(sub_id, None)
        if sub is None:
            return False
        self.daemon.bus.unsubscribe(sub)
        return True

    async def _pump(self, sub: Subscription, nvim_data: bool) -> None:
        while not sub.closed:
            await sub.wakeup.wait()
            self._delivering += 1
            try:
                await self._deliver(sub, nvim_data)
            finally:
                self._delivering -= 1

    async def _deliver(self, sub: Subscription, nvim_data: bool) -> None:
        for event in sub.take():
            seq = sub.next_seq()
            if sub.deliver == "autocmd":
                data = {"sub_id": sub.sub_id, "seq": seq, "topic": event.topic, "payload": event.payload}
                await self.notify_autocmd("takod_event", "TakodEvent", data, nvim_data)
            else:
                await self.notify(EVENT_METHOD, [sub.sub_id, seq, event.topic, event.payload])
