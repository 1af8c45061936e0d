"""takod's RPC speed against the least a Python msgpack-rpc server can do, and against Neovim's.

    python bench/rpc.py [--n 5000] [--rounds 10] [--clients 1,8,64] [--duration 1.5] [--threads] [--no-nvim] [--json]

Three servers run side by side: a real takod daemon (temporary HOME, log level
info) answering ``status``; bench/echo_server.py, which answers every request
with a captured takod ``status`` result (same bytes, same size); and
``nvim --headless --clean --listen SOCKET`` answering ``nvim_get_mode``
(Neovim's own RPC server, C on libuv; a ~30 byte reply). All are driven
through the same ``takod.Client`` (same framing, same decoding; for nvim the
client's pipelined ``hello`` is answered with nvim's "Invalid method" error,
read once and dropped), in interleaved rounds, so the ratios cancel most of
the machine's noise.

1. Latency: sequential round trips on one connection each; p50/p90/p99 and
   the p50 ratios takod/echo and takod/nvim (target <= 1.3 each). Also the
   CPU each server process and this client spend per call.
2. Throughput: 1, 8 and 64 concurrent clients (processes, or threads with
   ``--threads``), each with its own Client, calling back to back for
   ``--duration`` seconds; requests/s, the ratios to each baseline, and each
   server's CPU per request. Processes are the default because threads share
   one GIL: on a small machine they measure the client, not the server.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import queue
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import msgspec

from common import (
    clean_env,
    cpu_seconds,
    echo_server,
    emit,
    interleave,
    load_average,
    machine,
    pin,
    median,
    nvim_server,
    Server,
    ratio,
    summary,
    takod_daemon,
    temp_home,
    verdict,
)
from takod import Client, RemoteError
from tests.harness import DaemonProcess

LATENCY_TARGET = 1.3
BASELINES = ("echo", "nvim", "before")
METHODS = {"takod": "status", "ping": "ping", "echo": "status", "nvim": "nvim_get_mode", "before": "status"}


def connect(sock: Path, method: str) -> Client:
    client = Client(sock, spawn=False, timeout=60).connect()
    if method.startswith("nvim_"):
        # Neovim has no `hello`: take its error reply now, so calls see only their own.
        hello, client._hello_id = client._hello_id, None
        try:
            client.wait(hello)
        except RemoteError:
            pass
    client.call(method)  # takod's hello is answered together with this call
    return client


# latency ----------------------------------------------------------------------


def latency(servers: dict[str, Server], n: int, rounds: int) -> dict[str, Any]:
    clients = {name: connect(s.socket, METHODS[name]) for name, s in servers.items()}
    per_round = max(1, n // rounds)
    samples: dict[str, list[float]] = {name: [] for name in servers}
    round_p50: dict[str, list[float]] = {name: [] for name in servers}
    server_cpu = dict.fromkeys(servers, 0.0)
    client_cpu = dict.fromkeys(servers, 0.0)
    try:
        sizes = {name: len(msgspec.msgpack.encode(c.call(METHODS[name]))) for name, c in clients.items()}
        for _ in range(200):  # warm up every server and this process
            for name, c in clients.items():
                c.call(METHODS[name])
        for _, name in interleave(rounds, list(servers)):
            call, method, pid, block = clients[name].call, METHODS[name], servers[name].pid, []
            cpu0, mine0 = cpu_seconds(pid), time.process_time()
            for _ in range(per_round):
                t0 = time.perf_counter_ns()
                call(method)
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
    result["target"] = LATENCY_TARGET
    result["vs"] = {}
    for base in BASELINES:
        if base not in servers:
            continue
        round_ratios = [ratio(a, b) for a, b in zip(round_p50["takod"], round_p50[base])]
        p50_ratio = ratio(per["takod"]["p50"], per[base]["p50"])
        result["vs"][base] = {
            "p50_ratio": p50_ratio,
            "p50_ratio_rounds": {"min": min(round_ratios), "median": median(round_ratios), "max": max(round_ratios)},
            # `before` is another checkout's daemon (--before): a before/after figure, not a target
            "verdict": verdict(p50_ratio, LATENCY_TARGET) if base != "before" else "info",
        }
    if "ping" in servers and "nvim" in servers:  # context: the same hop with a reply as small as nvim's
        result["ping_vs_nvim_p50_ratio"] = ratio(per["ping"]["p50"], per["nvim"]["p50"])
    return result


# throughput -------------------------------------------------------------------


def _client_loop(sock: Path, method: str, start: Any, stop: Any, out: Any) -> None:
    """One concurrent client (thread or process): call until told to stop; report the count."""
    count = 0
    try:
        with connect(sock, method) as client:
            start.wait()
            while not stop.is_set():
                client.call(method)
                count += 1
    except BaseException:
        start.abort()  # nobody waits forever for a client that failed
        raise
    finally:
        out.put(count)


def run_clients(server: Server, method: str, clients: int, duration: float, procs: bool) -> dict[str, float]:
    """``clients`` concurrent callers for ``duration`` s: requests/s and server CPU per request."""
    args = (server.socket, method)
    if procs:
        mp = multiprocessing.get_context("fork")
        start, stop, out = mp.Barrier(clients + 1), mp.Event(), mp.SimpleQueue()
        workers: list[Any] = [mp.Process(target=_client_loop, args=(*args, start, stop, out)) for _ in range(clients)]
    else:
        start, stop, out = threading.Barrier(clients + 1), threading.Event(), queue.SimpleQueue()
        workers = [threading.Thread(target=_client_loop, args=(*args, start, stop, out)) for _ in range(clients)]
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
        for _, name in interleave(rounds, list(servers)):
            runs[name].append(run_clients(servers[name], METHODS[name], clients, duration, procs))
        rps = {name: [r["rps"] for r in runs[name]] for name in servers}
        cell: dict[str, Any] = {
            name: {
                "rps_median": median(rps[name]),
                "rps_rounds": rps[name],
                "server_cpu_us_per_req": median([r["server_cpu_us_per_req"] for r in runs[name]]),
            }
            for name in servers
        }
        bases = [base for base in BASELINES if base in servers]
        cell["ratio"] = {base: ratio(cell["takod"]["rps_median"], cell[base]["rps_median"]) for base in bases}
        cell["ratio_rounds"] = {base: [ratio(a, b) for a, b in zip(rps["takod"], rps[base])] for base in bases}
        result["cells"][str(clients)] = cell
    return result


# report -----------------------------------------------------------------------


def render(report: dict[str, Any]) -> str:
    m, lat, tp = report["machine"], report["latency"], report.get("throughput")
    names = list(lat["per_server"])
    bases = list(lat["vs"])
    lines = [
        f"machine: {m['nproc']} CPU(s), {m['cpu']}, {m['implementation']} {m['python']}, "
        f"load average {'/'.join(map(str, report['load_average']))}",
        (f"latency: client and every server pinned to CPU {report['pinned']}" if "pinned" in report
         else "latency: not pinned"),
        "reply result: " + ", ".join(f"{n} `{METHODS[n]}` {lat['reply_result_bytes'][n]} B" for n in names),
        "",
        f"latency: {report['args']['n']} sequential calls per server, "
        f"{report['args']['rounds']} interleaved rounds (µs)",
        f"  {'server':<7}{'p50':>9}{'p90':>9}{'p99':>9}{'server CPU/call':>18}{'client CPU/call':>18}",
    ]
    for name, s in lat["per_server"].items():
        lines.append(
            f"  {name:<7}{s['p50']:>9.1f}{s['p90']:>9.1f}{s['p99']:>9.1f}"
            f"{s['server_cpu_us_per_call']:>18.1f}{s['client_cpu_us_per_call']:>18.1f}"
        )
    for base, v in lat["vs"].items():
        r = v["p50_ratio_rounds"]
        lines.append(
            f"  p50 ratio takod/{base}: {v['p50_ratio']:.2f} (target <= {lat['target']}) {v['verdict']}"
            f"   per round: min {r['min']:.2f}, median {r['median']:.2f}, max {r['max']:.2f}"
        )
    if "ping_vs_nvim_p50_ratio" in lat:
        lines.append(f"  context: p50 ratio takod `ping`/nvim (replies of the same size): {lat['ping_vs_nvim_p50_ratio']:.2f}")
    if tp:
        names = list(tp["cells"][next(iter(tp["cells"]))]["ratio"])
        names.insert(0, "takod")
        lines += [
            "",
            f"throughput: back to back, {tp['mode']}, {tp['duration_s']} s per run, "
            f"{report['args']['tp_rounds']} interleaved rounds (median requests/s; server CPU per request)",
            f"  {'clients':<8}" + "".join(f"{n:>9}" for n in names) + "".join(f"{'takod/' + b:>13}" for b in bases)
            + "".join(f"{n + ' CPU':>12}" for n in names),
        ]
        for clients, cell in sorted(tp["cells"].items(), key=lambda kv: int(kv[0])):
            lines.append(
                f"  {clients:<8}" + "".join(f"{cell[n]['rps_median']:>9.0f}" for n in names)
                + "".join(f"{cell['ratio'][b]:>13.2f}" for b in bases)
                + "".join(f"{cell[n]['server_cpu_us_per_req']:>10.1f}µs" for n in names)
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
    p.add_argument("--no-nvim", action="store_true", help="leave out the Neovim baseline")
    p.add_argument("--before", type=Path, metavar="CHECKOUT",
                   help="also measure the daemon of another checkout (e.g. a worktree of main): before/after in one run")
    p.add_argument("--no-pin", dest="pin", action="store_false",
                   help="latency: let the scheduler place processes (default: the client and every server share one CPU)")
    p.add_argument("--log-level", default="info", choices=["debug", "info"], help="takod's log level (default info)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    args = p.parse_args()
    concurrency = [int(c) for c in args.clients.split(",") if c.strip()]
    emit(run(args, concurrency), args.json, render)


def run(args: argparse.Namespace, concurrency: list[int]) -> dict[str, Any]:
    """The whole benchmark, as a report (bench/all.py calls this too)."""
    report: dict[str, Any] = {"machine": machine(), "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    with temp_home() as home, takod_daemon(home, args.log_level) as takod, ExitStack() as stack:
        with Client(takod.socket, spawn=False) as c:
            canned = c.call("status")
        servers = {"takod": Server(takod.pid, takod.socket), "echo": stack.enter_context(echo_server(home, canned))}
        if not args.no_nvim:
            servers["nvim"] = stack.enter_context(nvim_server(home))
        if args.before:
            other = stack.enter_context(temp_home())
            code = os.pathsep.join(str(args.before / part) for part in ("client", "daemon"))
            before = DaemonProcess(other, clean_env(other, PYTHONPATH=code)).start("--log-level", args.log_level)
            stack.callback(before.stop)
            servers["before"] = Server(before.pid, before.socket)
        cpus = sorted(os.sched_getaffinity(0))
        if args.pin:
            # Whether a client and its server share a core changes a round trip by
            # more than the servers differ: for latency, all share the first CPU.
            for pid in (0, *(server.pid for server in servers.values())):
                pin(pid, {cpus[0]})
            report["pinned"] = cpus[0]
        report["latency"] = latency({**servers, "ping": servers["takod"]}, args.n, args.rounds)
        if args.pin:  # throughput: let the scheduler spread the load again
            for pid in (0, *(server.pid for server in servers.values())):
                pin(pid, set(cpus))
        if concurrency:
            report["throughput"] = throughput(servers, concurrency, args.duration, args.tp_rounds, not args.threads)
    report["load_average"] = load_average()
    return report


if __name__ == "__main__":
    main()
