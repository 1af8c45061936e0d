"""Fuzz of the request decoder: every registered method's params, and the whole path from bytes.

Whatever a peer sends, the daemon's decoding raises only two things: a
ProtocolError (the connection closes) or an RpcError of kind 1 (an error
reply). Anything else would reach the connection's catch-all as a bug.
"""

from __future__ import annotations

import os

import msgpack
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from takod.protocol import ERROR_VALIDATION, FrameSplitter, ProtocolError, Request, RpcError, decode_message
from takod_daemon import methods  # noqa: F401  (registers every method)
from takod_daemon.api import registry
from takod_daemon.rpc import Method, decode_params
from tests.hypo import relaxed
from tests.unit.test_frame_splitter import values

METHODS = [registry.get(name) for name in registry.names()]


def field_names(method: Method) -> list[str]:
    return [f.encode_name for f in msgspec.structs.fields(method.params_type)]


def options_for(method: Method) -> st.SearchStrategy[dict]:
    """Maps mostly made of the method's own option names, with values of any type."""
    names = field_names(method)
    key = st.sampled_from(names) if names else st.text(max_size=8)
    return st.dictionaries(key | st.text(max_size=8), values, max_size=len(names) + 2)


def params_for(method: Method) -> st.SearchStrategy[list]:
    return st.one_of(
        st.just([]),
        st.builds(lambda o: [o], options_for(method)),
        st.lists(values, max_size=3),
        st.builds(lambda o, extra: [o, *extra], options_for(method), st.lists(values, min_size=1, max_size=2)),
    )


def decoded_or_rejected(method: Method, raw: bytes) -> None:
    try:
        params = decode_params(method, msgspec.Raw(raw))
    except RpcError as exc:
        assert (exc.kind, exc.code) == (ERROR_VALIDATION, "invalid_params"), exc
        return
    assert isinstance(params, method.params_type)


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
@settings(relaxed, max_examples=int(os.environ.get("TAKOD_FUZZ_EXAMPLES", 20)))
@given(data=st.data())
def test_any_params_decode_to_the_struct_or_an_invalid_params_reply(method: Method, data: st.DataObject) -> None:
    params = data.draw(params_for(method))
    decoded_or_rejected(method, msgpack.packb(params, use_bin_type=True))


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
@settings(relaxed, max_examples=int(os.environ.get("TAKOD_FUZZ_EXAMPLES", 12)))
@given(data=st.data(), flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=3))
def test_corrupted_params_decode_or_are_rejected(method: Method, data: st.DataObject, flips: list) -> None:
    raw = bytearray(msgpack.packb(data.draw(params_for(method)), use_bin_type=True))
    for pos, value in flips:
        raw[pos % len(raw)] = value
    frame = msgpack.packb([0, 1, method.name, []])[:-1] + bytes(raw)  # the corrupted array as params
    try:
        frames = FrameSplitter().feed(frame)
        if not frames:
            return  # corrupted into something incomplete: the splitter waits for more
        msg = decode_message(frames[0])
    except ProtocolError:
        return
    assert isinstance(msg, Request)
    decoded_or_rejected(method, bytes(msg.params))


@settings(relaxed, max_examples=300)
@given(data=st.binary(max_size=300), method=st.sampled_from(METHODS))
def test_random_bytes_after_a_request_header_never_escape_as_other_errors(data: bytes, method: Method) -> None:
    frame = msgpack.packb([0, 1, method.name, []])[:-1] + data
    try:
        for f in FrameSplitter(max_frame=4096).feed(frame):
            msg = decode_message(f)
            if isinstance(msg, Request) and registry.get(msg.method) is not None:
                decoded_or_rejected(registry.get(msg.method), bytes(msg.params))
    except ProtocolError:
        pass


@settings(relaxed, max_examples=200)
@given(stream=st.binary(max_size=600), cuts=st.lists(st.integers(0, 600), max_size=8))
def test_splitter_agrees_with_an_independent_unpacker(stream: bytes, cuts: list[int]) -> None:
    """Differential: every frame the splitter returns is exactly the next value msgpack-python reads."""
    splitter = FrameSplitter(max_frame=1 << 20, max_depth=64)
    points = sorted({c % (len(stream) + 1) for c in cuts})
    frames: list[bytes] = []
    try:
        for a, b in zip([0, *points], [*points, len(stream)]):
            frames += splitter.feed(stream[a:b])
    except ProtocolError:
        pass
    unpacker = msgpack.Unpacker(raw=True, strict_map_key=False, max_buffer_size=1 << 21)
    unpacker.feed(stream)
    offset = 0
    for frame in frames:
        value = unpacker.unpack()  # the oracle must accept what the splitter accepted, with the same length
        assert unpacker.tell() - offset == len(frame)
        assert stream[offset : offset + len(frame)] == frame
        assert isinstance(value, list)
        offset += len(frame)


def test_params_nested_to_the_limit_are_an_error_reply_not_a_crash() -> None:
    deep: object = []
    for _ in range(60):
        deep = [deep]
    for method in METHODS:
        decoded_or_rejected(method, msgpack.packb([{"workspace": deep}]))
        decoded_or_rejected(method, msgpack.packb([deep]))
