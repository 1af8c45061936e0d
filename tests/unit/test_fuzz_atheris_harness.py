"""The checks of stress/fuzz_atheris.py, without atheris: they pass on valid traffic and
random input, the reference splitter draws the limits where the contract does, and a
planted bug is a finding. Only the comparison with atheris's own input reader needs atheris.
"""

from __future__ import annotations

import importlib.util
import random
import sys
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from takod.protocol import FrameSplitter, ProtocolError
from tests.harness import REPO
from tests.hypo import relaxed

_spec = importlib.util.spec_from_file_location("fuzz_atheris", REPO / "stress" / "fuzz_atheris.py")
assert _spec is not None and _spec.loader is not None
harness = importlib.util.module_from_spec(_spec)
sys.modules["fuzz_atheris"] = harness
_spec.loader.exec_module(harness)

WHOLE = (0, 0, 255, 0, 1) + (0,) * harness.N_CHUNKS  # the daemon's limits, one piece
DEEPEST = b"\x94\x00\x01\xa4ping" + b"\x91" * 62 + b"\x90"  # 64 levels: the daemon's limit


def checked(stream: bytes, plan_bytes: tuple[int, ...] = WHOLE) -> Counter[str]:
    return harness.check_input(*harness.read_input(harness.TailReader(harness.make_input(stream, plan_bytes))))


def test_every_seed_passes_and_reaches_every_layer() -> None:
    reached: Counter[str] = Counter()
    for data in harness.seed_inputs():
        reached += harness.check_input(*harness.read_input(harness.TailReader(data)))
    for outcome in ("frames", "params_ok", "params_invalid", "notification", "response", "stream_refused"):
        assert reached[outcome] > 0, (outcome, reached)


@settings(relaxed, max_examples=200)
@given(data=st.binary(max_size=400))
def test_random_inputs_raise_no_finding(data: bytes) -> None:
    harness.check_input(*harness.read_input(harness.TailReader(data)))


@pytest.mark.parametrize(
    "stream, max_frame, max_depth, expected",
    [
        (b"\x91\x91\x90", 8, 3, ([b"\x91\x91\x90"], "complete")),
        (b"\x91\x91\x91\x90", 8, 3, ([], "error")),  # one level too deep
        (b"\x92\xa2ab\x01", 5, 8, ([b"\x92\xa2ab\x01"], "complete")),  # exactly the frame limit
        (b"\x92\xa3abc\x01", 5, 8, ([], "error")),
        (b"\x92\xa2ab", 5, 8, ([], "incomplete")),  # the last item is still owed
        (b"\x90\xdc\xff\xff", 64, 8, ([b"\x90"], "error")),  # declares 65535 items: refused before they come
        (b"\x90\x91\xc6\x00\x00\x10\x00", 64, 8, ([b"\x90"], "error")),  # declares a 4 KiB bin
        (b"\x90\x91\xc6\x00\x00", 64, 8, ([b"\x90"], "incomplete")),  # its length is not all there yet
        (b"\x91\xc1", 64, 8, ([], "error")),
        (b"\x90\x01", 64, 8, ([b"\x90"], "error")),  # a frame that is not an array
        (b"\x91\xd4\xff\x00\x91\xd8\x01" + bytes(16), 64, 8, ([b"\x91\xd4\xff\x00", b"\x91\xd8\x01" + bytes(16)],
                                                            "complete")),  # fixext sizes
    ],
)
def test_the_reference_draws_the_limits_where_the_contract_does(
    stream: bytes, max_frame: int, max_depth: int, expected: tuple[list[bytes], str]
) -> None:
    assert harness.reference_split(stream, max_frame, max_depth) == expected


class LaxDepthSplitter(FrameSplitter):
    """Lets one more level through than it was told."""

    def __init__(self, max_frame: int, max_depth: int):
        super().__init__(max_frame, max_depth + 1)


def _raise_value_error(frame: bytes) -> None:
    raise ValueError("planted")


def _no_params(method: object, raw: object) -> None:
    return None


@pytest.mark.parametrize(
    "name, planted, stream, escapes",
    [
        ("FrameSplitter", LaxDepthSplitter, DEEPEST.replace(b"\x91", b"\x91\x91", 1), harness.Finding),
        ("decode_message", _raise_value_error, harness._pack([0, 1, "ping", []]), ValueError),
        ("decode_params", _no_params, harness._pack([0, 1, "ping", []]), harness.Finding),
    ],
)
def test_a_planted_bug_is_a_finding(monkeypatch: pytest.MonkeyPatch, name: str, planted: object,
                                    stream: bytes, escapes: type[Exception]) -> None:
    checked(stream)
    monkeypatch.setattr(harness, name, planted)
    with pytest.raises(escapes):
        checked(stream)


def test_a_refusal_is_checked_against_the_frames_before_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A splitter that refuses a valid frame inside a stream with a later violation is caught too."""

    class EarlyRefusal(FrameSplitter):
        def feed(self, data: bytes = b"", max_scan: int | None = None) -> list[bytes]:
            raise ProtocolError("planted")

    monkeypatch.setattr(harness, "FrameSplitter", EarlyRefusal)
    with pytest.raises(harness.Finding, match="before the reference's violation"):
        checked(harness._pack([0, 1, "ping", []]) + b"\xc1")


def test_tail_reader_reads_inputs_as_atheris_does() -> None:
    atheris = pytest.importorskip("atheris")
    rng = random.Random(1)
    inputs = harness.seed_inputs() + [rng.randbytes(rng.randrange(40)) for _ in range(500)]
    for data in inputs:
        assert harness.read_input(harness.TailReader(data)) == harness.read_input(atheris.FuzzedDataProvider(data))
