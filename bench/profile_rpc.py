"""Where a takod request's time goes, per call: event-loop passes, syscalls, hot functions.

    python bench/profile_rpc.py [--n 3000] [--method status] [--top 25] [--no-strace]

Runs a takod daemon under cProfile in a temporary HOME, makes ``--n``
sequential calls through ``takod.Client``, stops it and prints per-call
figures. Counts (loop passes, calls, syscalls) are exact; times are inflated
by the profiler, so read them as shares. With strace installed it also
counts the daemon's syscalls per call in a second, unprofiled run.
The same figures for bench/echo_server.py are the floor to compare with.
"""

from __future__ import annotations

import argparse
import pstats
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from common import clean_env, echo_server, machine, spawn_ready, stop, takod_daemon, temp_home
from takod import Client

# Runs the daemon's main(); SIGUSR1 starts cProfile (after start-up and warm-up),
# and the profile is written however the daemon leaves (it ends with os._exit
# so that a hung keyring thread cannot hold it).
PROFILED_DAEMON = """
import cProfile, os, signal, sys
out, argv = sys.argv[1], sys.argv[2:]
prof, real_exit = cProfile.Profile(), os._exit
def dump_and_exit(code):
    prof.disable()
    prof.dump_stats(out)
    real_exit(code)
os._exit = dump_and_exit
signal.signal(signal.SIGUSR1, lambda *_: prof.enable())
from takod_daemon.main import main
dump_and_exit(main(argv))
"""


def calls(sock: Path, method: str, n: int) -> None:
    with Client(sock, spawn=False, timeout=60) as c:
        for _ in range(n):
            c.call(method)


def cprofile(home: Path, method: str, n: int, top: int) -> None:
    out = home / "daemon.prof"
    env = clean_env(home)
    argv = [sys.executable, "-c", PROFILED_DAEMON, str(out), "--log", "json", "--log-level", "info"]
    proc = spawn_ready(argv, env, cwd=home, log=home / "daemon.stderr")
    try:
        calls(Path(env["TAKOD_SOCKET"]), method, 200)  # warm up: first-use loading is not per call
        proc.send_signal(signal.SIGUSR1)
        calls(Path(env["TAKOD_SOCKET"]), method, 1)  # the signal is handled before this call is served
        profile_start = time.perf_counter()
        calls(Path(env["TAKOD_SOCKET"]), method, n)
        wall = time.perf_counter() - profile_start
    finally:
        stop(proc)  # SIGTERM: the daemon stops cleanly and cProfile writes its file
    stats = pstats.Stats(str(out))
    entries = stats.stats  # type: ignore[attr-defined]
    passes = sum(v[1] for k, v in entries.items() if k[2] == "_run_once")
    total = n + 1
    print(f"cProfile, {n} `{method}` calls ({wall / n * 1e6:.0f} µs each under the profiler)")
    if passes:
        print(f"  event-loop passes per call: {passes / total:.2f}")
        print("  (epoll's time includes idling until the next request; send's includes waking the client)")
    else:  # uvloop runs its loop in C, where cProfile does not see it
        print("  event-loop passes per call: not counted on uvloop (epoll_pwait per call in the syscalls below)")
        print("  (the loop's own time, reads and writes show as the callback that ran them, e.g. _drain)")
    print(f"  functions run at least once per call, by own time:\n  {'calls/req':>9} {'tottime/req':>12}  function")
    per_request = [kv for kv in entries.items() if kv[1][1] >= n]
    rows = sorted(per_request, key=lambda kv: -kv[1][2])[:top]
    for (file, line, func), (_cc, ncalls, tottime, _ct, _callers) in rows:
        where = f"{Path(file).parent.name}/{Path(file).name}:{line}" if line else file
        print(f"  {ncalls / total:>9.2f} {tottime / total * 1e6:>10.1f}µs  {func}  ({where})")
    callers = [(file, line, func) for (file, line, func) in entries if func in ("stat", "lstat", "__repr__")]
    for key in callers:
        if entries[key][1] >= n:
            names = ", ".join(f"{c[2]} ({Path(c[0]).name}:{c[1]})" for c in entries[key][4])
            print(f"  {key[2]} is called from: {names}")


def syscalls(pid: int, sock: Path, method: str, n: int) -> dict[str, float]:
    """Syscalls per call of process ``pid`` while serving ``n`` calls (strace -c)."""
    calls(sock, method, 100)
    report = sock.with_suffix(".strace")
    tracer = subprocess.Popen(["strace", "-c", "-f", "-p", str(pid), "-o", str(report)], stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # strace attaches asynchronously
    calls(sock, method, n)
    tracer.send_signal(signal.SIGINT)
    tracer.wait(10)
    counts = {}
    for line in report.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[3].isdigit() and parts[-1] != "total":
            counts[parts[-1]] = int(parts[3]) / n
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--method", default="status")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--no-strace", action="store_true")
    args = p.parse_args()
    m = machine()
    print(f"machine: {m['nproc']} CPU(s), {m['cpu']}, {m['implementation']} {m['python']}\n")
    with temp_home() as home:
        cprofile(home, args.method, args.n, args.top)
    if args.no_strace or not shutil.which("strace"):
        return
    with temp_home() as home, takod_daemon(home) as takod:
        with Client(takod.socket, spawn=False) as c:
            canned = c.call(args.method)
        with echo_server(home, canned) as echo:
            # strace slows every syscall down: keep n small
            per = {name: syscalls(s.pid, s.socket, args.method, min(args.n, 1000)) for name, s in
                   (("takod", takod), ("echo", echo))}
    print(f"\nsyscalls per `{args.method}` call (strace -c -f)")
    for name, counts in per.items():
        total = sum(counts.values())
        print(f"  {name:<6} {total:6.2f}  " + ", ".join(f"{k} {v:.2f}" for k, v in counts.items() if v >= 0.01))


if __name__ == "__main__":
    main()
