"""Naming many workspaces must not slow anyone else down, and memory comes back.

    python bench/workspaces.py [--n 1000] [--idle 10] [--cap N] [--json]

A real daemon in a temporary HOME, ``TAKOD_WORKSPACE_IDLE_S=--idle`` (so the
idle eviction happens within the run) and the default cap, or ``--cap``
(``TAKOD_MAX_WORKSPACES``; a cap above ``--n`` leaves all to idle eviction,
which shows whether memory comes back). Two clients:

- the *prober*, in this process: ``status`` of its own workspace on one
  connection, every 2 ms, timing each round trip;
- the *namer*, a separate process: ``status`` for ``--n`` workspaces on one
  connection, one after another, timing each.

Two phases, interleaved as ``base, load, load, base`` is not possible (loading
is one-way), so they run base first, then load:

- ``one workspace``: the namer names the same workspace ``--n`` times (for at
  least 3 s): the prober's p99 with a busy but warm neighbour;
- ``new workspaces``: the namer names ``--n`` distinct new workspaces (folders
  with ``tako.toml``).

Reports the prober's p50/p99 per phase and their ratio (target: p99 under
10 ms while the new workspaces are named), the namer's per-load time for the
first and last tenth (loading must not grow with the count), and the daemon's
RSS and inotify watches: at start (after one workspace was loaded, so one-time
costs of a first load count as the start), after naming, and once idle
eviction ran.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from common import REPO, clean_env, emit, load_average, machine, median, ratio, summary, temp_home
from takod import Client
from tests.harness import DaemonProcess

TARGET_P99_MS = 10.0
PROBE_INTERVAL = 0.002
BASE_MIN_SECONDS = 3.0
THREAD_IDLE_S = 11.0  # anyio ends a worker thread idle for 10 s

NAMER = r"""
import json, sys, time
from takod import Client
sock, min_seconds, names = sys.argv[1], float(sys.argv[2]), json.loads(sys.stdin.read())
times = []
start = time.monotonic()
with Client(sock, spawn=False, timeout=120) as c:
    i = 0
    while i < len(names) or time.monotonic() - start < min_seconds:
        t0 = time.perf_counter()
        c.call("status", {"workspace": names[i % len(names)]})
        times.append((time.perf_counter() - t0) * 1000)
        i += 1
print(json.dumps(times))
"""


def inotify_watches(pid: int) -> int:
    """Watches held by every inotify descriptor of ``pid`` (/proc/PID/fdinfo)."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:inotify":
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                count += sum(1 for line in f if line.startswith("inotify wd:"))
        except OSError:
            continue
    return count


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def probe(sock: Path, stop: threading.Event, out: list[float]) -> None:
    with Client(sock, spawn=False, timeout=60) as c:
        c.call("status")
        while not stop.is_set():
            t0 = time.perf_counter()
            c.call("status")
            out.append((time.perf_counter() - t0) * 1000)
            time.sleep(PROBE_INTERVAL)


def phase(sock: Path, env: dict[str, str], names: list[str], min_seconds: float) -> dict[str, Any]:
    """Run the namer over ``names`` while probing; the prober's and the namer's times."""
    probed: list[float] = []
    stop = threading.Event()
    prober = threading.Thread(target=probe, args=(sock, stop, probed))
    prober.start()
    try:
        namer = subprocess.run([sys.executable, "-c", NAMER, str(sock), str(min_seconds)], input=json.dumps(names),
                               env=env, capture_output=True, text=True, timeout=3600)
    finally:
        stop.set()
        prober.join()
    if namer.returncode != 0:
        raise RuntimeError(f"namer failed: {namer.stderr}")
    named = json.loads(namer.stdout)
    tenth = max(1, len(named) // 10)
    return {
        "prober_ms": summary(probed),
        "namer_calls": len(named),
        "namer_first_tenth_ms": median(named[:tenth]),
        "namer_last_tenth_ms": median(named[-tenth:]),
    }


def run(n: int, idle: float, cap: int | None) -> dict[str, Any]:
    with temp_home() as home:
        env = clean_env(home, TAKOD_WORKSPACE_IDLE_S=str(idle), **({"TAKOD_MAX_WORKSPACES": str(cap)} if cap else {}))
        roots = home / "wss"
        roots.mkdir()
        names = []
        for i in range(n):
            ws = roots / f"w{i:04d}"
            ws.mkdir()
            (ws / "tako.toml").write_text("")
            names.append(str(ws))
        daemon = DaemonProcess(home, env).start("--log-level", "info")
        client_env = dict(env, PYTHONPATH=str(REPO / "client"))
        try:
            # One workspace loaded first: what the first load brings in once for good (lazy
            # imports, the HTTP client's TLS context) is part of the start, not of the many.
            unloaded = inotify_watches(daemon.pid)  # the default workspace's and the user's files only
            warm = home / "warm"
            warm.mkdir()
            (warm / "tako.toml").write_text("")
            with Client(daemon.socket, spawn=False, timeout=60) as c:
                c.call("status", {"workspace": str(warm)})
            time.sleep(1.0)
            start = {"rss_kib": rss_kib(daemon.pid), "inotify_watches": inotify_watches(daemon.pid)}
            base = phase(daemon.socket, client_env, names[:1], BASE_MIN_SECONDS)
            load = phase(daemon.socket, client_env, names[1:], 0.0)
            named = {"rss_kib": rss_kib(daemon.pid), "inotify_watches": inotify_watches(daemon.pid)}
            # Idle eviction runs every idle/2 s: wait until every named workspace (and the warm one) went.
            deadline = time.monotonic() + idle * 3 + 10
            while inotify_watches(daemon.pid) > unloaded and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(THREAD_IDLE_S)  # idle worker threads (and their malloc arenas) go after 10 s
            evicted = {"rss_kib": rss_kib(daemon.pid), "inotify_watches": inotify_watches(daemon.pid)}
        finally:
            daemon.stop()
    p99 = load["prober_ms"]["p99"]
    return {
        "phases": {"one workspace": base, "new workspaces": load},
        "p99_ratio": ratio(p99, base["prober_ms"]["p99"]),
        "target_p99_ms": TARGET_P99_MS,
        "verdict": "ok" if p99 < TARGET_P99_MS else "MISSED",
        "load_growth": ratio(load["namer_last_tenth_ms"], load["namer_first_tenth_ms"]),
        "memory": {"start": start, "after naming": named, "after eviction": evicted},
        "rss_after_eviction_ratio": ratio(evicted["rss_kib"], start["rss_kib"]),
    }


def render(report: dict[str, Any]) -> str:
    r = report["result"]
    lines = [f"{report['args']['n']} workspaces named by one client, another client's `status` timed meanwhile", ""]
    for name, p in r["phases"].items():
        pm = p["prober_ms"]
        lines.append(f"  {name:15} prober p50 {pm['p50']:.2f} ms  p99 {pm['p99']:.2f} ms  (n={pm['n']}); "
                     f"namer per call: first tenth {p['namer_first_tenth_ms']:.2f} ms, "
                     f"last tenth {p['namer_last_tenth_ms']:.2f} ms")
    lines.append(f"  p99 new / one: {r['p99_ratio']:.2f}x; target p99 < {r['target_p99_ms']:g} ms: {r['verdict']}")
    lines.append(f"  per-load time, last tenth / first tenth: {r['load_growth']:.2f}x")
    for when, m in r["memory"].items():
        lines.append(f"  {when:15} RSS {m['rss_kib'] / 1024:.1f} MiB, inotify watches {m['inotify_watches']}")
    lines.append(f"  RSS after eviction / at start: {r['rss_after_eviction_ratio']:.2f}x")
    lines.append(f"load average at the end: {'/'.join(map(str, report['load_average']))}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1000, help="workspaces to name (default 1000)")
    p.add_argument("--idle", type=float, default=10.0, help="the daemon's idle time before eviction, s (default 10)")
    p.add_argument("--cap", type=int, help="the daemon's TAKOD_MAX_WORKSPACES (default: its own default, 32)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    report = {"machine": machine(), "args": vars(args), "result": run(args.n, args.idle, args.cap)}
    report["load_average"] = load_average()
    emit(report, args.json, render)


if __name__ == "__main__":
    main()
