"""Hostile readers and writers: slowloris, a subscriber that never reads, a client that never reads its replies.

    .venv/bin/python stress/readers.py
    .venv/bin/python stress/readers.py --stalled 1000 --partial-kib 1024 --key-ops 20000 --json

1. Slowloris: ``--stalled`` connections each send the first part of a frame
   (a ``ping`` whose bin argument declares ``2 x --partial-kib`` KiB, of which
   half is sent) and stall. A control connection must keep being served; the
   daemon's RSS with those partial frames held is reported, and whether the
   daemon drops them after ``--stall`` s (it does not: see
   docs/reliability.md). Then every stalled frame is completed and must be
   answered.
2. A subscriber that never reads: ``--subs`` subscriptions to every topic on
   one connection that is never read, while ``--key-ops`` keys.set/keys.clear
   calls publish an ``auth`` event each. The daemon's RSS must stay bounded,
   the control connection served, and when the subscriber finally reads, each
   subscription's delivered events plus the ``lost`` count of its ``resync``
   must equal what a diligent subscriber saw.
3. A client that pipelines ``--unread`` requests and never reads: the daemon
   stops reading it (back-pressure); RSS stays bounded; once it reads, every
   request is answered.
4. One connection asking for more subscriptions than the per-connection limit.
5. Frames of tiny items: ``--tiny-frames`` frames of 16 MiB, each an array of
   one-byte nils (the costliest bytes to split), while a control connection
   pings; the control latency shows how fairly the event loop is shared.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from typing import Any

import msgpack

from common import Report, latency_ms, log_events, parser, raise_own_fd_limit, resources, running_daemon, temp_home
from tests.rawrpc import Closed, RawConn

KEY = "ANTHROPIC_API_KEY"


def control_latencies(conn: RawConn, calls: int, start_id: int) -> tuple[list[float], int]:
    """``calls`` status round trips on the control connection; latencies and failures."""
    out: list[float] = []
    failures = 0
    for i in range(calls):
        t0 = time.perf_counter()
        try:
            reply = conn.call(start_id + i, "status")
        except (TimeoutError, Closed, OSError):
            failures += 1
            continue
        out.append(time.perf_counter() - t0)
        if reply[2] is not None:
            failures += 1
    return out, failures


def slowloris(report: Report, daemon: Any, args: Any) -> None:
    half = args.partial_kib * 1024
    header = b"\x94\x00" + b"\xce" + struct.pack(">I", 1) + b"\xa4ping\x91\xc6" + struct.pack(">I", 2 * half)
    before = resources(daemon.pid)
    stalled: list[socket.socket] = []
    for i in range(args.stalled):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(daemon.socket))
        s.sendall(header + b"\x00" * half)
        stalled.append(s)
    with RawConn(daemon.socket) as control:
        lat, failures = control_latencies(control, args.control_calls, 1)
        time.sleep(args.stall)
        held = resources(daemon.pid)
        status = control.call(10**6, "status")[3]
    still_open = status["daemon"]["connections"] - 1  # minus the control connection itself
    answered = 0
    for s in stalled:
        s.sendall(b"\x00" * half)
    for s in stalled:
        s.settimeout(20)
        data = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
                try:
                    reply = msgpack.unpackb(data, raw=False)
                except (msgpack.ExtraData, ValueError, msgpack.UnpackValueError):
                    continue
                answered += reply[0] == 1 and reply[1] == 1 and reply[2] is not None
                break
        except OSError:
            pass
        s.close()
    report.figures["slowloris"] = {
        "stalled_connections": args.stalled, "partial_bytes_each": len(header) + half,
        "control_calls": args.control_calls, "control_failures": failures, "control_latency_ms": latency_ms(lat),
        "stall_s": args.stall, "still_open_after_stall": still_open,
        "rss_kib_before": before["rss_kib"], "rss_kib_held": held["rss_kib"],
        "rss_kib_per_stalled": round((held["rss_kib"] - before["rss_kib"]) / max(1, args.stalled), 1),
        "completed_frames_answered": answered,
    }
    report.check("slowloris: control connection served throughout", failures == 0)
    report.check("slowloris: memory held is about the bytes sent (< 2x + 64 KiB each)",
                 held["rss_kib"] - before["rss_kib"] < args.stalled * (2 * (len(header) + half) / 1024 + 64))
    report.check("slowloris: every completed frame answered", answered == args.stalled)


def drain(conn: RawConn, quiet: float) -> list[Any]:
    """Everything that arrives until the connection is quiet for ``quiet`` s."""
    out = []
    try:
        while True:
            out.append(conn.recv(timeout=quiet))
    except TimeoutError:
        return out


def never_reading_subscriber(report: Report, daemon: Any, args: Any) -> None:
    slow = RawConn(daemon.socket)
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fill the pipe sooner
    for i in range(args.subs):
        slow.call(i + 1, "subscribe", {})
    diligent = RawConn(daemon.socket)
    diligent.call(1, "subscribe", {})
    driver = RawConn(daemon.socket)
    control = RawConn(daemon.socket)
    before = resources(daemon.pid)
    peak = before["rss_kib"]
    lat: list[float] = []
    failures = 0
    seen = 0
    t0 = time.monotonic()
    for op in range(args.key_ops):
        if op % 2 == 0:
            driver.call(op + 1, "keys.set", {"name": KEY, "value": f"sk-ant-stress-{op:08d}"})
        else:
            driver.call(op + 1, "keys.clear", {"name": KEY})
        if op % 200 == 199:
            more, fail = control_latencies(control, 5, 10**6 + op * 10)
            lat += more
            failures += fail
            peak = max(peak, resources(daemon.pid)["rss_kib"])
            seen += sum(1 for m in drain(diligent, 0.0001) if m[0] == 2)
    elapsed = time.monotonic() - t0
    after = resources(daemon.pid)
    seen += sum(1 for m in drain(diligent, 1.0) if m[0] == 2)
    per_sub: dict[int, dict[str, int]] = {}
    for msg in drain(slow, 2.0):
        if msg[0] != 2 or msg[1] != "takod.event":
            continue
        sub_id, _seq, topic, payload = msg[2]
        counts = per_sub.setdefault(sub_id, {"delivered": 0, "lost": 0, "resyncs": 0})
        if topic == "resync":
            counts["lost"] += payload["lost"]
            counts["resyncs"] += 1
        else:
            counts["delivered"] += 1
    accounted = all(c["delivered"] + c["lost"] == seen for c in per_sub.values()) and len(per_sub) == args.subs
    report.figures["never_reading_subscriber"] = {
        "subscriptions": args.subs, "key_ops": args.key_ops, "key_ops_per_s": round(args.key_ops / elapsed, 1),
        "events_published_per_sub": seen,
        "delivered_min": min((c["delivered"] for c in per_sub.values()), default=0),
        "lost_max": max((c["lost"] for c in per_sub.values()), default=0),
        "resyncs_max": max((c["resyncs"] for c in per_sub.values()), default=0),
        "rss_kib_before": before["rss_kib"], "rss_kib_peak": peak, "rss_kib_after": after["rss_kib"],
        "control_latency_ms": latency_ms(lat), "control_failures": failures,
    }
    report.check("slow subscriber: control connection served throughout", failures == 0)
    report.check("slow subscriber: delivered + lost == published, for every subscription", accounted)
    report.check("slow subscriber: events were dropped (the queue is bounded), not buffered",
                 seen < 256 or all(c["lost"] > 0 for c in per_sub.values()))
    report.check(f"slow subscriber: RSS grew less than {args.rss_growth_mib} MiB",
                 (peak - before["rss_kib"]) / 1024 < args.rss_growth_mib)
    for c in (slow, diligent, driver, control):
        c.close()


def never_reading_client(report: Report, daemon: Any, args: Any) -> None:
    client = RawConn(daemon.socket)
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    control = RawConn(daemon.socket)
    before = resources(daemon.pid)
    frames = b"".join(msgpack.packb([0, i, "status", []]) for i in range(args.unread))
    client.sock.settimeout(0.5)
    sent = 0
    view = memoryview(frames)
    try:
        while sent < len(frames):  # until the daemon stops reading us and our send buffer fills
            sent += client.sock.send(view[sent:sent + 65536])
    except (socket.timeout, BlockingIOError):
        pass
    held = resources(daemon.pid)
    lat, failures = control_latencies(control, args.control_calls, 1)
    client.sock.settimeout(None)
    client.sock.setblocking(True)


    rest = threading.Thread(target=client.sock.sendall, args=(view[sent:],))
    rest.start()
    answered = 0
    try:
        while answered < args.unread:
            msg = client.recv(timeout=20)
            answered += msg[0] == 1 and msg[2] is None
    except (TimeoutError, Closed):
        pass
    rest.join(20)
    report.figures["never_reading_client"] = {
        "requests": args.unread, "bytes_daemon_took_before_stalling": sent,
        "rss_kib_before": before["rss_kib"], "rss_kib_while_stalled": held["rss_kib"],
        "control_latency_ms": latency_ms(lat), "control_failures": failures, "answered_once_read": answered,
    }
    report.check("unread replies: control connection served", failures == 0)
    report.check("unread replies: the daemon stopped reading (took < all the bytes)", sent < len(frames))
    report.check(f"unread replies: RSS grew less than {args.rss_growth_mib} MiB",
                 (held["rss_kib"] - before["rss_kib"]) / 1024 < args.rss_growth_mib)
    report.check("unread replies: every request answered once the client reads", answered == args.unread)
    client.close()
    control.close()


def subscription_limit(report: Report, daemon: Any, args: Any) -> None:
    with RawConn(daemon.socket) as conn:
        before = resources(daemon.pid)
        errors: dict[str, int] = {}
        for i in range(args.subscribe_attempts):
            reply = conn.call(i + 1, "subscribe", {"topics": ["daemon"]})
            if reply[2] is not None:
                code = reply[2][1].partition(":")[0]
                errors[code] = errors.get(code, 0) + 1
        after = resources(daemon.pid)
        served = conn.call(10**6, "ping")[3] == "pong"
    report.figures["subscription_limit"] = {
        "attempts": args.subscribe_attempts, "refused": errors,
        "rss_growth_kib": after["rss_kib"] - before["rss_kib"],
    }
    report.check("subscriptions per connection are capped", sum(errors.values()) > 0 or args.subscribe_attempts <= 64)
    report.check("the capped connection is still served", served)


def tiny_items(report: Report, daemon: Any, args: Any) -> None:


    n = 16 * 1024 * 1024 - 64
    frame = b"\x94\x00\x01\xa4ping\x91\xdd" + struct.pack(">I", n) + b"\xc0" * n
    control = RawConn(daemon.socket)
    lat: list[float] = []
    failures = 0
    done = threading.Event()

    def ping() -> None:
        nonlocal failures
        i = 0
        while not done.is_set():
            i += 1
            t0 = time.perf_counter()
            try:
                ok = control.call(i, "ping")[3] == "pong"
            except (TimeoutError, Closed, OSError):
                ok = False
            lat.append(time.perf_counter() - t0)
            failures += not ok
            time.sleep(0.002)

    thread = threading.Thread(target=ping)
    thread.start()
    t0 = time.monotonic()
    with RawConn(daemon.socket) as hostile:
        for _ in range(args.tiny_frames):
            hostile.send_bytes(frame)
        answers = [hostile.response(1, timeout=120) for _ in range(args.tiny_frames)]
    elapsed = time.monotonic() - t0
    done.set()
    thread.join()
    control.close()
    mib = args.tiny_frames * len(frame) / (1 << 20)
    report.figures["tiny_items"] = {
        "frames": args.tiny_frames, "items_each": n, "seconds": round(elapsed, 2),
        "split_mib_per_s": round(mib / elapsed, 2), "control_latency_ms": latency_ms(lat),
        "control_failures": failures,
    }
    report.check("tiny items: every frame answered (invalid_params)", all(a[2] is not None for a in answers))
    report.check("tiny items: control connection served throughout", failures == 0)
    report.check(f"tiny items: control p50 under {args.tiny_p50_ms} ms",
                 latency_ms(lat)["p50"] < args.tiny_p50_ms)


def main() -> int:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--stalled", type=int, default=200, help="slowloris connections (default 200)")
    p.add_argument("--partial-kib", type=int, default=64, help="KiB each stalled connection sends (default 64)")
    p.add_argument("--stall", type=float, default=3.0, help="seconds the partial frames are held (default 3)")
    p.add_argument("--control-calls", type=int, default=500, help="control status calls per phase (default 500)")
    p.add_argument("--subs", type=int, default=4, help="subscriptions of the never-reading subscriber (default 4)")
    p.add_argument("--key-ops", type=int, default=3000, help="keys.set/clear calls publishing events (default 3000)")
    p.add_argument("--unread", type=int, default=100_000, help="requests of the never-reading client (default 100000)")
    p.add_argument("--subscribe-attempts", type=int, default=1000, help="subscribes on one connection (default 1000)")
    p.add_argument("--tiny-frames", type=int, default=1, help="16 MiB frames of one-byte items (default 1)")
    p.add_argument("--tiny-p50-ms", type=float, default=20.0,
                   help="fail if the control p50 during those frames is higher (default 20)")
    p.add_argument("--rss-growth-mib", type=float, default=16.0, help="RSS growth allowed per phase (default 16)")
    args = p.parse_args()
    report = Report("readers", {k: v for k, v in vars(args).items() if k != "json"})
    raise_own_fd_limit(args.stalled + 100)
    with temp_home() as home, running_daemon(home) as daemon:
        with RawConn(daemon.socket) as warm:
            warm.call(1, "status")
        slowloris(report, daemon, args)
        never_reading_subscriber(report, daemon, args)
        never_reading_client(report, daemon, args)
        subscription_limit(report, daemon, args)
        tiny_items(report, daemon, args)
        report.figures["daemon_log"] = log_events(daemon)
        report.check("daemon alive at the end", daemon.proc is not None and daemon.proc.poll() is None)
    return report.finish(args.json)


if __name__ == "__main__":
    raise SystemExit(main())
