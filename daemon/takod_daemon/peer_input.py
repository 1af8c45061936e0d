"""Reading what a network peer answered: bounded, and decoded so that a bad body fails one way.

Token endpoints, login servers, Ollama and the model APIs are peers takod does
not control, and each may answer anything. Left to the libraries:

- JSON nested deeper than the interpreter's recursion limit (~1000 levels) makes
  msgspec raise ``RecursionError``, not ``DecodeError``, also when decoding into
  a typed Struct (a field the Struct ignores is skipped recursively);
- bytes that are not UTF-8 make it raise ``UnicodeDecodeError``;
- a UTF-8 BOM makes it refuse the body (RFC 8259 lets a parser ignore one);
- httpx's ``response.content`` and ``aiter_lines()`` buffer a body or a line
  of any size.

:func:`decode_json` raises only ``msgspec.DecodeError`` (:class:`TooDeep`, a
subclass, for the nesting; ``ValidationError`` for the wrong shape, as
always). :func:`fetch`, :func:`read_capped` and :func:`aiter_lines` raise
:class:`TooLarge` past their limits; :func:`read_body` cuts an error answer
short instead (enough of it to classify the error).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import httpx
import msgspec

from takod_daemon.credentials.files import strip_bom

MAX_ERROR_BODY = 64 * 1024  # bytes of an error answer read before giving up on the rest
MAX_BODY = 16 * 1024 * 1024  # bytes of a success answer (a model list, a token answer...)
MAX_LINE = 16 * 1024 * 1024  # bytes of one line of a streamed answer


class TooLarge(Exception):
    """A peer sent more than takod reads of one answer, line or event."""


class LineTooLong(TooLarge):
    def __init__(self, size: int):
        super().__init__(f"line of {size} bytes")
        self.size = size


class TooDeep(msgspec.DecodeError):
    """JSON nested deeper than the interpreter's recursion limit."""


def decode_json(data: bytes | str, type_: Any = object) -> Any:
    """``msgspec.json.decode(data, type=type_)`` (``type_`` may be a
    ``msgspec.json.Decoder``) for bytes a peer sent: a leading BOM is ignored,
    and every failure is a ``msgspec.DecodeError`` whose text quotes no content."""
    data = strip_bom(data) if isinstance(data, bytes) else data.removeprefix("\ufeff")
    try:
        if isinstance(type_, msgspec.json.Decoder):
            return type_.decode(data)
        return msgspec.json.decode(data, type=type_)
    except RecursionError:
        raise TooDeep("JSON is nested too deeply (over about 1000 levels)") from None
    except UnicodeDecodeError as exc:
        raise msgspec.DecodeError(f"JSON is not valid UTF-8 (byte {exc.start})") from None


# --- bodies -----------------------------------------------------------------------


async def _read(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes of the body, and whether there was more."""
    body = bytearray()
    async for piece in response.aiter_bytes():
        body += piece
        if len(body) > limit:
            return bytes(body[:limit]), True
    return bytes(body), False


async def read_body(response: httpx.Response, limit: int = MAX_ERROR_BODY) -> bytes:
    """Up to ``limit`` bytes of a streamed response's body (an error answer's,
    typically: a server must not make us buffer without end)."""
    return (await _read(response, limit))[0]


async def read_capped(response: httpx.Response, limit: int = MAX_BODY) -> bytes:
    """A streamed response's whole body; :class:`TooLarge` past ``limit`` bytes."""
    body, more = await _read(response, limit)
    if more:
        raise TooLarge(f"body of more than {limit} bytes")
    return body


class Answer(NamedTuple):
    """A response read by :func:`fetch` (the names are httpx.Response's)."""

    status_code: int
    headers: httpx.Headers
    content: bytes

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300


async def fetch(http: httpx.AsyncClient, method: str, url: str, *, limit: int = MAX_BODY, **kwargs: Any) -> Answer:
    """``http.request(method, url, **kwargs)`` with its body read within bounds:
    a success answer over ``limit`` bytes raises :class:`TooLarge`; an error
    answer is cut at ``MAX_ERROR_BODY`` bytes."""
    async with http.stream(method, url, **kwargs) as response:
        if response.is_success:
            content = await read_capped(response, limit)
        else:
            content = await read_body(response)
    return Answer(response.status_code, response.headers, content)


# --- lines ------------------------------------------------------------------------


class LineSplitter:
    """Cuts a byte stream into lines (newline removed) holding at most ``limit``
    bytes of an unfinished line. Past the limit it raises :class:`LineTooLong`,
    or, with ``truncate``, yields the first ``limit`` bytes and drops the rest
    of that line."""

    def __init__(self, limit: int, *, truncate: bool = False):
        self.limit = limit
        self.truncate = truncate
        self._buf = bytearray()
        self._skipping = False  # inside a truncated line: drop bytes until its newline

    def feed(self, data: bytes) -> list[bytes]:
        if self._skipping:
            newline = data.find(b"\n")
            if newline < 0:
                return []
            self._skipping = False
            data = data[newline + 1 :]
        self._buf += data
        lines: list[bytes] = []
        start = 0
        while (newline := self._buf.find(b"\n", start)) >= 0:
            line = bytes(self._buf[start:newline])
            start = newline + 1
            if len(line) > self.limit:
                if not self.truncate:
                    raise LineTooLong(len(line))
                line = line[: self.limit]
            lines.append(line)
        del self._buf[:start]
        if len(self._buf) > self.limit:
            if not self.truncate:
                raise LineTooLong(len(self._buf))
            lines.append(bytes(self._buf[: self.limit]))
            self._buf.clear()
            self._skipping = True
        return lines

    @property
    def pending(self) -> bytes:
        """The unfinished line so far."""
        return bytes(self._buf)

    @property
    def pending_size(self) -> int:
        return len(self._buf)

    def close(self) -> bytes | None:
        """End of stream: the last, unterminated line, if any."""
        rest, self._skipping = bytes(self._buf), False
        self._buf.clear()
        return rest or None


async def aiter_lines(response: httpx.Response, limit: int = MAX_LINE) -> AsyncIterator[bytes]:
    """The body's lines (LF-terminated, as NDJSON; a CR before the LF stays and
    is whitespace to JSON), each at most ``limit`` bytes: httpx's
    ``aiter_lines()`` would hold a line of any length."""
    splitter = LineSplitter(limit)
    async for piece in response.aiter_bytes():
        for line in splitter.feed(piece):
            yield line
    rest = splitter.close()
    if rest is not None:
        yield rest
