"""Live fuzz: mutated valid frames thrown at a running daemon over many connections.

    .venv/bin/python stress/fuzz_live.py                        # 3000 connections, 16 at a time
    .venv/bin/python stress/fuzz_live.py --connections 50000 --seed 7 --json

Mutations (tests/fuzzwire.py): bit flips, interesting bytes, truncation,
huge length headers, wrong types (type tag, msgid, method, params), nesting
around and far beyond 64, unknown methods, hostile values inside options
(wrong types, non-UTF-8 strs, exts), impossible workspace paths (NUL bytes,
relative, over PATH_MAX or NAME_MAX, non-UTF-8; a `hello` with one, then a
pipelined call that must be served), garbage, spliced frames, and pipelined
bursts with one bad frame. A control connection pings and asks for status
throughout (and opens a fresh connection every 25 calls). Passes when the
daemon never dies, the control connection is always served, no reply says
``internal`` and the daemon's log holds no error or traceback, and once every fuzz
connection is closed the daemon's fds and connections are back where they
started and its RSS grew less than ``--rss-growth-mib``.
"""

from __future__ import annotations

import asyncio
import sys
import time

from common import Report, log_events, parser, resources, running_daemon, temp_home
from tests.fuzzwire import connections_open, run_fuzz

BUGS = ("handler failed", "connection failed, closed it", "result not encodable")


def main() -> int:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--connections", type=int, default=3000, help="fuzzed connections in all (default 3000)")
    p.add_argument("--workers", type=int, default=16, help="fuzzed connections open at a time (default 16)")
    p.add_argument("--seed", type=int, default=1, help="random seed; the same seed replays the same run")
    p.add_argument("--read-for", type=float, default=0.2, help="seconds each connection reads replies (default 0.2)")
    p.add_argument("--rss-growth-mib", type=float, default=16.0, help="RSS growth allowed (default 16)")
    args = p.parse_args()
    report = Report("fuzz_live", {k: v for k, v in vars(args).items() if k != "json"})
    with temp_home() as home, running_daemon(home) as daemon:
        path = str(daemon.socket)
        warm = asyncio.run(run_fuzz(path, connections=200, workers=args.workers, seed=args.seed + 10**6,
                                    read_for=args.read_for))
        time.sleep(1)
        before = resources(daemon.pid)

        def progress(r: object) -> None:
            if not args.json:
                print(f"   ... {getattr(r, 'connections')} connections", file=sys.stderr)

        result = asyncio.run(run_fuzz(path, connections=args.connections, workers=args.workers, seed=args.seed,
                                      read_for=args.read_for, progress=progress))
        alive = daemon.proc is not None and daemon.proc.poll() is None
        open_after = connections_open(path) if alive else -1
        deadline = time.monotonic() + 10
        while alive and open_after > 1 and time.monotonic() < deadline:
            time.sleep(0.1)
            open_after = connections_open(path)
        while alive and resources(daemon.pid)["fds"] > before["fds"] and time.monotonic() < deadline + 10:
            time.sleep(0.1)  # the daemon closes its side of each connection asynchronously
        after = resources(daemon.pid) if alive else {"rss_kib": -1, "fds": -1, "threads": -1}
        logged = log_events(daemon)
        # A handler's traceback, or asyncio's "Fatal error: protocol.data_received() call failed": bugs.
        bugs = {k: v for k, v in logged.items() if k.startswith(("error", "critical")) or any(b in k for b in BUGS)}
        report.figures["fuzz"] = result.as_dict()
        report.figures["daemon"] = {
            "warmup_connections": warm.connections,
            "rss_kib_before": before["rss_kib"], "rss_kib_after": after["rss_kib"],
            "fds_before": before["fds"], "fds_after": after["fds"],
            "threads_before": before["threads"], "threads_after": after["threads"],
            "connections_open_after": open_after,
        }
        report.figures["daemon_log"] = logged
        report.check("daemon alive at the end", alive)
        report.check("control connection served throughout", not result.control_failures and result.control_calls > 0)
        report.check("no reply says internal", not result.internal_errors + warm.internal_errors)
        report.check("no error or traceback in the daemon log", not bugs)
        report.check("every fuzz connection gone once closed", open_after == 1)
        report.check("no fd leaked", 0 <= after["fds"] <= before["fds"])
        report.check(f"RSS grew less than {args.rss_growth_mib} MiB",
                     alive and (after["rss_kib"] - before["rss_kib"]) / 1024 < args.rss_growth_mib)
        for failure in result.control_failures[:5]:
            report.notes.append(f"control: {failure}")
        for sample in result.internal_errors[:5]:
            report.notes.append(f"internal error for input {sample}")
    return report.finish(args.json)


if __name__ == "__main__":
    raise SystemExit(main())
