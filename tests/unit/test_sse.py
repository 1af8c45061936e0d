"""The incremental SSE parser against the WHATWG event-stream rules, and its
chunking invariance (any split of a stream gives the same events)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from takod_daemon.inference.sse import SSEEvent, SSEParser


def parse(text: str) -> list[SSEEvent]:
    parser = SSEParser()
    events = parser.feed(text)
    parser.close()
    return events


def parse_lines(lines: list[str]) -> list[SSEEvent]:
    parser = SSEParser()
    out = [event for line in lines if (event := parser.feed_line(line)) is not None]
    parser.close()
    return out


# --- the standard's rules, one by one -------------------------------------------


def test_event_data_and_id_fields() -> None:
    assert parse("event: add\ndata: 73857293\nid: 7\n\n") == [SSEEvent("add", "73857293", "7")]


def test_event_type_defaults_to_message() -> None:
    assert parse("data: hi\n\n") == [SSEEvent("message", "hi", "")]


def test_multi_line_data_joins_with_lf() -> None:
    assert parse("data: YHOO\ndata: +2\ndata: 10\n\n") == [SSEEvent("message", "YHOO\n+2\n10")]


def test_comments_are_ignored() -> None:
    assert parse(": keep-alive\n:\ndata: x\n: more\n\n") == [SSEEvent("message", "x")]


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"])
def test_every_line_ending(eol: str) -> None:
    text = f"event: a{eol}data: 1{eol}{eol}data: 2{eol}{eol}"
    assert parse(text) == [SSEEvent("a", "1"), SSEEvent("message", "2")]


def test_mixed_line_endings() -> None:
    assert parse("data: a\r\ndata: b\rdata: c\n\r\n") == [SSEEvent("message", "a\nb\nc")]


def test_only_one_leading_space_is_dropped() -> None:
    assert parse("data:  two spaces\ndata:none\n\n") == [SSEEvent("message", " two spaces\nnone")]


def test_field_without_colon_has_empty_value() -> None:
    # "data" alone appends an empty line; two of them make one LF.
    assert parse("data\ndata\n\n") == [SSEEvent("message", "\n")]
    assert parse("data\n\n") == [SSEEvent("message", "")]


def test_empty_data_buffer_dispatches_nothing_and_resets_event_type() -> None:
    assert parse("event: lost\n\ndata: x\n\n") == [SSEEvent("message", "x")]
    assert parse("id: 1\n\n") == []


def test_id_persists_across_events_and_nul_ids_are_ignored() -> None:
    events = parse("id: 1\ndata: a\n\ndata: b\n\nid: 2\0x\ndata: c\n\nid\ndata: d\n\n")
    assert [(e.data, e.id) for e in events] == [("a", "1"), ("b", "1"), ("c", "1"), ("d", "")]


def test_retry_takes_only_digits() -> None:
    parser = SSEParser()
    parser.feed("retry: 1500\n\nretry: 2x\n\nretry: -1\n\n")
    assert parser.retry == 1500


def test_unknown_fields_are_ignored() -> None:
    assert parse("foo: bar\ndata: x\nDATA: y\n\n") == [SSEEvent("message", "x")]


def test_colon_in_value_is_kept() -> None:
    assert parse('data: {"a": "b:c"}\n\n') == [SSEEvent("message", '{"a": "b:c"}')]


def test_leading_bom_is_dropped_once() -> None:
    assert parse("\ufeffdata: x\n\n") == [SSEEvent("message", "x")]
    # Only at the very start: a BOM later makes an unknown field name.
    assert parse("data: x\n\n\ufeffdata: y\n\n") == [SSEEvent("message", "x")]


def test_unterminated_event_at_end_of_stream_is_discarded() -> None:
    parser = SSEParser()
    assert parser.feed("data: done\n\ndata: partial") == [SSEEvent("message", "done")]
    assert parser.feed("\n") == []  # a line, but not yet the blank one
    parser.close()
    assert parser.feed("\n") == []  # close dropped the pending event


def test_crlf_split_across_chunks_is_one_line_ending() -> None:
    parser = SSEParser()
    assert parser.feed("data: a\r") == []
    assert parser.feed("\n") == []  # the LF belongs to the CR: not an empty line
    assert parser.feed("\r") == [SSEEvent("message", "a")]
    assert parser.feed("\ndata: b\n\n") == [SSEEvent("message", "b")]


def test_lone_cr_then_lf_in_next_chunk_after_a_pause() -> None:
    parser = SSEParser()
    assert parser.feed("data: a\r") == []
    assert parser.feed("") == []  # an empty read keeps the pending CR
    assert parser.feed("\n\n") == [SSEEvent("message", "a")]


def test_feed_line_matches_feed() -> None:
    text = "event: e\r\ndata: 1\r\n\r\n: c\r\ndata: 2\r\nid: 9\r\n\r\n"
    lines = text.replace("\r\n", "\n").split("\n")
    assert parse_lines(lines) == parse(text) == [SSEEvent("e", "1"), SSEEvent("message", "2", "9")]


def test_real_provider_streams() -> None:
    anthropic = (
        'event: message_start\ndata: {"type":"message_start"}\n\n'
        'event: ping\ndata: {"type": "ping"}\n\n'
        'event: content_block_delta\ndata: {"type":"content_block_delta","delta":{"text":"Hi"}}\n\n'
    )
    assert [e.event for e in parse(anthropic)] == ["message_start", "ping", "content_block_delta"]
    openai = 'data: {"choices":[]}\n\ndata: [DONE]\n\n'
    assert [e.data for e in parse(openai)] == ['{"choices":[]}', "[DONE]"]
    gemini = 'data: {"candidates":[]}\r\n\r\ndata: {"candidates":[1]}\r\n\r\n'
    assert [e.data for e in parse(gemini)] == ['{"candidates":[]}', '{"candidates":[1]}']


# --- any chunking gives the same events ------------------------------------------

_value = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n\0"), max_size=20
)
_event = st.tuples(
    st.one_of(st.none(), st.text(alphabet="abcdefghijklmnopqrstuvwxyz._", min_size=1, max_size=12)),
    st.lists(_value, min_size=1, max_size=4),
    st.one_of(st.none(), st.text(alphabet="0123456789abc", max_size=6)),
)


def _serialise(events: list[tuple[str | None, list[str], str | None]], eols: list[str], comments: bool) -> str:
    out: list[str] = []
    k = 0

    def line(text: str) -> None:
        nonlocal k
        eol = eols[k % len(eols)]
        if not text and eol == "\n" and out and out[-1].endswith("\r"):
            eol = "\r"  # CR then an empty LF line would read as one CRLF ending
        out.append(text + eol)
        k += 1

    for name, data, event_id in events:
        if comments:
            line(": comment")
        if name is not None:
            line(f"event: {name}")
        for piece in data:
            line(f"data: {piece}")
        if event_id is not None:
            line(f"id: {event_id}")
        line("")
    return "".join(out)


def _expected(events: list[tuple[str | None, list[str], str | None]]) -> list[SSEEvent]:
    expected, last_id = [], ""
    for name, data, event_id in events:
        if event_id is not None:
            last_id = event_id
        expected.append(SSEEvent(name or "message", "\n".join(data), last_id))
    return expected


def _chunked(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts})
    bounds = [0, *points, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:])]


@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(_event, max_size=6),
    eols=st.lists(st.sampled_from(["\n", "\r\n", "\r"]), min_size=1, max_size=4),
    comments=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
)
def test_any_chunking_gives_the_serialised_events(
    events: list[tuple[str | None, list[str], str | None]], eols: list[str], comments: bool, cuts: list[int]
) -> None:
    text = _serialise(events, eols, comments)
    parser = SSEParser()
    got = [event for chunk in _chunked(text, cuts) for event in parser.feed(chunk)]
    assert got == _expected(events)


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet=st.sampled_from(list("ab: \r\n\ufeffdatevnir0")), max_size=80),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=20),
)
def test_any_text_parses_the_same_whole_or_chunked(text: str, cuts: list[int]) -> None:
    whole = SSEParser().feed(text)
    parser = SSEParser()
    chunked = [event for chunk in _chunked(text, cuts) for event in parser.feed(chunk)]
    assert chunked == whole


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("ab: \r\ndatevni")), max_size=80))
def test_lines_split_like_an_http_client_parse_the_same(text: str) -> None:
    # httpx's aiter_lines() splits on CRLF, CR and LF and drops the endings.
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")[:-1]
    assert parse_lines(lines) == SSEParser().feed(text)
