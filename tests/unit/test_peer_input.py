"""takod_daemon.peer_input and the bounds built on it, without a socket: JSON
from a peer fails only as msgspec.DecodeError, bodies and lines are read within
their limits, the SSE parser refuses lines and events past its own, and a run's
answer is capped. tests/integration/test_hostile_peers.py feeds the same
through every real decoder over loopback HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import anyio
import httpx
import msgspec
import pytest

from takod_daemon.inference.sse import SSEParser
from takod_daemon.inference.types import Chunk, ProviderFailure, cap_answer
from takod_daemon.peer_input import (
    MAX_ERROR_BODY,
    LineTooLong,
    TooDeep,
    TooLarge,
    aiter_lines,
    decode_json,
    fetch,
    read_capped,
)
from takod_daemon.refresh.grants import MAX_LIFETIME_S, lifetime_ok


class Reply(msgspec.Struct):
    version: str = ""


DEEP = [
    b"[" * 100_000,  # truncated, too: the depth is hit first
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    b'{"ignored": ' + b"[" * 5000 + b"]" * 5000 + b', "version": "1"}',  # a Struct skips it recursively
]


@pytest.mark.parametrize("data", DEEP, ids=["open", "closed", "objects", "under_an_ignored_field"])
@pytest.mark.parametrize("type_", [object, Reply, msgspec.json.Decoder(Reply)], ids=["any", "struct", "decoder"])
def test_deep_nesting_is_a_decode_error_not_a_recursion_error(data: bytes, type_: object) -> None:
    with pytest.raises(msgspec.DecodeError) as raised:  # ValidationError (a DecodeError) when the shape is wrong first
        decode_json(data, type_)
    assert isinstance(raised.value, (TooDeep, msgspec.ValidationError))
    if type_ is object or data.startswith(b'{"ignored"'):
        assert isinstance(raised.value, TooDeep) and "nested too deeply" in str(raised.value)
    with pytest.raises(TooDeep):
        decode_json(data.decode())  # str input too


@pytest.mark.parametrize("data", [b'{"version": "\xff"}', b'\xff\xfe{\x00}\x00', b'"\xed\xa0\x80"'])
def test_bytes_that_are_not_utf8_are_a_decode_error_quoting_nothing(data: bytes) -> None:
    with pytest.raises(msgspec.DecodeError) as raised:
        decode_json(data, Reply)
    assert "\\x" not in str(raised.value) and "\ufffd" not in str(raised.value)


def test_a_bom_is_ignored_and_the_rest_decodes_as_always() -> None:
    assert decode_json(b'\xef\xbb\xbf{"version": "1"}', Reply) == Reply("1")
    assert decode_json('\ufeff{"version": "1"}', msgspec.json.Decoder(Reply)) == Reply("1")
    assert decode_json(b'[1, {"a": null}]') == [1, {"a": None}]
    with pytest.raises(msgspec.ValidationError):
        decode_json(b'{"version": 1}', Reply)
    with pytest.raises(msgspec.DecodeError):
        decode_json(b"\xef\xbb\xbf")


# --- bodies and lines --------------------------------------------------------------------


def serve(status: int, chunks: list[bytes]) -> httpx.AsyncClient:
    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body())

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def test_fetch_reads_a_success_answer_to_its_limit_and_cuts_an_error_answer() -> None:
    async def main() -> None:
        async with serve(200, [b"a" * 600, b"b" * 424]) as http:
            assert (await fetch(http, "GET", "http://peer/", limit=1024)).content == b"a" * 600 + b"b" * 424
            with pytest.raises(TooLarge, match="more than 1023 bytes"):
                await fetch(http, "GET", "http://peer/", limit=1023)
        async with serve(500, [b"e" * MAX_ERROR_BODY, b"more"]) as http:
            answer = await fetch(http, "GET", "http://peer/", limit=10)
            assert (answer.status_code, answer.is_success, len(answer.content)) == (500, False, MAX_ERROR_BODY)
        async with serve(200, [b"x" * 70_000]) as http, http.stream("GET", "http://peer/") as response:
            with pytest.raises(TooLarge):
                await read_capped(response, 65_536)

    anyio.run(main)


def test_lines_are_split_at_lf_and_bounded() -> None:
    async def lines(chunks: list[bytes], limit: int) -> list[bytes]:
        async with serve(200, chunks) as http, http.stream("GET", "http://peer/") as response:
            return [line async for line in aiter_lines(response, limit)]

    assert anyio.run(lines, [b'{"a"', b': 1}\r\n{"b": 2}\n', b"tail"], 64) == [b'{"a": 1}\r', b'{"b": 2}', b"tail"]
    assert anyio.run(lines, [b"x" * 64 + b"\n"], 64) == [b"x" * 64]
    with pytest.raises(LineTooLong):
        anyio.run(lines, [b"x" * 40 for _ in range(3)], 64)  # no line end: refused once past the limit


# --- server-sent events --------------------------------------------------------------------


def test_sse_lines_and_events_are_bounded() -> None:
    parser = SSEParser(max_line=100, max_event=250)
    assert parser.feed("data: " + "a" * 94 + "\n\n")[0].data == "a" * 94
    with pytest.raises(LineTooLong):
        SSEParser(max_line=100).feed("data: " + "a" * 95 + "\n")
    many = SSEParser(max_line=100)
    for _ in range(10):
        assert many.feed("x" * 10) == []  # held as pieces, not yet too long
    with pytest.raises(LineTooLong):
        many.feed("x")
    event = SSEParser(max_line=100, max_event=250)
    for _ in range(3):
        event.feed("data: " + "d" * 80 + "\n")
    with pytest.raises(TooLarge, match="event of more than 250"):
        event.feed("data: " + "d" * 10 + "\n")


def test_sse_pieces_without_line_ends_join_up() -> None:
    def pieces() -> Iterator[str]:
        yield from ["da", "ta: he", "llo\r", "\ndata: ", "wor", "ld\r\r"]

    parser = SSEParser()
    events = [e for piece in pieces() for e in parser.feed(piece)]
    assert [e.data for e in events] == ["hello\nworld"]


# --- answers and lifetimes -------------------------------------------------------------------


def test_a_runs_answer_is_capped() -> None:
    got: list[Chunk] = []

    async def emit(chunk: Chunk) -> None:
        got.append(chunk)

    async def main() -> None:
        capped = cap_answer(emit, "peer", limit=10)
        await capped(Chunk("thinking", "12345"))
        await capped(Chunk("text", "67890"))
        with pytest.raises(ProviderFailure) as failed:
            await capped(Chunk("text", "!"))
        assert (failed.value.kind, failed.value.message) == ("crashed", "peer answered more than 10 characters")

    anyio.run(main)
    assert "".join(c.text for c in got) == "1234567890"


@pytest.mark.parametrize("seconds", [None, 0.0, -1.0, float("inf"), float("nan"), 1e308, MAX_LIFETIME_S + 1.0])
def test_token_lifetimes_that_are_not_usable(seconds: float | None) -> None:
    assert not lifetime_ok(seconds)


def test_token_lifetimes_that_are() -> None:
    assert lifetime_ok(0.5) and lifetime_ok(3600) and lifetime_ok(MAX_LIFETIME_S)
