"""RpcError.from_wire reads every error shape a peer may send: ours, Neovim's, bare strings, bytes."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from takod.protocol import ERROR_FAILURE, ERROR_VALIDATION, RpcError, invalid
from tests.hypo import relaxed


def parsed(error: object) -> tuple[int, str, str]:
    err = RpcError.from_wire(error)
    return err.kind, err.code, err.message


@pytest.mark.parametrize(
    "wire, expected",
    [
        ([1, "no_method: frobnicate"], (1, "no_method", "frobnicate")),
        ([0, "shutting_down: takod is stopping"], (0, "shutting_down", "takod is stopping")),
        ([1, "invalid_params: ping: Object contains unknown field `x` - at `$`"],
         (1, "invalid_params", "ping: Object contains unknown field `x` - at `$`")),
        ((0, "timeout: status took longer than 30 s"), (0, "timeout", "status took longer than 30 s")),
        ([0, "e5108: lua error"], (0, "e5108", "lua error")),  # codes may hold digits
    ],
)
def test_our_shape(wire: object, expected: tuple[int, str, str]) -> None:
    assert parsed(wire) == expected


@pytest.mark.parametrize(
    "wire, expected",
    [
        # What Neovim sends: [type, msg] with Exception = 0, Validation = 1, free text.
        ([1, "Invalid method: takod_nope"], (1, "error", "Invalid method: takod_nope")),
        ([0, "Vim:E492: Not an editor command: Foo"], (0, "error", "Vim:E492: Not an editor command: Foo")),
        ([0, "Wrong type for argument 1 when calling nvim_buf_get_lines, expecting Buffer"],
         (0, "error", "Wrong type for argument 1 when calling nvim_buf_get_lines, expecting Buffer")),
    ],
)
def test_neovim_shape(wire: object, expected: tuple[int, str, str]) -> None:
    assert parsed(wire) == expected


@pytest.mark.parametrize(
    "wire, expected",
    [
        ("boom", (ERROR_FAILURE, "error", "boom")),
        ("not_found: no account 'alice'", (ERROR_FAILURE, "not_found", "no account 'alice'")),
        ("Not_Found: mixed case is not a code", (ERROR_FAILURE, "error", "Not_Found: mixed case is not a code")),
        (": empty code", (ERROR_FAILURE, "error", ": empty code")),
        ("no space:after colon", (ERROR_FAILURE, "error", "no space:after colon")),
        ("two: colons: here", (ERROR_FAILURE, "two", "colons: here")),
        ("1_2: digits and underscores", (ERROR_FAILURE, "1_2", "digits and underscores")),
        ("café: not ascii", (ERROR_FAILURE, "error", "café: not ascii")),  # codes are [a-z0-9_]+
        ("no²: superscript", (ERROR_FAILURE, "error", "no²: superscript")),
        ("has space: x", (ERROR_FAILURE, "error", "has space: x")),
        ("", (ERROR_FAILURE, "error", "")),
    ],
)
def test_bare_strings(wire: str, expected: tuple[int, str, str]) -> None:
    assert parsed(wire) == expected


@pytest.mark.parametrize(
    "wire, expected",
    [
        # msgpack bin, as a peer packing Python bytes sends it
        (b"cancelled: by you", (ERROR_FAILURE, "cancelled", "by you")),
        ([1, b"invalid_params: bad"], (1, "invalid_params", "bad")),
        ([0, b"Invalid \xff byte"], (0, "error", "Invalid \ufffd byte")),
    ],
)
def test_bytes(wire: object, expected: tuple[int, str, str]) -> None:
    assert parsed(wire) == expected


@pytest.mark.parametrize("wire", [{"message": "x"}, 42, None, [1, 2, 3], ["0", "x: y"], [0, {"a": 1}]])
def test_other_shapes_still_give_an_error_with_text(wire: object) -> None:
    kind, code, message = parsed(wire)
    assert code == "error" and message and kind in (ERROR_FAILURE, ERROR_VALIDATION)


def test_to_wire_round_trips_through_msgpack() -> None:
    for err in (RpcError("not_found", "no account 'alice'"), invalid("invalid_params", "bad: really")):
        wire = msgpack.unpackb(msgpack.packb(err.to_wire()))
        assert wire == [err.kind, f"{err.code}: {err.message}"]
        again = RpcError.from_wire(wire)
        assert (again.kind, again.code, again.message) == (err.kind, err.code, err.message)
        assert str(again) == str(err)


@settings(relaxed)
@given(
    code=st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True),
    message=st.text(max_size=50),
    kind=st.sampled_from([ERROR_FAILURE, ERROR_VALIDATION]),
)
def test_any_of_our_errors_round_trips(code: str, message: str, kind: int) -> None:
    err = RpcError.from_wire(RpcError(code, message, kind).to_wire())
    assert (err.kind, err.code, err.message) == (kind, code, message)


@settings(relaxed)
@given(st.text() | st.binary() | st.lists(st.integers() | st.text(), max_size=3))
def test_never_raises(wire: object) -> None:
    assert isinstance(RpcError.from_wire(wire), RpcError)
