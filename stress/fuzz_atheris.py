"""Coverage-guided fuzz (atheris, libFuzzer) of the frame splitter and the request decoder.

    # atheris comes with the `test` extra on Linux x86_64 (scripts/test.sh); elsewhere `pip install atheris`
    .venv/bin/python stress/fuzz_atheris.py                          # 60 s
    .venv/bin/python stress/fuzz_atheris.py --max-total-time 600 --corpus /tmp/takod-corpus
    .venv/bin/python stress/fuzz_atheris.py --runs 100000 --seed 7 -- -use_value_profile=1
    .venv/bin/python stress/fuzz_atheris.py --replay crash-1234abcd  # one input through the checks

An input is a byte stream (its front) and a feeding plan (its last bytes, read with
atheris.FuzzedDataProvider, which takes integers from the end): the limits (a frame of
4-1020 bytes and a depth of 0-12, so both are reachable, or the daemon's 16 MiB and 64),
the chunk sizes, the ``max_scan`` budgets, and whether to scan after every chunk. Checked:

1. FrameSplitter, fed the chunks through one reused buffer (as the daemon does): it
   returns exactly the frames an independent reference parser finds, in order, each
   one msgpack item (msgpack-python agrees) and an array within the limits; it raises
   ProtocolError, and nothing else, exactly when the reference finds a violation (an
   invalid byte, a frame that is not an array, a declared size past the frame limit,
   nesting past the depth limit); it makes progress on every ``max_scan`` call, and
   keeps exactly the unsplit rest.
2. decode_message on every frame: a Request, Response or Notification with a valid
   msgid, a str method of at most 100 bytes and array params, or ProtocolError.
3. Every Request's params through decode_params for every registered method: the
   method's Params Struct or RpcError ``invalid_params`` (kind 1). A Notification's
   params decode as the connection decodes them or raise what it catches; a Response's
   error is read by RpcError.from_wire.

Anything else (another exception, a failed check, an input slower than ``--timeout``)
is a finding: libFuzzer saves the input in the artifacts directory and stops, and the
script exits 1. Coverage is of the Python code in ``takod`` and ``takod_daemon``
(msgspec's C decoder is not instrumented). The seed corpus (valid requests for every
method, notifications, responses, pipelined and nested to the limit) and a libFuzzer
dictionary are generated at each run; the corpus libFuzzer grows goes to a temporary
directory unless ``--corpus`` names one. Without atheris, ``--help`` and ``--replay``
still work, and tests/unit/test_fuzz_atheris_harness.py runs the checks on the seeds.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol

import msgpack
import msgspec

try:
    import atheris
except ImportError:  # the checks, --help and --replay work without it
    atheris = None

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Only the fuzzing child instruments: imported by a test, the modules must stay as they are.
_FUZZING = atheris is not None and __name__ == "__main__" and sys.argv[1:2] == ["--libfuzzer"]
with atheris.instrument_imports(include=["takod", "takod_daemon"]) if _FUZZING else contextlib.nullcontext():
    from takod.protocol import (
        ERROR_VALIDATION,
        MAX_DEPTH,
        MAX_FRAME,
        MAX_METHOD_LEN,
        FrameSplitter,
        Notification,
        ProtocolError,
        Request,
        Response,
        RpcError,
        decode_message,
    )
    from takod_daemon import methods  # noqa: F401  (registers every method)
    from takod_daemon.api import registry
    from takod_daemon.rpc import decode_params

from tests.fuzzwire import CORPUS, HUGE_HEADERS  # noqa: E402

METHODS = [registry.get(name) for name in registry.names()]
N_CHUNKS = 8  # chunk sizes in a plan, used in turn until the stream is fed
PLAN_BYTES = 5 + N_CHUNKS
LONGEST_HEADER = 5  # array32, map32, str32, bin32: a header may straddle the frame limit by 4 bytes


class Finding(AssertionError):
    """A check failed: the code under test broke its contract (or the reference is wrong)."""


# the input -------------------------------------------------------------------


class Provider(Protocol):
    """The three calls of atheris.FuzzedDataProvider the harness uses."""

    def ConsumeIntInRange(self, lo: int, hi: int) -> int: ...  # noqa: N802, E704
    def ConsumeBytes(self, count: int) -> bytes: ...  # noqa: N802, E704
    def remaining_bytes(self) -> int: ...  # noqa: E704


class TailReader:
    """Reads an input as atheris.FuzzedDataProvider does for ranges of at most 256 values
    (an integer is one byte taken from the end, ``lo`` once none is left; bytes come from
    the front), so replays and tests need no atheris. The fuzzing child checks that both agree."""

    def __init__(self, data: bytes):
        self._data = data
        self._front = 0
        self._back = len(data)

    def ConsumeIntInRange(self, lo: int, hi: int) -> int:  # noqa: N802
        if self._back <= self._front:
            return lo
        self._back -= 1
        return lo + self._data[self._back] % (hi - lo + 1)

    def ConsumeBytes(self, count: int) -> bytes:  # noqa: N802
        out = self._data[self._front : min(self._front + count, self._back)]
        self._front += len(out)
        return out

    def remaining_bytes(self) -> int:
        return self._back - self._front


@dataclass(frozen=True)
class Plan:
    """How one stream is fed to the splitter."""

    max_frame: int
    max_depth: int
    chunks: tuple[int, ...]  # sizes used in turn; 0 feeds all the rest
    feed_scan: int | None  # max_scan of feed(data); 0 only buffers, as the daemon's read callback
    drain_scan: int | None  # max_scan of each feed() while bytes are left unscanned
    drain_each: bool  # scan the rest after every chunk (the daemon pauses reading until it has)


def read_input(p: Provider) -> tuple[bytes, Plan]:
    """Split a fuzz input into its stream and its plan (the plan comes from the input's last bytes)."""
    limit = p.ConsumeIntInRange(0, 255)
    depth = p.ConsumeIntInRange(0, 12)
    feed_scan = p.ConsumeIntInRange(0, 255)
    drain_scan = p.ConsumeIntInRange(0, 255)
    drain_each = p.ConsumeIntInRange(0, 1) == 1
    chunks = tuple(p.ConsumeIntInRange(0, 255) for _ in range(N_CHUNKS))
    plan = Plan(
        max_frame=4 * limit if limit else MAX_FRAME,
        max_depth=depth if limit else MAX_DEPTH,
        chunks=chunks,
        feed_scan=None if feed_scan == 255 else feed_scan,
        drain_scan=drain_scan or None,
        drain_each=drain_each,
    )
    return p.ConsumeBytes(p.remaining_bytes()), plan


def make_input(stream: bytes, plan_bytes: tuple[int, ...]) -> bytes:
    """The fuzz input that ``read_input`` reads as ``stream`` and the plan drawn from ``plan_bytes``."""
    if len(plan_bytes) != PLAN_BYTES:
        raise ValueError(f"a plan is {PLAN_BYTES} bytes, not {len(plan_bytes)}")
    return stream + bytes(reversed(plan_bytes))


# the reference ----------------------------------------------------------------


def _is_array(b: int) -> bool:
    return 0x90 <= b <= 0x9F or b in (0xDC, 0xDD)


# Header byte -> payload bytes after it (ints, floats, fixext with its type byte).
_REF_FIXED = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8, 0xCA: 4, 0xCB: 8,
              0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17}
# Header byte -> (bytes of its big-endian length, what the length counts).
_REF_SIZED = {0xD9: (1, "bytes"), 0xDA: (2, "bytes"), 0xDB: (4, "bytes"),
              0xC4: (1, "bytes"), 0xC5: (2, "bytes"), 0xC6: (4, "bytes"),
              0xC7: (1, "ext"), 0xC8: (2, "ext"), 0xC9: (4, "ext"),
              0xDC: (2, "items"), 0xDD: (4, "items"), 0xDE: (2, "pairs"), 0xDF: (4, "pairs")}


class _Stop(Exception):
    """Where the reference stops: at an ``"incomplete"`` item or an ``"error"``."""

    def __init__(self, status: str):
        self.status = status


def _ref_item(buf: bytes, frame: int, pos: int, depth: int, max_frame: int, max_depth: int) -> int:
    """End of the item at ``pos`` (``depth`` 1 is the frame itself), recursively."""
    if pos >= len(buf):
        raise _Stop("incomplete")
    b = buf[pos]
    head, size, children, container = 1, 0, 0, False
    if 0x80 <= b <= 0x8F:
        children, container = 2 * (b - 0x80), True
    elif 0x90 <= b <= 0x9F:
        children, container = b - 0x90, True
    elif 0xA0 <= b <= 0xBF:
        size = b - 0xA0
    elif b == 0xC1:
        raise _Stop("error")
    elif b in _REF_FIXED:
        size = _REF_FIXED[b]
    elif b in _REF_SIZED:
        width, counts = _REF_SIZED[b]
        head += width
        if pos + head > len(buf):
            raise _Stop("incomplete")
        n = int.from_bytes(buf[pos + 1 : pos + head], "big")
        if counts in ("items", "pairs"):
            children, container = n * (2 if counts == "pairs" else 1), True
        else:
            size = n + (counts == "ext")
    end = pos + head + size
    # The contract: a frame is refused as soon as a header declares more than fits,
    # counting one byte for each child it announces.
    if end - frame + children > max_frame:
        raise _Stop("error")
    if end > len(buf):
        raise _Stop("incomplete")
    if container and depth > max_depth:
        raise _Stop("error")
    for _ in range(children):
        end = _ref_item(buf, frame, end, depth + 1, max_frame, max_depth)
    return end


def reference_split(stream: bytes, max_frame: int, max_depth: int) -> tuple[list[bytes], str]:
    """What a splitter must make of the whole ``stream``: its frames, and ``"complete"``
    (all split), ``"incomplete"`` (the rest may still become a frame) or ``"error"``."""
    frames: list[bytes] = []
    start = 0
    while start < len(stream):
        if not _is_array(stream[start]):
            return frames, "error"
        try:
            end = _ref_item(stream, start, start, 1, max_frame, max_depth)
        except _Stop as stop:
            return frames, stop.status
        frames.append(stream[start:end])
        start = end
    return frames, "complete"


# the checks -------------------------------------------------------------------


def _chunks(stream: bytes, sizes: tuple[int, ...]) -> Iterator[bytes]:
    pos, turn = 0, 0
    while pos < len(stream):
        size = sizes[turn % len(sizes)] or len(stream) - pos
        yield stream[pos : pos + size]
        pos += size
        turn += 1


def _drain(splitter: FrameSplitter, max_scan: int | None, bound: int) -> list[bytes]:
    frames: list[bytes] = []
    for _ in range(bound + 2):  # every call scans at least one item, which takes at least a byte
        if not splitter.unscanned:
            return frames
        frames += splitter.feed(max_scan=max_scan)
    raise Finding("feed(max_scan=...) made no progress")


def _run_splitter(stream: bytes, plan: Plan) -> tuple[list[bytes], bool, FrameSplitter]:
    splitter = FrameSplitter(plan.max_frame, plan.max_depth)
    frames: list[bytes] = []
    chunks = list(_chunks(stream, plan.chunks))
    read_buffer = bytearray(max(map(len, chunks), default=0))
    try:
        for chunk in chunks:
            read_buffer[: len(chunk)] = chunk
            frames += splitter.feed(memoryview(read_buffer)[: len(chunk)], max_scan=plan.feed_scan)
            read_buffer[: len(chunk)] = b"\xc1" * len(chunk)  # the daemon reuses its buffer for the next read
            if plan.drain_each:
                frames += _drain(splitter, plan.drain_scan, len(stream))
        frames += _drain(splitter, plan.drain_scan, len(stream))
    except ProtocolError:
        return frames, True, splitter
    return frames, False, splitter


def _check_frame(frame: bytes, plan: Plan) -> None:
    if not _is_array(frame[0]):
        raise Finding(f"frame starts with 0x{frame[0]:02x}, not an array")
    if len(frame) > plan.max_frame:
        raise Finding(f"frame of {len(frame)} bytes past the limit {plan.max_frame}")
    unpacker = msgpack.Unpacker(raw=True, strict_map_key=False)
    unpacker.feed(frame)
    try:
        unpacker.skip()  # skip, not unpack: builds no values, so no timestamp or map-key rules apply
    except (msgpack.OutOfData, ValueError) as exc:
        raise Finding(f"msgpack-python cannot read the frame: {exc!r}") from None
    if unpacker.tell() != len(frame):
        raise Finding(f"msgpack-python reads {unpacker.tell()} of the frame's {len(frame)} bytes")


def check_splitter(stream: bytes, plan: Plan) -> tuple[list[bytes], bool]:
    """Feed ``stream`` to a FrameSplitter as ``plan`` says, check it against the reference
    and msgpack-python; return the frames it gave and whether it raised ProtocolError."""
    expected, status = reference_split(stream, plan.max_frame, plan.max_depth)
    frames, refused, splitter = _run_splitter(stream, plan)
    consumed = sum(map(len, frames))
    if b"".join(frames) != stream[:consumed]:
        raise Finding("the frames are not the start of the stream")
    if frames != expected[: len(frames)]:
        raise Finding("a frame differs from the reference's")
    for frame in frames:
        _check_frame(frame, plan)
    if refused:
        # feed() drops frames it split before raising, so all we know is that the
        # violation follows the reference's frames: refusing those alone would be wrong.
        if status != "error":
            raise Finding(f"ProtocolError on a stream the reference reads as {status}")
        valid = b"".join(expected)
        again, refused_again, _ = _run_splitter(valid, plan)
        if refused_again or again != expected:
            raise Finding("ProtocolError before the reference's violation")
        return frames, True
    if status == "error":
        raise Finding("no ProtocolError on a stream the reference refuses")
    if frames != expected:
        raise Finding(f"{len(expected) - len(frames)} complete frame(s) not returned")
    if splitter.buffered != len(stream) - consumed:
        raise Finding(f"holds {splitter.buffered} bytes, the rest of the stream is {len(stream) - consumed}")
    if splitter.buffered >= plan.max_frame + LONGEST_HEADER:
        raise Finding(f"holds {splitter.buffered} bytes of a frame limited to {plan.max_frame}")
    return frames, False


def check_message(frame: bytes) -> Request | Response | Notification | None:
    """decode_message on one frame: a well-formed envelope, or None for a ProtocolError."""
    try:
        msg = decode_message(frame)
    except ProtocolError:
        return None
    if not isinstance(msg, (Request, Response, Notification)):
        raise Finding(f"decoded to {type(msg).__name__}")
    if isinstance(msg, (Request, Response)):
        if not (type(msg.msgid) is int and 0 <= msg.msgid < 2**64):
            raise Finding(f"msgid {msg.msgid!r}")
    if isinstance(msg, (Request, Notification)):
        if not (isinstance(msg.method, str) and len(msg.method.encode()) <= MAX_METHOD_LEN):
            raise Finding(f"method {msg.method!r}")
        params = bytes(msg.params)
        if not params or not _is_array(params[0]):
            raise Finding("params are not an array")
    return msg


def check_params(msg: Request | Response | Notification) -> str:
    """Decode what the daemon (or the client) decodes next; return the outcome for the request's own method."""
    if isinstance(msg, Notification):
        try:
            msgspec.msgpack.decode(msg.params)
        except (msgspec.DecodeError, UnicodeDecodeError):  # what Connection._dispatch turns into ProtocolError
            return "notification_params_refused"
        return "notification"
    if isinstance(msg, Response):
        if not isinstance(RpcError.from_wire(msg.error), RpcError):
            raise Finding("from_wire returned no RpcError")
        return "response"
    outcome = "unknown_method"
    for method in METHODS:
        try:
            params = decode_params(method, msg.params)
        except RpcError as exc:
            if (exc.kind, exc.code) != (ERROR_VALIDATION, "invalid_params"):
                raise Finding(f"{method.name}: {exc.to_wire()}")
            result = "params_invalid"
        else:
            if not isinstance(params, method.params_type):
                raise Finding(f"{method.name}: decoded to {type(params).__name__}")
            result = "params_ok"
        if method.name == msg.method:
            outcome = result
    return outcome


def check_input(stream: bytes, plan: Plan) -> Counter[str]:
    """Every check on one stream; raises Finding (or whatever escaped) on a finding, else counts what it reached."""
    reached: Counter[str] = Counter()
    frames, refused = check_splitter(stream, plan)
    reached["frames"] += len(frames)
    reached["stream_refused"] += refused
    for frame in frames:
        msg = check_message(frame)
        reached["protocol_error" if msg is None else check_params(msg)] += 1
    return reached


# seeds ------------------------------------------------------------------------


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


# Options for the methods whose fields need more than ``[]`` to be reached.
_OPTIONS = [
    [0, 30, "infer", [{"prompt": "hi", "messages": [{"role": "user", "content": "hi"}], "system": "s",
                       "temperature": 0.2, "max_tokens": 16, "stream": "async", "deliver": "autocmd",
                       "format": "json", "env": {"K": "v"}, "local_only": True, "timeout": 5.0}]],
    [0, 31, "embed", [{"texts": ["a", "b"], "provider": "ollama", "model": "m"}]],
    [0, 32, "doctor", [{"fix": False, "stream": True, "env_names": ["HOME"]}]],
    [0, 33, "login.start", [{"provider": "codex", "timeout": 30.0}]],
    [0, 34, "login.answer", [{"text": "code", "login_id": "l1"}]],
    [0, 35, "status", [{"workspace": "/tmp/ws", "env": {"ANTHROPIC_API_KEY": "x"}}]],
    [0, 36, "hello", [{"client": "fuzz/1", "workspace": "/tmp/ws", "protocol": 1}]],
]


def seed_streams() -> list[bytes]:
    """Valid traffic: every method without options, the corpus of the live fuzz, options
    for several methods, wide header forms, nesting and method names (str and bin) at the
    daemon's limits and one past them, and all of it pipelined."""
    streams = [_pack([0, n, name, []]) for n, name in enumerate(registry.names(), 100)]
    streams += [_pack(m) for m in CORPUS + _OPTIONS]
    streams.append(b"\x94\x00\xcc\x05\xd9\x06status\xdc\x00\x01\x80")  # uint8 msgid, str8 method, array16 params
    deepest = b"\x94\x00\x01\xa4ping" + b"\x91" * (MAX_DEPTH - 2) + b"\x90"  # the envelope is level 1
    streams += [deepest, deepest.replace(b"\x91", b"\x91\x91", 1)]  # at the limit, one past it
    streams += [_pack([0, 37, name * n, []]) for name in ("m", b"m") for n in (MAX_METHOD_LEN, MAX_METHOD_LEN + 1)]
    streams.append(b"".join(streams[: len(registry.names())] + [_pack(m) for m in CORPUS]))
    return streams


# Plans as raw bytes, in the order read_input reads them.
SEED_PLANS = [
    (0, 0, 255, 0, 1) + (0,) * N_CHUNKS,  # the daemon's limits, the stream in one piece
    (0, 0, 0, 64, 1, 1, 2, 3, 5, 8, 13, 21, 34),  # the daemon's way: buffer, then scan in slices
    (64, 4, 255, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0),  # 256-byte frames, depth 4: many are refused
]


def seed_inputs() -> list[bytes]:
    """The seed corpus: every seed stream under every seed plan."""
    return [make_input(stream, plan) for stream in seed_streams() for plan in SEED_PLANS]


def _dict_entry(token: bytes) -> str:
    return '"' + "".join(f"\\x{b:02x}" for b in token) + '"\n'


def dictionary() -> str:
    """A libFuzzer dictionary: method and option names as msgpack strs, and headers worth splicing in."""
    words = set(registry.names()) | {"$/cancel", "nvim_set_client_info", "nvim_error_event", "takod.event",
                                     "notify", "autocmd", "async", "json", "text", "ollama", "openai",
                                     "user", "assistant", "system"}
    words |= {f.encode_name for m in METHODS for f in msgspec.structs.fields(m.params_type)}
    tokens = {_pack(w) for w in words} | set(HUGE_HEADERS)
    tokens |= {b"\x94\x00", b"\x94\x01", b"\x93\x02", b"\xdc\x00\x01", b"\xde\x00\x01", b"\xc1", b"\xd4\xff",
               b"\xd6\xff", b"\xd7\xff", b"\xc7\x0c\xff", b"\xcf" + b"\xff" * 8, b"\xd3\x80" + b"\x00" * 7,
               b"\xcb\x7f\xf8" + b"\x00" * 6}
    return "".join(_dict_entry(t) for t in sorted(tokens))


# fuzzing ----------------------------------------------------------------------


def fuzz_one(data: bytes) -> None:
    """The libFuzzer target: one input through every check."""
    check_input(*read_input(atheris.FuzzedDataProvider(data)))


def _fuzz(argv: list[str]) -> None:
    """The child process: libFuzzer runs until its limits, then exits the process itself."""
    for data in seed_inputs() + [bytes(range(n, 40)) for n in range(40)]:
        if read_input(atheris.FuzzedDataProvider(data)) != read_input(TailReader(data)):
            raise SystemExit("TailReader no longer reads inputs as atheris.FuzzedDataProvider does")
    atheris.Setup([sys.argv[0], *argv], fuzz_one)
    atheris.Fuzz()


_STATUS = re.compile(r"^#(\d+)\s+(\w+)\s+cov: (\d+) ft: (\d+) corp: (\d+)/(\S+)")
_STAT = re.compile(r"^stat::(\w+):\s+(\d+)")
# A line per new input, and libFuzzer's dictionary suggestions: not echoed.
_QUIET = re.compile(r'^(#\d+\s+(NEW|REDUCE|RELOAD)\s|".*" # Uses: \d+$)')
_FINDINGS = ("crash-", "timeout-", "oom-", "leak-")


def _replay(paths: list[Path]) -> int:
    failed = 0
    for path in paths:
        try:
            reached = check_input(*read_input(TailReader(path.read_bytes())))
        except Exception:  # noqa: BLE001  (any exception is the finding being replayed)
            failed += 1
            print(f"{path}: FINDING", file=sys.stderr)
            traceback.print_exc()
        else:
            print(f"{path}: ok {dict(reached)}")
    return 1 if failed else 0


def _fuzz_and_report(args: argparse.Namespace, artifacts: Path, report: Any) -> int:
    """Run the fuzzing child to its limits, then fill ``report`` from its output and its corpus."""
    seed = seed_inputs()
    with tempfile.TemporaryDirectory(prefix="takod-fuzz-") as tmp:
        seeds = Path(tmp, "seeds")
        seeds.mkdir()
        for n, data in enumerate(seed):
            (seeds / f"seed-{n:03}").write_bytes(data)
        corpus = args.corpus or Path(tmp, "corpus")
        corpus.mkdir(parents=True, exist_ok=True)
        Path(tmp, "msgpack.dict").write_text(dictionary())
        cmd = [sys.executable, __file__, "--libfuzzer", str(corpus), str(seeds),
               f"-max_total_time={args.max_total_time}", f"-timeout={args.timeout}", f"-max_len={args.max_len}",
               f"-artifact_prefix={artifacts}/", f"-dict={tmp}/msgpack.dict", "-print_final_stats=1"]
        cmd += [f"-runs={args.runs}"] if args.runs is not None else []
        cmd += [f"-seed={args.seed}"] if args.seed is not None else []
        cmd += args.libfuzzer_flags
        t0 = time.monotonic()
        log = []
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              errors="replace") as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.append(line)
                if not _QUIET.match(line):
                    sys.stderr.write(line)
        seconds = time.monotonic() - t0
        corpus_files = sorted(corpus.iterdir())
        reached: Counter[str] = Counter()
        if proc.returncode == 0:  # after a finding, the corpus may hold an input that fails here too
            for path in corpus_files:
                reached += check_input(*read_input(TailReader(path.read_bytes())))
    status = [m for m in map(_STATUS.match, log) if m]
    stats = {m[1]: int(m[2]) for m in map(_STAT.match, log) if m}
    inited = next((m for m in status if m[2] == "INITED"), None)
    findings = sorted(f for f in artifacts.iterdir() if f.name.startswith(_FINDINGS))
    report.figures["run"] = {
        "executions": stats.get("number_of_executed_units", 0),
        "exec_per_s": stats.get("average_exec_per_sec", 0),
        "seconds": round(seconds, 1),
        "peak_rss_mb": stats.get("peak_rss_mb", 0),
        "libfuzzer_exit_status": proc.returncode,
    }
    report.figures["coverage"] = {
        "seed_inputs": len(seed),
        "cov_ft_after_seeds": f"{inited[3]}/{inited[4]}" if inited else "?",
        "cov_ft_at_end": f"{status[-1][3]}/{status[-1][4]}" if status else "?",
        "corpus_inputs": len(corpus_files),
        "new_inputs": stats.get("new_units_added", 0),
    }
    report.figures["reached_by_the_corpus"] = dict(sorted(reached.items()))
    report.figures["findings"] = len(findings)
    report.check("libFuzzer ran to its limit", proc.returncode == 0 and any(x.startswith("Done ") for x in log))
    report.check("no findings (crash, timeout, out of memory)", not findings)
    for f in findings:
        report.notes.append(f"finding: {f} (replay: .venv/bin/python stress/fuzz_atheris.py --replay {f})")
    return report.finish(args.json)


def main() -> int:
    from common import Report, parser  # here: the fuzzing child must import takod only once instrumented

    p = parser(__doc__.split("\n")[0])
    p.add_argument("--max-total-time", type=int, default=60, help="seconds to fuzz (default 60)")
    p.add_argument("--runs", type=int, help="stop after this many inputs (default: only the time limit)")
    p.add_argument("--seed", type=int, help="libFuzzer's random seed (default: a new one each run)")
    p.add_argument("--timeout", type=int, default=10, help="seconds one input may take before it is a finding")
    p.add_argument("--max-len", type=int, default=4096, help="longest input in bytes (default 4096)")
    p.add_argument("--corpus", type=Path, help="directory to keep (and resume) the corpus in (default: temporary)")
    p.add_argument("--artifacts", type=Path,
                   help="directory for inputs that are findings (default: a new temporary one, kept if used)")
    p.add_argument("--replay", type=Path, nargs="+", metavar="FILE",
                   help="run these inputs through the checks, without fuzzing (or atheris)")
    p.add_argument("libfuzzer_flags", nargs="*", metavar="-- -FLAG=VALUE", help="more libFuzzer flags, after --")
    args = p.parse_args()
    if args.replay:
        return _replay(args.replay)
    if atheris is None:
        print("atheris is not installed: .venv/bin/pip install atheris", file=sys.stderr)
        return 2
    report = Report("fuzz_atheris", {k: str(v) for k, v in vars(args).items()
                                     if k not in ("json", "replay") and v not in (None, [])})
    artifacts = args.artifacts or Path(tempfile.mkdtemp(prefix="takod-fuzz-findings-"))
    artifacts.mkdir(parents=True, exist_ok=True)
    try:
        return _fuzz_and_report(args, artifacts, report)
    finally:
        if args.artifacts is None:
            with contextlib.suppress(OSError):  # only removed when empty: a finding stays
                artifacts.rmdir()


if __name__ == "__main__":
    if _FUZZING:
        _fuzz(sys.argv[2:])
    else:
        raise SystemExit(main())
