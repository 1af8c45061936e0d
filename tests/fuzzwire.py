"""Live wire fuzzing: mutated valid frames thrown at a running daemon over many connections.

Used by tests/integration/test_fuzz_live.py (a short run) and stress/fuzz_live.py
(long runs with figures). Every mutation is drawn from a seeded random.Random,
so a failing run is replayed with the same seed.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import msgpack

KEY = "ANTHROPIC_API_KEY"

# Valid messages. Methods that go to the network, spawn providers, touch another
# workspace or stop the daemon are left out: the fuzz judges the wire, not them.
CORPUS: list[Any] = [
    [0, 1, "ping", []],
    [0, 2, "hello", [{"client": "fuzz/1", "protocol": 1}]],
    [0, 3, "status", []],
    [0, 4, "status", [{}]],
    [0, 5, "status", [[]]],
    [0, 6, "health", []],
    [0, 7, "subscribe", [{"topics": ["status", "daemon"]}]],
    [0, 8, "unsubscribe", [{"sub_id": 1}]],
    [0, 9, "auth.inventory", []],
    [0, 10, "keys.list", []],
    [0, 11, "keys.set", [{"name": KEY, "value": "sk-ant-fuzz-0000"}]],
    [0, 12, "keys.clear", [{"name": KEY}]],
    [0, 13, "settings.get", []],
    [0, 14, "settings.set", [{"field": "ollama_model", "value": "llama3"}]],
    [0, 15, "settings.set", [{"field": "preferred_provider", "value": "auto"}]],
    [0, 16, "login.status", []],
    [0, 17, b"status", []],
    [2, "$/cancel", [3]],
    [2, "nvim_set_client_info", ["fuzz", {"major": 0}, "remote", {}, {}]],
    [2, "nvim_error_event", [0, "E5108: boom"]],
    [2, "unknown.notification", [1, 2, 3]],
    [1, 99, None, "stray response"],
    [1, 98, [0, "e: x"], None],
]

INTERESTING = [0x00, 0x7F, 0x80, 0x90, 0x9F, 0xA0, 0xC0, 0xC1, 0xC4, 0xC6, 0xCA, 0xCF, 0xD3, 0xD9, 0xDB,
               0xDC, 0xDD, 0xDE, 0xDF, 0xE0, 0xFF]
HUGE_HEADERS = [b"\xc6\xff\xff\xff\xff", b"\xdb\x7f\xff\xff\xff", b"\xdd\xff\xff\xff\xff",
                b"\xdf\xff\xff\xff\xff", b"\xc9\x01\x00\x00\x00\x05", b"\xc6\x01\x00\x00\x01"]
BAD_MSGIDS = [-1, -(2**63), 1.5, "1", None, True, b"\x01", 2**64 - 1, [1]]
BAD_METHODS = [5, None, ["ping"], {"m": 1}, "m" * 101, b"\xff\xfe", "", "ping\x00", "nvim_exec_autocmds",
               "$/cancel", "takod.event", "x" * 100]
BAD_PARAMS = [None, 0, "x", b"x", {"a": 1}, {}, 1.5, True]
# Workspace paths no request may get past the RPC boundary with (never a valid one:
# the fuzz must not load workspaces). Each must be answered invalid_params, never
# `internal`, and a `hello` carrying one must not spoil its connection's later calls.
INVALID_PATHS: list[Any] = [
    "/tmp/ws\x00", "\x00", "/a/\x00/b", "relative/ws", ".", "~", "~/ws", "-", "C:\\ws",
    "/" + "a" * 5000, "/tmp/" + "b" * 256, "/" + "c/" * 2100, "\x00" * 300,
]
PATH_METHODS = ["hello", "status", "settings.get", "auth.inventory", "health", "keys.migrate"]


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _bitflip(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
    return bytes(b)


def _byteset(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        b[rng.randrange(len(b))] = rng.choice(INTERESTING) if rng.random() < 0.7 else rng.randrange(256)
    return bytes(b)


def _truncate(rng: random.Random, data: bytes) -> bytes:
    cut = data[: rng.randrange(len(data))]
    return cut + (pack(rng.choice(CORPUS)) if rng.random() < 0.5 else b"")


def _huge(rng: random.Random, data: bytes) -> bytes:
    i = rng.randrange(1, len(data) + 1)
    return data[:i] + rng.choice(HUGE_HEADERS) + data[i:]


def _wrong_type(rng: random.Random, msg: Any) -> bytes:
    msg = list(msg)
    slot = rng.randrange(len(msg))
    if slot == 0:
        msg[0] = rng.choice([3, -1, "0", None, 1.0, True, 255])
    elif msg[0] in (0, 1) and slot == 1:
        msg[1] = rng.choice(BAD_MSGIDS)
    elif (msg[0] == 0 and slot == 2) or (msg[0] == 2 and slot == 1):
        msg[slot] = rng.choice(BAD_METHODS)
    elif slot == len(msg) - 1 and msg[0] in (0, 2):
        msg[slot] = rng.choice(BAD_PARAMS) if rng.random() < 0.5 else [_random_value(rng, 3)]
    else:
        msg[slot] = _random_value(rng, 3)
    if rng.random() < 0.2:
        msg = msg[: rng.randrange(len(msg))] if rng.random() < 0.5 else [*msg, "extra"]
    return _pack_any(msg)


def _random_value(rng: random.Random, depth: int) -> Any:
    kinds = ["int", "neg", "float", "str", "bin", "nil", "bool", "ext", "badstr"] + (["list", "map"] if depth else [])
    kind = rng.choice(kinds)
    if kind == "int":
        return rng.choice([0, 1, 255, 2**31, 2**64 - 1])
    if kind == "neg":
        return rng.choice([-1, -(2**63)])
    if kind == "float":
        return rng.choice([0.5, float("inf"), float("nan"), -0.0])
    if kind == "str":
        return rng.choice(["", "x" * rng.randint(1, 300), "é", "\x00", KEY, "status"])
    if kind == "bin":
        return rng.randbytes(rng.randint(0, 40))
    if kind == "nil":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "ext":
        return msgpack.ExtType(rng.randint(0, 127), rng.randbytes(rng.randint(0, 20)))
    if kind == "badstr":
        return _RawStr(b"\xff\xfe" + rng.randbytes(rng.randint(0, 8)))
    if kind == "list":
        return [_random_value(rng, depth - 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(["topics", "name", "value", "field", "client", "sub_id", "deliver", "x", "env", "workspace"]):
            _random_value(rng, depth - 1) for _ in range(rng.randint(0, 4))}


class _RawStr:
    """A msgpack str whose bytes are not UTF-8 (packers refuse to make one)."""

    def __init__(self, data: bytes):
        self.data = data


def _pack_any(obj: Any) -> bytes:
    """pack(), plus _RawStr anywhere inside."""
    if isinstance(obj, _RawStr):
        n = len(obj.data)
        return (bytes([0xA0 | n]) if n < 32 else b"\xd9" + bytes([n])) + obj.data
    if isinstance(obj, list):
        head = bytes([0x90 | len(obj)]) if len(obj) < 16 else b"\xdc" + struct.pack(">H", len(obj))
        return head + b"".join(_pack_any(x) for x in obj)
    if isinstance(obj, dict):
        head = bytes([0x80 | len(obj)]) if len(obj) < 16 else b"\xde" + struct.pack(">H", len(obj))
        return head + b"".join(_pack_any(k) + _pack_any(v) for k, v in obj.items())
    return pack(obj)


def _deep(rng: random.Random, msg: Any) -> bytes:
    """The message with its params (or result) nested around and beyond the 64-level limit."""
    nested = b"\x91" * (rng.choice([61, 62, 63, 64, 100, 1000, 100_000]) - 1) + b"\x90"
    if msg[0] == 0:
        return b"\x94\x00" + pack(msg[1]) + pack(msg[2]) + b"\x91" + nested
    if msg[0] == 2:
        return b"\x93\x02" + pack(msg[1]) + b"\x91" + nested
    return b"\x94\x01" + pack(msg[1]) + b"\xc0" + nested


def _unknown_method(rng: random.Random) -> bytes:
    name: Any = rng.choice(["nope", "Status", "status ", "keys.", "x" * 100, "\u00e9t\u00e9", "../../etc"])
    if rng.random() < 0.3:
        name = name.encode()
    return pack([0, rng.randrange(2**32), name, []] if rng.random() < 0.7 else [2, name, [1]])


def _values_params(rng: random.Random, msg: Any) -> bytes:
    """A valid envelope with hostile values inside the options map (wrong types, non-UTF-8 strs, exts)."""
    method = msg[2] if msg[0] == 0 else msg[1]
    options = {k: _random_value(rng, 2) for k in rng.sample(["topics", "name", "value", "field", "client",
                                                           "sub_id", "deliver", "env", "protocol"], 3)}
    envelope = [0, rng.randrange(2**32), method, [options]] if msg[0] == 0 else [2, method, [options]]
    return _pack_any(envelope)


def _invalid_path(rng: random.Random) -> Any:
    if rng.random() < 0.2:  # a str that is not UTF-8 (lone surrogates as CESU-8, stray bytes)
        return _RawStr(rng.choice([b"/tmp/\xed\xa0\x80", b"/\xff\xfe", b"/ws\xc0\x80"]))
    return rng.choice(INVALID_PATHS)


def _bad_path(rng: random.Random) -> bytes:
    """A request naming an impossible workspace, then (pipelined) a call that must still be served."""
    method = rng.choice(PATH_METHODS)
    options: dict[str, Any] = {"workspace": _invalid_path(rng)}
    if method == "status" and rng.random() < 0.3:
        options["env"] = {rng.choice(["X", "X\x00", "A=B", ""]): rng.choice(["v", "\x00", "a\x00b"])}
    then = rng.choice([[0, 2**31 + 1, "status", []], [0, 2**31 + 2, "settings.get", []], [0, 2**31 + 3, "ping", []]])
    return _pack_any([0, rng.randrange(2**31), method, [options]]) + pack(then)


def _garbage(rng: random.Random) -> bytes:
    return rng.randbytes(rng.randint(1, 200))


def _splice(rng: random.Random, a: bytes, b: bytes) -> bytes:
    return a[: rng.randrange(1, len(a) + 1)] + b[rng.randrange(len(b)) :]


def _burst(rng: random.Random, data: bytes) -> bytes:
    """A pipelined burst of valid messages with one bit-flipped frame among them."""
    frames = [pack(rng.choice(CORPUS)) for _ in range(rng.randint(5, 60))]
    frames.insert(rng.randrange(len(frames)), _bitflip(rng, data))
    return b"".join(frames)


# Mutation name -> mutator(rng, message, its packed bytes).
MUTATIONS: dict[str, Callable[[random.Random, Any, bytes], bytes]] = {
    "bitflip": lambda rng, msg, data: _bitflip(rng, data),
    "byteset": lambda rng, msg, data: _byteset(rng, data),
    "truncate": lambda rng, msg, data: _truncate(rng, data),
    "huge": lambda rng, msg, data: _huge(rng, data),
    "wrong_type": lambda rng, msg, data: _wrong_type(rng, msg),
    "deep": lambda rng, msg, data: _deep(rng, msg),
    "unknown_method": lambda rng, msg, data: _unknown_method(rng),
    "values": lambda rng, msg, data: _values_params(rng, msg) if msg[0] in (0, 2) else data,
    "bad_path": lambda rng, msg, data: _bad_path(rng),
    "garbage": lambda rng, msg, data: _garbage(rng),
    "splice": lambda rng, msg, data: _splice(rng, data, pack(rng.choice(CORPUS))),
    "burst": lambda rng, msg, data: _burst(rng, data),
    "valid": lambda rng, msg, data: data,
}


def mutate(rng: random.Random) -> tuple[str, bytes]:
    """One mutated frame (or a few bytes that pose as one), and the mutation's name."""
    msg = rng.choice(CORPUS)
    kind = rng.choice(sorted(MUTATIONS))
    return kind, MUTATIONS[kind](rng, msg, pack(msg))


@dataclass
class FuzzResult:
    connections: int = 0
    frames: int = 0
    bytes_sent: int = 0
    replies: int = 0
    closed_by_daemon: int = 0
    mutations: Counter[str] = field(default_factory=Counter)
    error_codes: Counter[str] = field(default_factory=Counter)
    internal_errors: list[str] = field(default_factory=list)  # a reply saying `internal` is a daemon bug
    control_calls: int = 0
    control_failures: list[str] = field(default_factory=list)
    control_max_ms: float = 0.0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "connections": self.connections, "frames": self.frames, "bytes_sent": self.bytes_sent,
            "replies": self.replies, "closed_by_daemon": self.closed_by_daemon,
            "mutations": dict(sorted(self.mutations.items())),
            "error_codes": dict(self.error_codes.most_common(12)),
            "internal_errors": len(self.internal_errors), "control_calls": self.control_calls,
            "control_failures": len(self.control_failures), "control_max_ms": round(self.control_max_ms, 2),
            "seconds": round(self.seconds, 2),
        }


async def _one_connection(path: str, rng: random.Random, result: FuzzResult, read_for: float) -> None:
    reader, writer = await asyncio.open_unix_connection(path, limit=1 << 20)
    result.connections += 1
    payload = b""
    for _ in range(rng.randint(1, 5)):
        kind, data = mutate(rng)
        result.mutations[kind] += 1
        result.frames += 1
        payload += data
    # Sent whole, byte by byte for a while, or in random pieces: the splitter must not care.
    cuts = sorted(rng.sample(range(1, len(payload)), min(len(payload) - 1, rng.randint(0, 6)))) if len(payload) > 1 else []
    pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)])]
    try:
        for piece in pieces:
            writer.write(piece)
            result.bytes_sent += len(piece)
            await writer.drain()
        if rng.random() < 0.3:
            writer.write_eof()  # a peer that stops sending has hung up
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, unicode_errors="replace")
        deadline = time.monotonic() + read_for
        while (left := deadline - time.monotonic()) > 0:
            try:
                data = await asyncio.wait_for(reader.read(1 << 16), left)
            except asyncio.TimeoutError:
                break
            if not data:
                result.closed_by_daemon += 1
                break
            unpacker.feed(data)
            for msg in unpacker:
                if isinstance(msg, list) and msg and msg[0] == 1:
                    result.replies += 1
                    if msg[2] is not None:
                        code = str(msg[2][1]).partition(":")[0] if isinstance(msg[2], list) else "?"
                        result.error_codes[code] += 1
                        if code == "internal":
                            result.internal_errors.append(repr(payload[:200]))
                elif isinstance(msg, list) and msg and msg[0] == 0:  # the daemon asks us something
                    writer.write(pack([1, msg[1], [0, "no: fuzz"], None]))
    except (ConnectionError, OSError):
        result.closed_by_daemon += 1
    finally:
        if rng.random() < 0.5:
            writer.transport.abort()
        else:
            writer.close()


async def _control(path: str, result: FuzzResult, stop: asyncio.Event) -> None:
    """One long-lived connection pinging and asking for status throughout, plus a fresh connection now and then."""
    reader, writer = await asyncio.open_unix_connection(path)
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    msgid = 0
    while not stop.is_set():
        msgid += 1
        method = "status" if msgid % 2 else "ping"
        t0 = time.perf_counter()
        try:
            if msgid % 25 == 0:  # a brand-new connection must be accepted and served too
                r2, w2 = await asyncio.open_unix_connection(path)
                w2.write(pack([0, 1, "ping", []]))
                reply = msgpack.unpackb(await asyncio.wait_for(r2.read(64), 10))
                w2.close()
                ok = reply == [1, 1, None, "pong"]
            else:
                writer.write(pack([0, msgid, method, []]))
                reply = None
                while reply is None:
                    for msg in unpacker:
                        reply = msg
                    if reply is None:
                        data = await asyncio.wait_for(reader.read(1 << 16), 10)
                        if not data:
                            raise ConnectionError("control connection closed")
                        unpacker.feed(data)
                ok = reply[0] == 1 and reply[1] == msgid and reply[2] is None
        except (OSError, ConnectionError, asyncio.TimeoutError, ValueError) as exc:
            result.control_failures.append(f"{method}: {exc!r}")
            return
        result.control_calls += 1
        result.control_max_ms = max(result.control_max_ms, (time.perf_counter() - t0) * 1000)
        if not ok:
            result.control_failures.append(f"{method}: {reply!r}"[:300])
        await asyncio.sleep(0.005)
    writer.close()


async def run_fuzz(path: str, *, connections: int, workers: int, seed: int, read_for: float = 0.2,
                   progress: Callable[[FuzzResult], None] | None = None) -> FuzzResult:
    """Throw ``connections`` fuzzed connections at the daemon, ``workers`` at a time."""
    result = FuzzResult()
    stop = asyncio.Event()
    t0 = time.monotonic()
    control = asyncio.create_task(_control(path, result, stop))
    todo = iter(range(connections))

    async def worker(n: int) -> None:
        rng = random.Random(seed * 1000 + n)
        for _ in todo:
            await _one_connection(path, rng, result, read_for)
            if progress is not None and result.connections % 500 == 0:
                progress(result)

    await asyncio.gather(*(worker(n) for n in range(workers)))
    stop.set()
    await control
    result.seconds = time.monotonic() - t0
    return result


def connections_open(path: str) -> int:
    """The daemon's own count of its connections (including the one asking)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(pack([0, 1, "status", []]))
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        while True:
            unpacker.feed(s.recv(1 << 16))
            for msg in unpacker:
                return msg[3]["daemon"]["connections"]
