"""MessagePack-RPC wire protocol shared by the takod client and daemon.

The stream is a bare sequence of msgpack arrays with no length prefix (Neovim
depends on that): request ``[0, msgid, method, params]``, response
``[1, msgid, error, result]``, notification ``[2, method, params]``.
msgspec has no streaming decoder, so :class:`FrameSplitter` finds message
boundaries with a resumable header scanner and hands whole frames to msgspec.

Errors are always ``[kind, "code: message"]`` with kind 0 (failure) or
1 (bad request / validation), the one shape Neovim, pynvim and our CLI read.

This module imports only the standard library and msgspec: the CLI loads it.
"""

from __future__ import annotations

from typing import Any

import msgspec

PROTOCOL_VERSION = 1

MAX_FRAME = 16 * 1024 * 1024
MAX_DEPTH = 64
MAX_METHOD_LEN = 100

ERROR_FAILURE = 0
ERROR_VALIDATION = 1

# Notification methods the daemon sends to clients.
EVENT_METHOD = "takod.event"
STREAM_METHOD = "takod.stream"
CANCEL_METHOD = "$/cancel"


class Request(msgspec.Struct, array_like=True, tag=0):
    """``[0, msgid, method, params]``. ``method`` may arrive as str or bin."""

    msgid: int
    method: Any
    params: msgspec.Raw


class Response(msgspec.Struct, array_like=True, tag=1):
    """``[1, msgid, error, result]``."""

    msgid: int
    error: Any
    result: Any


class Notification(msgspec.Struct, array_like=True, tag=2):
    """``[2, method, params]``."""

    method: Any
    params: msgspec.Raw


Message = Request | Response | Notification


# An error code is a stable snake_case word: [a-z0-9_]+ (ASCII only).
_CODE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


class ProtocolError(Exception):
    """The byte stream broke the wire contract; the connection must close."""


class RpcError(Exception):
    """An error that travels as ``[kind, "code: message"]``.

    ``code`` is a stable snake_case word clients may branch on; ``message`` is
    for people. ``kind`` is 0 for failures and 1 for bad requests.
    """

    def __init__(self, code: str, message: str, kind: int = ERROR_FAILURE):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.kind = kind

    def to_wire(self) -> list[Any]:
        return [self.kind, f"{self.code}: {self.message}"]

    @classmethod
    def from_wire(cls, error: Any) -> "RpcError":
        """Parse any error object a peer may send (ours, nvim's or a bare string)."""
        kind = ERROR_FAILURE
        text: Any = error
        if isinstance(error, (list, tuple)) and len(error) == 2 and isinstance(error[0], int):
            kind, text = error
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        if not isinstance(text, str):
            text = repr(text)
        code, sep, message = text.partition(": ")
        if not sep or not code or not _CODE_CHARS.issuperset(code):
            code, message = "error", text
        return cls(code, message, kind)


def invalid(code: str, message: str) -> RpcError:
    """A validation error (kind 1): the request itself was wrong."""
    return RpcError(code, message, ERROR_VALIDATION)


def method_name(raw: Any) -> str:
    """Normalise a method name sent as msgpack str or bin (pynvim sends bin)."""
    if isinstance(raw, (bytes, bytearray, memoryview)):
        raw = bytes(raw)
        if len(raw) > MAX_METHOD_LEN:
            raise ProtocolError("method name longer than 100 bytes")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("method name is not UTF-8") from None
    if isinstance(raw, str):
        if len(raw.encode("utf-8")) > MAX_METHOD_LEN:
            raise ProtocolError("method name longer than 100 bytes")
        return raw
    raise ProtocolError("method name must be str or bin")


def _is_array_header(b: int) -> bool:
    return 0x90 <= b <= 0x9F or b in (0xDC, 0xDD)


_envelope_decoder = msgspec.msgpack.Decoder(Message)
_raw_decoder = msgspec.msgpack.Decoder(msgspec.Raw)
_encoder = msgspec.msgpack.Encoder()


def decode_message(frame: bytes | memoryview) -> Message:
    """Decode one complete frame into a typed envelope, enforcing nvim's header rules."""
    try:
        msg = _envelope_decoder.decode(frame)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # msgspec raises the latter for a non-UTF-8 str
        raise ProtocolError(f"malformed message: {exc}") from None
    if isinstance(msg, (Request, Response)):
        if not isinstance(msg.msgid, int) or msg.msgid < 0 or msg.msgid > 0xFFFFFFFFFFFFFFFF:
            raise ProtocolError("msgid must be an unsigned integer")
    if isinstance(msg, (Request, Notification)):
        msg.method = method_name(msg.method)
        raw = bytes(msg.params)
        if not raw or not _is_array_header(raw[0]):
            raise ProtocolError("params must be an array")
    return msg


def encode(obj: Any) -> bytes:
    """Encode any wire value (Structs encode as their declared shape)."""
    return _encoder.encode(obj)


def encode_request(msgid: int, method: str, params: list[Any] | tuple[Any, ...]) -> bytes:
    return _encoder.encode((0, msgid, method, params))


def encode_response(msgid: int, error: Any, result: Any) -> bytes:
    return _encoder.encode((1, msgid, error, result))


def encode_notification(method: str, params: list[Any] | tuple[Any, ...]) -> bytes:
    return _encoder.encode((2, method, params))


class FrameSplitter:
    """Incremental splitter of a bare msgpack stream into whole top-level frames.

    It scans only msgpack headers (str/bin/ext payloads are skipped by length),
    keeps its place between feeds so a frame delivered in many pieces is never
    rescanned, and enforces the frame size and nesting limits as soon as a
    header declares something too large: a hostile peer cannot make it buffer
    more than ``max_frame`` bytes, plus at most the 4 length bytes of a header
    that starts just inside the limit. Every top-level frame must be an array.
    """

    def __init__(self, max_frame: int = MAX_FRAME, max_depth: int = MAX_DEPTH):
        self.max_frame = max_frame
        self.max_depth = max_depth
        self._buf = bytearray()
        self._pos = 0  # scan position inside the current (first) frame
        self._stack: list[int] = []  # items still owed at each open container level
        self._starved = False  # the last scan stopped for want of data, not of budget

    @property
    def buffered(self) -> int:
        return len(self._buf)

    @property
    def unscanned(self) -> int:
        """Bytes a ``feed()`` without new data could still scan (left by a ``max_scan``
        budget); 0 when the splitter waits for more data."""
        return 0 if self._starved else len(self._buf) - self._pos

    def feed(self, data: bytes | bytearray | memoryview = b"", max_scan: int | None = None) -> list[bytes]:
        """Add bytes; return every frame now complete, in order.

        With ``max_scan``, stop after starting items in about that many bytes
        (payloads are skipped by length and do not count) and leave the rest
        for a later ``feed()``: scanning costs about a microsecond per item,
        so a caller sharing an event loop can bound each call's work.

        Raises :class:`ProtocolError` on a limit violation or a byte that can
        never start a valid msgpack item; the stream is unusable afterwards.
        """
        if not self._buf and 0 < len(data) <= min(self.max_depth, self.max_frame) and _is_array_header(data[0]):
            # A whole small request (`status` is 11 bytes) in one read, the usual
            # case: msgspec checks it is exactly one item in C, ~10x faster than
            # the scan below. Each container takes at least a byte, so a frame
            # this short cannot break the nesting or size limits; anything else
            # (part of a frame, several, garbage) is left to the scan.
            try:
                _raw_decoder.decode(data)
            except msgspec.DecodeError:
                pass
            else:
                return [bytes(data)]
        if data:
            self._buf += data
            self._starved = False
        frames: list[bytes] = []
        stop = None if max_scan is None else self._pos + max_scan
        while len(self._buf) > self._pos:
            end = self._scan(stop)
            if end is None:
                break
            frames.append(bytes(self._buf[:end]))
            del self._buf[:end]
            self._pos = 0
            if stop is not None:
                stop -= end
        return frames

    def _scan(self, stop: int | None = None) -> int | None:
        """Advance over whole items (no item starting at or after ``stop``); return
        the frame's end offset, or None if incomplete or out of budget."""
        buf = self._buf
        n = len(buf)
        pos = self._pos
        stack = self._stack
        limit = self.max_frame
        if stop is None:
            stop = n
        if pos >= stop:
            return None
        if pos == 0 and not stack and not _is_array_header(buf[0]):
            raise ProtocolError(f"frame must be an array, got byte 0x{buf[0]:02x}")
        while True:
            if pos >= n or pos >= stop:
                self._pos = pos
                self._starved = pos >= n
                return None
            b = buf[pos]
            head = 1  # header bytes, including any length field
            size = 0  # payload bytes after the header
            children = 0  # nested items this header opens
            container = False  # an empty array or map still counts as a level
            if b <= 0x7F or b >= 0xE0 or b in (0xC0, 0xC2, 0xC3):
                pass
            elif b <= 0x8F:
                children, container = 2 * (b & 0x0F), True
            elif b <= 0x9F:
                children, container = b & 0x0F, True
            elif b <= 0xBF:
                size = b & 0x1F
            elif b in _FIXED:
                size = _FIXED[b]
            elif b in _LENGTH:
                head, what = _LENGTH[b]
                if pos + head > n:
                    self._pos = pos
                    self._starved = True
                    return None
                length = int.from_bytes(buf[pos + 1 : pos + head], "big")
                if what == "array":
                    children, container = length, True
                elif what == "map":
                    children, container = 2 * length, True
                elif what == "ext":
                    size = length + 1  # the ext type byte
                else:
                    size = length
            else:  # 0xC1 is never used
                raise ProtocolError(f"invalid msgpack byte 0x{b:02x}")
            end = pos + head + size
            # Each child needs at least one byte: refuse a frame that declares
            # more than the limit before buffering any of it.
            if end + children > limit:
                raise ProtocolError(f"frame larger than {limit} bytes")
            if end > n:
                self._pos = pos
                self._starved = True
                return None
            pos = end
            if stack:
                stack[-1] -= 1
            if container and len(stack) >= self.max_depth:
                raise ProtocolError(f"nesting deeper than {self.max_depth}")
            if children:
                stack.append(children)
            while stack and stack[-1] == 0:
                stack.pop()
            if not stack:
                self._pos = 0
                return pos


# Header byte -> payload size for fixed-size items (ints, floats, fixext + type byte).
_FIXED = {
    0xCA: 4, 0xCB: 8,
    0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8,
    0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8,
    0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17,
}
# Header byte -> (header size including the big-endian length, what the length counts).
_LENGTH = {
    0xC4: (2, "bytes"), 0xC5: (3, "bytes"), 0xC6: (5, "bytes"),
    0xD9: (2, "bytes"), 0xDA: (3, "bytes"), 0xDB: (5, "bytes"),
    0xC7: (2, "ext"), 0xC8: (3, "ext"), 0xC9: (5, "ext"),
    0xDC: (3, "array"), 0xDD: (5, "array"),
    0xDE: (3, "map"), 0xDF: (5, "map"),
}
