"""takod's RPC speed against the least a Python msgpack-rpc server can do.

    python bench/rpc.py [--n 5000] [--rounds 10] [--clients 1,8,64] [--duration 1.5] [--threads] [--json]

Two servers run side by side: a real takod daemon (temporary HOME, log level
info) and bench/echo_server.py, which answers every request with a captured
takod ``status`` result (same bytes, same size). Both are driven through the
same ``takod.Client``, in interleaved rounds, so the ratios cancel most of
the machine's noise.

1. Latency: sequential ``status`` round trips on one connection each;
   p50/p90/p99 and the p50 ratio takod/echo (target <= 1.3). Also the CPU
   each server process and this client spend per call.
2. Throughput: 1, 8 and 64 concurrent clients (processes, or threads with
   ``--threads``), each with its own Client, calling ``status`` back to back
   for ``--duration`` seconds; requests/s, the ratio takod/echo, and each
   server's CPU per request. Processes are the default because threads share
   one GIL: on a small machine they measure the client, not the server.
"""

from __future__ import annotations

import argparse
import multiprocessing
import queue
import threading
import time
from pathlib import Path
from typing import Any

import msgspec

from common import (
    cpu_seconds,
    echo_server,
    emit,
    interleave,
    machine,
    median,
    Server,
    ratio,
    summary,
    takod_daemon,
    temp_home,
    verdict,
)
from takod import Client

LATENCY_TARGET = 1.3
TARGETS = ("takod", "echo")


def connect(sock: Path) -> Client:
    client = Client(sock, spawn=False, timeout=60).connect()
    client.call("status")  # the hello is answered together with this call
    return client


# latency ----------------------------------------------------------------------


def latency(servers: dict[str, Server], n: int, rounds: int) -> dict[str, Any]:
    clients = {name: connect(s.socket) for name, s in servers.items()}
    per_round = max(1, n // rounds)
    samples: dict[str, list[float]] = {name: [] for name in servers}
    round_p50: dict[str, list[float]] = {name: [] for name in servers}
    server_cpu = dict.fromkeys(servers, 0.0)
    client_cpu = dict.fromkeys(servers, 0.0)
    try:
        sizes = {name: len(msgspec.msgpack.encode(c.call("status"))) for name, c in clients.items()}
        for _ in range(200):  # warm up both servers and this process
            for c in clients.values():
                c.call("status")
        for _, name in interleave(rounds, TARGETS):
            call, pid, block = clients[name].call, servers[name].pid, []
            cpu0, mine0 = cpu_seconds(pid), time.process_time()
            for _ in range(per_round):
                t0 = time.perf_counter_ns()
                call("status")
                block.append((time.perf_counter_ns() - t0) / 1000)
            server_cpu[name] += cpu_seconds(pid) - cpu0
            client_cpu[name] += time.process_time() - mine0
            samples[name] += block
            round_p50[name].append(summary(block)["p50"])
    finally:
        for c in clients.values():
            c.close()
    result: dict[str, Any] = {"per_server": {}, "reply_result_bytes": sizes}
    for name in servers:
        calls = len(samples[name])
        result["per_server"][name] = {
            **summary(samples[name]),
            "server_cpu_us_per_call": server_cpu[name] / calls * 1e6,
            "client_cpu_us_per_call": client_cpu[name] / calls * 1e6,
        }
    per = result["per_server"]
    round_ratios = [ratio(a, b) for a, b in zip(round_p50["takod"], round_p50["echo"])]
    result["p50_ratio"] = ratio(per["takod"]["p50"], per["echo"]["p50"])
    result["p50_ratio_rounds"] = {"min": min(round_ratios), "median": median(round_ratios), "max": max(round_ratios)}
    result["target"] = LATENCY_TARGET
    result["verdict"] = verdict(result["p50_ratio"], LATENCY_TARGET)
    return result


# throughput -------------------------------------------------------------------


def _client_loop(sock: Path, start: Any, stop: Any, out: Any) -> None:
    """One concurrent client (thread or process): call until told to stop; report the count."""
    count = 0
    try:
        with connect(sock) as client:
            start.wait()
            while not stop.is_set():
                client.call("status")
                count += 1
    except BaseException:
        start.abort()  # nobody waits forever for a client that failed
        raise
    finally:
        out.put(count)


def run_clients(server: Server, clients: int, duration: float, procs: bool) -> dict[str, float]:
    """``clients`` concurrent callers for ``duration`` s: requests/s and server CPU per request."""
    if procs:
        mp = multiprocessing.get_context("fork")
        start, stop, out = mp.Barrier(clients + 1), mp.Event(), mp.SimpleQueue()
        workers: list[Any] = [mp.Process(target=_client_loop, args=(server.socket, start, stop, out)) for _ in range(clients)]
    else:
        start, stop, out = threading.Barrier(clients + 1), threading.Event(), queue.SimpleQueue()
        workers = [threading.Thread(target=_client_loop, args=(server.socket, start, stop, out)) for _ in range(clients)]
    for w in workers:
        w.start()
    start.wait(timeout=60)
    cpu0, t0 = cpu_seconds(server.pid), time.perf_counter()
    time.sleep(duration)
    stop.set()
    elapsed = time.perf_counter() - t0
    for w in workers:
        w.join()
    cpu = cpu_seconds(server.pid) - cpu0
    total = sum(out.get() for _ in workers)
    return {"rps": total / elapsed, "server_cpu_us_per_req": cpu / total * 1e6 if total else float("nan")}


def throughput(
    servers: dict[str, Server], concurrency: list[int], duration: float, rounds: int, procs: bool
) -> dict[str, Any]:
    result: dict[str, Any] = {"mode": "processes" if procs else "threads", "duration_s": duration, "cells": {}}
    for clients in concurrency:
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
        for _, name in interleave(rounds, TARGETS):
            runs[name].append(run_clients(servers[name], clients, duration, procs))
        rps = {name: [r["rps"] for r in runs[name]] for name in servers}
        cell: dict[str, Any] = {
            name: {
                "rps_median": median(rps[name]),
                "rps_rounds": rps[name],
                "server_cpu_us_per_req": median([r["server_cpu_us_per_req"] for r in runs[name]]),
            }
            for name in servers
        }
        cell["ratio"] = ratio(cell["takod"]["rps_median"], cell["echo"]["rps_median"])
        cell["ratio_rounds"] = [ratio(a, b) for a, b in zip(rps["takod"], rps["echo"])]
        result["cells"][str(clients)] = cell
    return result


# report -----------------------------------------------------------------------


def render(report: dict[str, Any]) -> str:
    m, lat, tp = report["machine"], report["latency"], report.get("throughput")
    lines = [
        f"machine: {m['nproc']} CPU(s), {m['cpu']}, {m['implementation']} {m['python']}",
        f"status result: takod {lat['reply_result_bytes']['takod']} B, echo {lat['reply_result_bytes']['echo']} B",
        "",
        f"latency: {report['args']['n']} sequential `status` calls per server, "
        f"{report['args']['rounds']} interleaved rounds (µs)",
        f"  {'server':<7}{'p50':>9}{'p90':>9}{'p99':>9}{'server CPU/call':>18}{'client CPU/call':>18}",
    ]
    for name, s in lat["per_server"].items():
        lines.append(
            f"  {name:<7}{s['p50']:>9.1f}{s['p90']:>9.1f}{s['p99']:>9.1f}"
            f"{s['server_cpu_us_per_call']:>18.1f}{s['client_cpu_us_per_call']:>18.1f}"
        )
    r = lat["p50_ratio_rounds"]
    lines.append(
        f"  p50 ratio takod/echo: {lat['p50_ratio']:.2f} (target <= {lat['target']}) {lat['verdict']}"
        f"   per round: min {r['min']:.2f}, median {r['median']:.2f}, max {r['max']:.2f}"
    )
    if tp:
        lines += [
            "",
            f"throughput: `status` back to back, {tp['mode']}, {tp['duration_s']} s per run, "
            f"{report['args']['tp_rounds']} interleaved rounds (median requests/s)",
            f"  {'clients':<8}{'takod':>9}{'echo':>9}{'takod/echo':>12}{'takod CPU/req':>15}{'echo CPU/req':>14}",
        ]
        for clients, cell in tp["cells"].items():
            lines.append(
                f"  {clients:<8}{cell['takod']['rps_median']:>9.0f}{cell['echo']['rps_median']:>9.0f}"
                f"{cell['ratio']:>12.2f}{cell['takod']['server_cpu_us_per_req']:>13.1f}µs"
                f"{cell['echo']['server_cpu_us_per_req']:>12.1f}µs"
            )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=5000, help="latency: round trips per server (default 5000)")
    p.add_argument("--rounds", type=int, default=10, help="latency: interleaved rounds (default 10)")
    p.add_argument("--clients", default="1,8,64", help="throughput: concurrency levels (default 1,8,64; '' skips)")
    p.add_argument("--duration", type=float, default=1.5, help="throughput: seconds per run (default 1.5)")
    p.add_argument("--tp-rounds", type=int, default=3, help="throughput: interleaved rounds per level (default 3)")
    p.add_argument("--threads", action="store_true", help="throughput: one thread per client instead of a process")
    p.add_argument("--log-level", default="info", choices=["debug", "info"], help="takod's log level (default info)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    args = p.parse_args()
    concurrency = [int(c) for c in args.clients.split(",") if c.strip()]

    report: dict[str, Any] = {"machine": machine(), "args": vars(args)}
    with temp_home() as home, takod_daemon(home, args.log_level) as takod:
        with Client(takod.socket, spawn=False) as c:
            canned = c.call("status")
        with echo_server(home, canned) as echo:
            servers = {"takod": Server(takod.pid, takod.socket), "echo": echo}
            report["latency"] = latency(servers, args.n, args.rounds)
            if concurrency:
                report["throughput"] = throughput(servers, concurrency, args.duration, args.tp_rounds, not args.threads)
    emit(report, args.json, render)


if __name__ == "__main__":
    main()
