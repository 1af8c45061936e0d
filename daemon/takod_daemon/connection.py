"""One client connection: read frames, serve requests concurrently, write replies.

Structure (one task group per connection):
- the reader splits the byte stream into frames and dispatches them; each
  request runs in its own task and cancel scope, so replies go out as work
  finishes (pipelining) and ``$/cancel`` or a hang-up stops the work;
- one writer task owns the socket's send side, fed by a bounded queue: a
  client that does not read its replies fills the queue, handlers then wait,
  the outstanding-request semaphore runs out and the reader stops reading.
  Back-pressure all the way down, no unbounded buffers;
- one pump task per subscription moves events from its bounded queue to the
  writer, so publishers never wait on a slow client.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import anyio
import msgspec
import structlog
from anyio.abc import ByteStream

from takod.protocol import (
    CANCEL_METHOD,
    EVENT_METHOD,
    FrameSplitter,
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

from .events import Subscription
from .rpc import Call, decode_params

if TYPE_CHECKING:
    from .daemon import Daemon

log = structlog.get_logger("takod.conn")

MAX_OUTSTANDING = 1000  # requests in flight per connection before we stop reading
SEND_QUEUE = 128  # encoded frames waiting for the writer
READ_CHUNK = 256 * 1024


class Connection:
    def __init__(self, daemon: "Daemon", stream: ByteStream, conn_id: int, peer_pid: int | None):
        self.daemon = daemon
        self.stream = stream
        self.conn_id = conn_id
        self.peer_pid = peer_pid
        self.client_name: str | None = None
        self.workspace: str | None = None
        self.nvim_data: bool | None = None  # the peer Neovim accepts autocmd data (asked on first need)
        self._send, self._outbox = anyio.create_memory_object_stream[bytes](SEND_QUEUE)
        self._slots = anyio.Semaphore(MAX_OUTSTANDING)
        self._inflight: dict[int, anyio.CancelScope] = {}
        self._streams: dict[int, anyio.CancelScope] = {}  # stream_id -> its work, after the request
        self._cancel_reason: dict[int, RpcError] = {}
        self._subs: dict[int, Subscription] = {}
        self._calls: dict[int, list[Any]] = {}  # our own requests to the peer: [event, error, result]
        self._call_ids = itertools.count(1)
        self._tg: anyio.abc.TaskGroup | None = None
        self._closing = False
        self._delivering = 0  # pumps between taking events and queueing them

    # lifetime ---------------------------------------------------------------

    async def run(self) -> None:
        """Serve until the peer hangs up, breaks the protocol, or the daemon stops."""
        with structlog.contextvars.bound_contextvars(conn=self.conn_id, peer_pid=self.peer_pid):
            try:
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    tg.start_soon(self._writer)
                    await self._reader()
                    tg.cancel_scope.cancel()
            finally:
                for sub in self._subs.values():
                    self.daemon.bus.unsubscribe(sub)
                self._subs.clear()
                with anyio.move_on_after(1, shield=True):
                    await self.stream.aclose()
                log.debug("connection closed", client=self.client_name)

    async def close(self, reason: RpcError) -> None:
        """Stop serving: in-flight requests are answered with ``reason``, queued
        replies are flushed (briefly), then the socket closes."""
        self._closing = True
        for msgid, scope in list(self._inflight.items()):
            self._cancel_reason[msgid] = reason
            scope.cancel()
        with anyio.move_on_after(1):
            # Let answers and already-published events (e.g. "stopping") go out first.
            while self._inflight or self._delivering or any(sub.queue or sub.lost for sub in self._subs.values()):
                await anyio.sleep(0.01)
            await self._send.aclose()  # the writer drains what is queued, then ends
            while self._tg is not None and self._writer_running:
                await anyio.sleep(0.01)
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    # reading ----------------------------------------------------------------

    async def _reader(self) -> None:
        splitter = FrameSplitter()
        while True:
            try:
                data = await self.stream.receive(READ_CHUNK)
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                return
            try:
                for frame in splitter.feed(data):
                    await self._dispatch(decode_message(frame))
            except ProtocolError as exc:
                log.warning("protocol violation, closing connection", reason=str(exc))
                return
            if self._closing:
                return

    async def _dispatch(self, msg: Request | Response | Notification) -> None:
        if isinstance(msg, Request):
            await self._slots.acquire()  # back-pressure: stop reading until a slot frees
            assert self._tg is not None
            self._tg.start_soon(self._serve, msg)
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

    async def _serve(self, req: Request) -> None:
        error: Any = None
        result: Any = None
        method = self.daemon.registry.get(req.method)
        try:
            if method is None:
                raise RpcError("no_method", req.method, 1)
            params = decode_params(method, req.params)
            if not method.secret_params:
                log.debug("request", method=req.method, msgid=req.msgid)
            call = Call(self.daemon, self, req.msgid, req.method)
            with anyio.CancelScope() as scope:
                self._inflight[req.msgid] = scope
                with anyio.fail_after(method.timeout if method.timeout is not None else math.inf):
                    result = await method.handler(call, params)
            if scope.cancelled_caught:
                raise self._cancel_reason.pop(req.msgid, RpcError("cancelled", "request cancelled"))
        except RpcError as exc:
            error, result = exc.to_wire(), None
        except TimeoutError:
            error, result = RpcError("timeout", f"{req.method} took longer than {method.timeout} s").to_wire(), None
        except Exception:
            log.exception("handler failed", method=req.method)
            error, result = RpcError("internal", f"{req.method} failed unexpectedly; see the daemon log").to_wire(), None
        finally:
            self._inflight.pop(req.msgid, None)
            self._cancel_reason.pop(req.msgid, None)
        try:
            frame = encode_response(req.msgid, error, result)
        except (TypeError, msgspec.EncodeError):
            log.exception("result not encodable", method=req.method)
            frame = encode_response(req.msgid, RpcError("internal", "result not encodable").to_wire(), None)
        try:
            await self.send(frame)
        finally:
            self._slots.release()

    # writing ----------------------------------------------------------------

    _writer_running = False

    async def send(self, frame: bytes) -> None:
        """Queue one encoded frame; waits while the client is not reading."""
        try:
            await self._send.send(frame)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass  # the connection is closing; the peer will not see it

    async def notify(self, method: str, params: list[Any]) -> None:
        await self.send(encode_notification(method, params))

    async def _writer(self) -> None:
        self._writer_running = True
        try:
            async with self._outbox:
                async for frame in self._outbox:
                    batch = [frame]
                    while len(batch) < 64:
                        try:
                            batch.append(self._outbox.receive_nowait())
                        except (anyio.WouldBlock, anyio.EndOfStream):
                            break
                    await self.stream.send(b"".join(batch))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            assert self._tg is not None
            self._tg.cancel_scope.cancel()  # the peer is gone: stop reading and serving too
        finally:
            self._writer_running = False

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
                # g:takod_event works on every Neovim; autocmd `data` needs Neovim >= 0.8.
                await self.notify("nvim_set_var", ["takod_event", data])
                opts: dict[str, Any] = {"pattern": "TakodEvent", "modeline": False}
                if nvim_data:
                    opts["data"] = data
                await self.notify("nvim_exec_autocmds", ["User", opts])
            else:
                await self.notify(EVENT_METHOD, [sub.sub_id, seq, event.topic, event.payload])
