"""Load: many idle connections held open while clients hammer ``status``, and memory over many requests.

    .venv/bin/python stress/load.py                       # 1000 idle conns, 64 clients for 5 s, 200k requests
    .venv/bin/python stress/load.py --requests 1000000    # the 1M figure in docs/reliability.md
    .venv/bin/python stress/load.py --json

Phase 1 opens ``--conns`` connections, has each answer a ``ping`` (so each was
really accepted and served, not just queued in the backlog), and holds them
open. Phase 2: ``--clients`` connections in ``--procs`` worker processes send
``status`` back to back (closed loop: each waits for its reply) for
``--duration`` seconds; throughput, latency and errors are reported. Then every
idle connection must still answer. Phase 3 sends ``--requests`` requests
(status, ping, hello, settings.get and an unknown method) pipelined over a few
connections and compares the daemon's RSS, fds and threads before and after.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from typing import Any

import msgpack

from common import (
    Report, latency_ms, log_events, nofile_limits, parser, raise_own_fd_limit, resources, running_daemon, temp_home,
)
from aclient import AConn

# Phase 3's mix: mostly the hot path, plus an async method, the inline ping/hello and the error path.
MIX = [("status", 14), ("ping", 2), ("hello", 2), ("settings.get", 1), ("no.such.method", 1)]


# phase 1: idle connections ------------------------------------------------------


async def open_idle(path: str, count: int) -> tuple[list[AConn], int]:
    """Open ``count`` connections; each must answer a ping. Returns them and how many failed."""
    conns: list[AConn] = []
    failed = 0
    for start in range(0, count, 250):  # in bursts, as when many editors or scripts start at once
        batch = await asyncio.gather(*(AConn.open(path) for _ in range(min(250, count - start))),
                                     return_exceptions=True)
        for c in batch:
            if isinstance(c, AConn):
                conns.append(c)
            else:
                failed += 1
    failed += await ping_all(conns)
    return conns, failed


async def ping_all(conns: list[AConn]) -> int:
    async def one(c: AConn) -> bool:
        try:
            return (await asyncio.wait_for(c.call("ping"), 20))[3] == "pong"
        except (OSError, ConnectionError, asyncio.TimeoutError, AssertionError):
            return False

    results = await asyncio.gather(*(one(c) for c in conns))
    return results.count(False)


# phase 2: the hammer -----------------------------------------------------------


def hammer_worker(path: str, clients: int, duration: float, out: Any) -> None:
    """One worker process: ``clients`` closed-loop status callers for ``duration`` s."""

    async def run() -> tuple[list[float], int]:
        conns = [await AConn.open(path) for _ in range(clients)]
        latencies: list[float] = []
        errors = 0
        deadline = time.monotonic() + duration

        async def loop(c: AConn) -> None:
            nonlocal errors
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                try:
                    reply = await c.call("status")
                except (OSError, ConnectionError):
                    errors += 1
                    return
                latencies.append(time.perf_counter() - t0)
                if reply[2] is not None:
                    errors += 1

        await asyncio.gather(*(loop(c) for c in conns))
        for c in conns:
            await c.close()
        return latencies, errors

    latencies, errors = asyncio.run(run())
    out.put((latencies, errors))


def hammer(path: str, clients: int, procs: int, duration: float) -> dict[str, Any]:
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    shares = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    workers = [ctx.Process(target=hammer_worker, args=(path, n, duration, out)) for n in shares if n]
    t0 = time.monotonic()
    for w in workers:
        w.start()
    latencies: list[float] = []
    errors = 0
    for _ in workers:
        lat, err = out.get(timeout=duration + 120)
        latencies += lat
        errors += err
    for w in workers:
        w.join()
    elapsed = time.monotonic() - t0
    return {
        "requests": len(latencies),
        "errors": errors,
        "throughput_per_s": round(len(latencies) / duration, 1),
        "wall_s": round(elapsed, 2),
        "latency_ms": latency_ms(latencies),
    }


# phase 3: many requests ---------------------------------------------------------


async def pipelined(path: str, total: int, pipes: int, window: int) -> dict[str, Any]:
    """Send ``total`` requests over ``pipes`` connections, ``window`` in flight on each."""
    frames = []
    for method, weight in MIX:
        frames += [msgpack.packb([0, 0, method, []])] * weight
    errors = {"unexpected": 0}

    async def pipe(share: int) -> None:
        c = await AConn.open(path)
        sent = received = 0
        while received < share:
            burst = []
            while sent < share and sent - received < window:
                frame = bytearray(frames[sent % len(frames)])
                frame[1] = 0  # msgid 0 for all: replies are only counted, never matched
                burst.append(bytes(frame))
                sent += 1
            c.send(b"".join(burst))
            want = min(window // 2 or 1, sent - received)
            for _ in range(want):
                msg = await c.recv()
                received += 1
                if msg[2] is not None and not str(msg[2][1]).startswith("no_method"):
                    errors["unexpected"] += 1
        await c.close()

    t0 = time.monotonic()
    shares = [total // pipes + (1 if i < total % pipes else 0) for i in range(pipes)]
    await asyncio.gather(*(pipe(n) for n in shares))
    elapsed = time.monotonic() - t0
    return {"requests": total, "seconds": round(elapsed, 2), "per_s": round(total / elapsed, 1),
            "unexpected_errors": errors["unexpected"]}


# main -------------------------------------------------------------------------


def main() -> int:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--conns", type=int, default=1000, help="idle connections held open (default 1000)")
    p.add_argument("--clients", type=int, default=64, help="clients hammering status (default 64)")
    p.add_argument("--procs", type=int, default=4, help="worker processes the clients run in (default 4)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds of hammering (default 5)")
    p.add_argument("--requests", type=int, default=200_000, help="requests for the memory figure (default 200000)")
    p.add_argument("--pipes", type=int, default=8, help="connections those requests use (default 8)")
    p.add_argument("--window", type=int, default=64, help="requests in flight per pipe (default 64)")
    p.add_argument("--rss-growth-mib", type=float, default=16.0,
                   help="fail if RSS grows more than this over --requests (default 16)")
    p.add_argument("--daemon-soft-limit", type=int, default=1024,
                   help="start the daemon with this soft fd limit, as a login session often does (default 1024)")
    args = p.parse_args()
    report = Report("load", {k: v for k, v in vars(args).items() if k != "json"})
    own_soft = raise_own_fd_limit(args.conns + args.clients + 100)
    if own_soft < args.conns + 100:
        report.notes.append(f"this process may open only {own_soft} files; fewer connections will open")

    with temp_home() as home, running_daemon(home, soft_fd_limit=args.daemon_soft_limit) as daemon:
        path = str(daemon.socket)
        soft, hard = nofile_limits(daemon.pid)
        report.figures["fd_limit"] = {"daemon_started_with_soft": args.daemon_soft_limit, "daemon_soft": soft,
                                      "daemon_hard": hard, "stress_soft": own_soft}
        report.check("daemon raised its soft fd limit to the hard one (or 65536)", soft >= min(hard, 65536))

        async def phases() -> None:
            base = resources(daemon.pid)
            conns, failed = await open_idle(path, args.conns)
            held = resources(daemon.pid)
            report.figures["idle_connections"] = {
                "opened_and_served": len(conns) - failed, "failed": failed,
                "connects_refused_backlog_full": AConn.backlog_full,
                "daemon_fds": held["fds"], "rss_kib_before": base["rss_kib"], "rss_kib_held": held["rss_kib"],
                "rss_kib_per_conn": round((held["rss_kib"] - base["rss_kib"]) / max(1, len(conns)), 2),
            }
            report.check(f"all {args.conns} idle connections accepted and served", failed == 0 and len(conns) == args.conns)
            report.check("no connect refused because the accept backlog was full", AConn.backlog_full == 0)
            loop = asyncio.get_running_loop()
            ham = await loop.run_in_executor(None, hammer, path, args.clients, args.procs, args.duration)
            report.figures["hammer_status"] = ham
            report.check("hammer: no errors", ham["errors"] == 0)
            still = await ping_all(conns)
            report.figures["idle_connections"]["failed_after_hammer"] = still
            report.check("every idle connection still served after the hammer", still == 0)
            for c in conns:
                await c.close()

            warm = await pipelined(path, min(20_000, args.requests), args.pipes, args.window)
            before = resources(daemon.pid)
            # In tenths, with RSS after each: a leak climbs steadily, allocator warm-up levels off.
            tenths = [args.requests // 10 + (1 if i < args.requests % 10 else 0) for i in range(10)]
            series, seconds, unexpected = [], 0.0, 0
            for share in tenths:
                part = await pipelined(path, share, args.pipes, args.window)
                seconds += part["seconds"]
                unexpected += part["unexpected_errors"]
                series.append(resources(daemon.pid)["rss_kib"])
            run = {"requests": args.requests, "seconds": round(seconds, 2), "per_s": round(args.requests / seconds, 1),
                   "unexpected_errors": unexpected}
            await asyncio.sleep(0.5)
            after = resources(daemon.pid)
            growth_mib = (after["rss_kib"] - before["rss_kib"]) / 1024
            report.figures["many_requests"] = {
                **run, "warmup_requests": warm["requests"],
                "rss_kib_before": before["rss_kib"], "rss_kib_after": after["rss_kib"],
                "rss_growth_mib": round(growth_mib, 2), "rss_kib_each_tenth": series,
                "fds_before": before["fds"], "fds_after": after["fds"],
                "threads_before": before["threads"], "threads_after": after["threads"],
            }
            report.check("many requests: no unexpected errors", run["unexpected_errors"] == 0)
            report.check(f"RSS grew less than {args.rss_growth_mib} MiB over {args.requests} requests",
                         growth_mib < args.rss_growth_mib)
            report.check("no fd leaked over the requests", after["fds"] <= before["fds"])

        asyncio.run(phases())
        report.figures["daemon_log"] = log_events(daemon)
        report.check("daemon alive at the end", daemon.proc is not None and daemon.proc.poll() is None)
    return report.finish(args.json)


if __name__ == "__main__":
    raise SystemExit(main())
