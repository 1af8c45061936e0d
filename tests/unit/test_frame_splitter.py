"""FrameSplitter and decode_message: the wire contract's first line of defence.

Frames are built with an independent encoder (msgpack-python) and, for the
wide header forms packers never choose (str32 of 3 bytes, array32 of 2 items),
by hand; the splitter must find the same boundaries however the bytes arrive.
"""

from __future__ import annotations

import struct

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from takod.protocol import (
    MAX_FRAME,
    FrameSplitter,
    Notification,
    ProtocolError,
    Request,
    Response,
    decode_message,
    encode_notification,
    encode_request,
    encode_response,
)
from tests.hypo import relaxed

# values -----------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, width=32)  # packable as 0xca and 0xcb alike
    | st.text(max_size=40) | st.text(min_size=250, max_size=300)
    | st.binary(max_size=40) | st.binary(min_size=250, max_size=300)
    | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=40))
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=20)
    | st.dictionaries(st.text(max_size=10) | st.integers(-1000, 1000), inner, max_size=8),
    max_leaves=25,
)
method_names = st.text(max_size=30) | st.binary(max_size=30)
msgids = st.integers(0, 2**32 - 1)

messages = st.one_of(
    st.tuples(st.just(0), msgids, method_names, st.lists(values, max_size=5)),
    st.tuples(st.just(1), msgids, st.none() | st.tuples(st.integers(0, 1), st.text()), values),
    st.tuples(st.just(2), method_names, st.lists(values, max_size=5)),
    st.lists(values, max_size=10),  # any array is a frame to the splitter
)


@st.composite
def packed(draw: st.DrawFn) -> bytes:
    # single floats exercise the 0xca header, doubles 0xcb
    return msgpack.packb(draw(messages), use_bin_type=True, use_single_float=draw(st.booleans()))


# Wide header forms: valid msgpack that encoders never emit for short payloads.
WIDE_ITEMS = [
    b"\xd9\x03abc", b"\xda\x00\x03abc", b"\xdb\x00\x00\x00\x03abc",  # str8/16/32
    b"\xc4\x02\x00\xff", b"\xc5\x00\x02\x00\xff", b"\xc6\x00\x00\x00\x02\x00\xff",  # bin8/16/32
    b"\xc7\x02\x05ab", b"\xc8\x00\x02\x05ab", b"\xc9\x00\x00\x00\x02\x05ab",  # ext8/16/32
    b"\xd4\x01a", b"\xd5\x01ab", b"\xd6\x01abcd", b"\xd7\x01" + b"x" * 8, b"\xd8\x01" + b"x" * 16,  # fixext
    b"\xdc\x00\x02\x01\x02", b"\xdd\x00\x00\x00\x02\x01\x02",  # array16/32
    b"\xde\x00\x01\x01\x02", b"\xdf\x00\x00\x00\x01\x01\x02",  # map16/32
    b"\xcc\xff", b"\xcd\xff\xff", b"\xce\xff\xff\xff\xff", b"\xcf" + b"\xff" * 8,  # uint8..64
    b"\xd0\x80", b"\xd1\x80\x00", b"\xd2\x80\x00\x00\x00", b"\xd3" + b"\x80" + b"\x00" * 7,  # int8..64
    b"\xca\x00\x00\x00\x00", b"\xcb" + b"\x00" * 8, b"\xc0", b"\xc2", b"\xc3", b"\x7f", b"\xe0",
]


@st.composite
def wide_frames(draw: st.DrawFn) -> bytes:
    items = draw(st.lists(st.sampled_from(WIDE_ITEMS), min_size=1, max_size=15))
    frame = struct.pack(">BH", 0xDC, len(items)) + b"".join(items)
    msgpack.unpackb(frame, strict_map_key=False)  # the oracle agrees it is valid (or raises)
    return frame


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


def feed_all(splitter: FrameSplitter, pieces: list[bytes]) -> list[bytes]:
    return [frame for piece in pieces for frame in splitter.feed(piece)]


# splitting --------------------------------------------------------------------


@settings(relaxed, max_examples=150)
@given(frames=st.lists(packed() | wide_frames(), min_size=1, max_size=8), cuts=st.lists(st.integers(0, 10**6), max_size=40))
def test_any_split_of_a_valid_stream_yields_the_same_frames_in_order(frames: list[bytes], cuts: list[int]) -> None:
    splitter = FrameSplitter()
    assert feed_all(splitter, split(b"".join(frames), cuts)) == frames
    assert splitter.buffered == 0


@settings(relaxed, max_examples=50)
@given(frames=st.lists(packed(), min_size=1, max_size=3))
def test_byte_by_byte_feeding_yields_the_same_frames(frames: list[bytes]) -> None:
    data = b"".join(frames)
    assert feed_all(FrameSplitter(), [data[i : i + 1] for i in range(len(data))]) == frames


def test_big_ints_floats_ext_and_nested_maps_round_trip() -> None:
    value = [0, 2**32 - 1, b"bin-method", [{"a": {"b": [2**64 - 1, -(2**63), 1.5, msgpack.ExtType(7, b"\x00" * 300)]}}]]
    frame = msgpack.packb(value, use_bin_type=True)
    splitter = FrameSplitter()
    assert splitter.feed(frame[:7]) == []
    assert splitter.feed(frame[7:] + frame) == [frame, frame]


@settings(relaxed, max_examples=500)
@given(data=st.binary(max_size=400), cuts=st.lists(st.integers(0, 1000), max_size=10))
def test_random_bytes_raise_only_protocol_error(data: bytes, cuts: list[int]) -> None:
    splitter = FrameSplitter(max_frame=256, max_depth=8)
    try:
        for frame in feed_all(splitter, split(data, cuts)):
            assert frame and data.find(frame) >= 0
            try:
                decode_message(frame)
            except ProtocolError:
                pass
    except ProtocolError:
        pass


@settings(relaxed, max_examples=300)
@given(data=st.binary(min_size=1, max_size=200))
def test_random_frames_decode_or_raise_protocol_error(data: bytes) -> None:
    frame = b"\x94" + data  # an array header, so it gets past the splitter's first check
    try:
        msg = decode_message(frame)
    except ProtocolError:
        return
    assert isinstance(msg, (Request, Response, Notification))


@settings(relaxed, max_examples=300)
@given(frame=packed(), flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=3))
def test_corrupted_messages_raise_only_protocol_error(frame: bytes, flips: list[tuple[int, int]]) -> None:
    data = bytearray(frame)
    for pos, value in flips:
        data[pos % len(data)] = value
    try:
        for corrupted in FrameSplitter(max_frame=4096).feed(bytes(data)):
            try:
                decode_message(corrupted)
            except ProtocolError:
                pass
    except ProtocolError:
        pass


# limits -----------------------------------------------------------------------


@settings(relaxed, max_examples=200)
@given(frame=packed() | wide_frames(), slack=st.integers(-40, 40))
def test_frame_size_limit_is_exact_and_enforced_before_buffering(frame: bytes, slack: int) -> None:
    limit = max(1, len(frame) + slack)
    splitter = FrameSplitter(max_frame=limit)
    if len(frame) <= limit:
        assert feed_all(splitter, [frame[i : i + 1] for i in range(len(frame))]) == [frame]
        return
    fed = 0
    with pytest.raises(ProtocolError, match="larger than"):
        for i in range(len(frame)):
            fed += 1
            splitter.feed(frame[i : i + 1])
    # A header is at most 5 bytes and is read in full before it is judged.
    assert fed <= limit + 5


@pytest.mark.parametrize(
    "header",
    [
        b"\xc6" + (MAX_FRAME).to_bytes(4, "big"),  # bin32
        b"\xdb" + (MAX_FRAME).to_bytes(4, "big"),  # str32
        b"\xc9" + (MAX_FRAME).to_bytes(4, "big") + b"\x01",  # ext32
        b"\xdd\xff\xff\xff\xff",  # array32 of 4 billion items
        b"\xdf\x80\x00\x00\x00",  # map32 of 2 billion pairs
    ],
)
def test_oversize_declaration_is_rejected_from_the_header_alone(header: bytes) -> None:
    splitter = FrameSplitter()
    assert splitter.feed(b"\x94\x00\x01") == []
    with pytest.raises(ProtocolError, match="larger than 16777216 bytes"):
        splitter.feed(header)


def test_frame_of_exactly_max_frame_is_accepted() -> None:
    head = b"\x91\xc6" + (MAX_FRAME - 6).to_bytes(4, "big")
    frame = head + b"\x00" * (MAX_FRAME - 6)
    assert len(frame) == MAX_FRAME
    assert FrameSplitter().feed(frame) == [frame]
    too_big = b"\x91\xc6" + (MAX_FRAME - 5).to_bytes(4, "big")
    with pytest.raises(ProtocolError):
        FrameSplitter().feed(too_big)


def nested(depth: int, innermost: bytes, wrap: bytes) -> bytes:
    """``depth`` containers, each holding the next; ``innermost`` is the deepest one."""
    return wrap * (depth - 1) + innermost


@pytest.mark.parametrize(
    "innermost, wrap",
    [
        (b"\x91\x01", b"\x91"),  # arrays, innermost non-empty
        (b"\x90", b"\x91"),  # arrays, innermost empty
        (b"\x80", b"\x91"),  # empty map inside arrays
        (b"\x81\x01\x02", b"\x92\x01"),  # a map as the last item of each array level
        (b"\xdc\x00\x00", b"\xdc\x00\x01"),  # array16 forms
    ],
)
@pytest.mark.parametrize("max_depth", [2, 3, 64])
def test_nesting_deeper_than_max_depth_is_rejected(innermost: bytes, wrap: bytes, max_depth: int) -> None:
    ok = nested(max_depth, innermost, wrap)
    assert FrameSplitter(max_depth=max_depth).feed(ok) == [ok]
    with pytest.raises(ProtocolError, match="nesting deeper"):
        FrameSplitter(max_depth=max_depth).feed(nested(max_depth + 1, innermost, wrap))


def test_default_depth_limit_is_64() -> None:
    FrameSplitter().feed(nested(64, b"\x90", b"\x91"))
    with pytest.raises(ProtocolError):
        FrameSplitter().feed(nested(65, b"\x90", b"\x91"))


@settings(relaxed)
@given(value=values.filter(lambda v: not isinstance(v, list)))
def test_non_array_top_level_is_rejected(value: object) -> None:
    with pytest.raises(ProtocolError, match="must be an array"):
        FrameSplitter().feed(msgpack.packb(value, use_bin_type=True))


def test_non_array_after_a_valid_frame_is_rejected() -> None:
    splitter = FrameSplitter()
    assert splitter.feed(b"\x91\x01") == [b"\x91\x01"]
    with pytest.raises(ProtocolError):
        splitter.feed(b"\xa1x")


@pytest.mark.parametrize("data", [b"\xc1", b"\x91\xc1", b"\x92\x01\xc1", b"\x81\xc1\x01"])
def test_never_used_byte_c1_is_rejected(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        FrameSplitter().feed(data)


# decode_message -----------------------------------------------------------------


def pack(value: object) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


@settings(relaxed)
@given(method=st.text(max_size=25), params=st.lists(values, max_size=3), msgid=msgids)
def test_request_method_as_str_or_bin(method: str, params: list, msgid: int) -> None:
    for wire_method in (method, method.encode()):
        msg = decode_message(pack([0, msgid, wire_method, params]))
        assert isinstance(msg, Request)
        assert (msg.msgid, msg.method) == (msgid, method)
        assert msgpack.unpackb(bytes(msg.params), strict_map_key=False) == msgpack.unpackb(pack(params), strict_map_key=False)


def test_notification_with_bin_method() -> None:
    msg = decode_message(pack([2, b"nvim_set_client_info", ["x", {}, "remote", {}, {}]]))
    assert isinstance(msg, Notification) and msg.method == "nvim_set_client_info"


def test_our_encoders_decode_to_the_same_envelopes() -> None:
    req = decode_message(encode_request(7, "ping", []))
    assert isinstance(req, Request) and (req.msgid, req.method, bytes(req.params)) == (7, "ping", b"\x90")
    resp = decode_message(encode_response(2**32 - 1, [1, "no_method: x"], None))
    assert isinstance(resp, Response) and (resp.msgid, resp.error, resp.result) == (2**32 - 1, [1, "no_method: x"], None)
    note = decode_message(encode_notification("takod.event", [1, 2, "daemon", {}]))
    assert isinstance(note, Notification) and note.method == "takod.event"


@pytest.mark.parametrize("kind", [0, 2])
def test_method_longer_than_100_bytes_is_rejected(kind: int) -> None:
    def frame(method: str | bytes) -> bytes:
        return pack([0, 1, method, []] if kind == 0 else [2, method, []])

    for ok in ("m" * 100, b"m" * 100, "é" * 50):
        decode_message(frame(ok))
    for bad in ("m" * 101, b"m" * 101, "é" * 51):  # bytes count, not characters
        with pytest.raises(ProtocolError, match="longer than 100"):
            decode_message(frame(bad))


@pytest.mark.parametrize("method", [b"\xff\xfe", 5, None, ["ping"], 1.5])
def test_method_of_wrong_type_or_encoding_is_rejected(method: object) -> None:
    with pytest.raises(ProtocolError):
        decode_message(pack([0, 1, method, []]))
    with pytest.raises(ProtocolError):
        decode_message(pack([2, method, []]))


@pytest.mark.parametrize(
    "frame",
    [
        b"\x94\x00\x01\xa2\xff\xfe\x90",  # request whose method str is not UTF-8
        b"\x93\x02\xa2\xff\xfe\x90",  # notification likewise
        b"\x94\x01\x01\x92\x00\xa2\xff\xfe\xc0",  # response whose error text is not UTF-8
        b"\x94\x01\x01\xc0\x81\xa1k\x91\xa1\xff",  # ... or a str deep in its result
    ],
)
def test_str_that_is_not_utf8_is_a_protocol_error(frame: bytes) -> None:
    assert FrameSplitter().feed(frame) == [frame]
    with pytest.raises(ProtocolError, match="malformed"):
        decode_message(frame)


@pytest.mark.parametrize("params", [{}, None, 5, "x", b"x", {"a": 1}])
def test_params_not_an_array_are_rejected(params: object) -> None:
    with pytest.raises(ProtocolError, match="params must be an array"):
        decode_message(pack([0, 1, "ping", params]))
    with pytest.raises(ProtocolError, match="params must be an array"):
        decode_message(pack([2, "ping", params]))


@pytest.mark.parametrize("msgid", [-1, -(2**63), 1.0, "1", None, True])
def test_msgid_must_be_an_unsigned_int(msgid: object) -> None:
    with pytest.raises(ProtocolError):
        decode_message(pack([0, msgid, "ping", []]))
    with pytest.raises(ProtocolError):
        decode_message(pack([1, msgid, None, "pong"]))


def test_largest_msgid_is_accepted() -> None:
    msg = decode_message(pack([0, 2**64 - 1, "ping", []]))
    assert isinstance(msg, Request) and msg.msgid == 2**64 - 1


@pytest.mark.parametrize(
    "message",
    [[3, 1, "ping", []], [-1, 1, "ping", []], [4, "x", []], ["0", 1, "ping", []], [None, 1, "ping", []], []],
)
def test_unknown_type_tag_is_rejected(message: list) -> None:
    with pytest.raises(ProtocolError):
        decode_message(pack(message))


@pytest.mark.parametrize("message", [[0, 1, "ping"], [0, 1], [1, 1, None], [2, "ping"], [2]])
def test_fewer_elements_than_the_type_needs_are_rejected(message: list) -> None:
    with pytest.raises(ProtocolError, match="malformed"):
        decode_message(pack(message))


def test_extra_trailing_elements_are_tolerated() -> None:
    # docs/PROTOCOL.md §2.1: takod ignores them (Neovim would not; senders must not rely on it).
    msg = decode_message(pack([0, 1, "ping", [], "extra"]))
    assert isinstance(msg, Request) and msg.method == "ping"


# scan budget --------------------------------------------------------------------


@settings(relaxed, max_examples=150)
@given(frames=st.lists(packed() | wide_frames(), min_size=1, max_size=8),
       cuts=st.lists(st.integers(0, 10**6), max_size=10), budget=st.integers(0, 64))
def test_a_scan_budget_yields_the_same_frames_and_never_spins(frames: list[bytes], cuts: list[int], budget: int) -> None:
    """What the daemon does: buffer a read unscanned, then scan it ``budget`` bytes at a time."""
    splitter = FrameSplitter()
    out: list[bytes] = []
    for piece in split(b"".join(frames), cuts):
        out += splitter.feed(piece, max_scan=0)
        while splitter.unscanned:
            before = (splitter.unscanned, len(out))
            out += splitter.feed(max_scan=max(budget, 1))
            assert (splitter.unscanned, len(out)) != before, "a budgeted feed made no progress"
    assert out == frames and splitter.buffered == 0


def test_a_partial_frame_waiting_for_data_has_nothing_unscanned() -> None:
    splitter = FrameSplitter()
    frame = msgpack.packb([0, 1, "ping", []])
    assert splitter.feed(frame[:-2], max_scan=1) == []
    while splitter.unscanned:
        assert splitter.feed(max_scan=1) == []
    assert splitter.buffered == len(frame) - 2  # waiting inside the method str
    out = splitter.feed(frame[-2:], max_scan=1)
    while splitter.unscanned:
        out += splitter.feed(max_scan=1)
    assert out == [frame]
