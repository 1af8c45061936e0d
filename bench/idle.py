"""What an idle takod daemon costs the machine: wake-ups, CPU and memory, against idle Python processes.

    python bench/idle.py [--duration 20] [--settle 3] [--json]

Three processes run side by side for the same ``--duration`` seconds, after
``--settle`` seconds of rest (start-up work is not idling):

- ``takod``: a real daemon in a temporary HOME (log level info), nobody connected;
- ``asyncio``: ``python -c "import asyncio; asyncio.run(asyncio.sleep(1e9))"``,
  an idle event loop: the least a daemon built on one can do;
- ``sleep``: ``python -c "import time; time.sleep(1e9)"``, the interpreter's floor.

Per process, from /proc: wake-ups per minute (voluntary + nonvoluntary
context switches of every thread, /proc/PID/task/*/status), CPU per minute
(utime + stime, /proc/PID/stat, plus the nanosecond schedstat sum), and RSS
(VmRSS) at the end. takod's wake-ups are broken down by thread, which names
the culprit when there is one.

Targets: takod at most ``WAKEUPS_TARGET`` wake-ups per minute (a timer per
minute or so is fine; a polling loop is not), printed with the ratio to the
idle asyncio loop (floored at one wake-up per minute, as the baseline's count
is near zero); RSS ratio to the idle asyncio loop is printed for context.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import cpu_seconds, emit, load_average, machine, ratio, stop, takod_daemon, temp_home, verdict

WAKEUPS_TARGET = 60.0  # per minute, all threads: at most one a second on average
BASELINES = {
    "asyncio": "import asyncio; asyncio.run(asyncio.sleep(1e9))",
    "sleep": "import time; time.sleep(1e9)",
}
TICK = os.sysconf("SC_CLK_TCK")


def threads(pid: int) -> dict[str, tuple[str, int]]:
    """``tid -> (thread name, voluntary + nonvoluntary context switches so far)``."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            switches = 0
            for line in (task / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    switches += int(line.split()[1])
        except OSError:
            continue  # a thread that just ended
        out[task.name] = (name, switches)
    return out


def stat_cpu_s(pid: int) -> float:
    """utime + stime of the whole process (/proc/PID/stat, clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Snapshot:
    def __init__(self, pid: int):
        self.at = time.monotonic()
        self.threads = threads(pid)
        self.stat_cpu = stat_cpu_s(pid)
        self.cpu = cpu_seconds(pid)


def measure(pids: dict[str, int], duration: float) -> dict[str, Any]:
    before = {name: Snapshot(pid) for name, pid in pids.items()}
    time.sleep(duration)
    after = {name: Snapshot(pid) for name, pid in pids.items()}
    out: dict[str, Any] = {}
    for name, pid in pids.items():
        a, b = before[name], after[name]
        per_min = 60 / (b.at - a.at)
        per_thread: dict[str, float] = {}
        for tid, (tname, switches) in b.threads.items():
            start = a.threads.get(tid, (tname, 0))[1]  # a thread born meanwhile counts from zero
            key = f"{tname} ({'main' if tid == str(pid) else tid})"
            per_thread[key] = (switches - start) * per_min
        out[name] = {
            "wakeups_per_min": sum(per_thread.values()),
            "wakeups_per_min_by_thread": dict(sorted(per_thread.items(), key=lambda kv: -kv[1])),
            "threads": len(b.threads),
            "cpu_ms_per_min": (b.cpu - a.cpu) * 1000 * per_min,
            "stat_cpu_ms_per_min": (b.stat_cpu - a.stat_cpu) * 1000 * per_min,
            "rss_kib": rss_kib(pid),
        }
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with temp_home() as home, takod_daemon(home, args.log_level) as daemon:
            pids = {"takod": daemon.pid}
            for name, code in BASELINES.items():
                proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL)
                procs.append(proc)
                pids[name] = proc.pid
            time.sleep(args.settle)
            per = measure(pids, args.duration)
    finally:
        for proc in procs:
            stop(proc)
    t, base = per["takod"], per["asyncio"]
    wake_ratio = ratio(t["wakeups_per_min"], max(base["wakeups_per_min"], 1.0))
    return {
        "per_process": per,
        "wakeups_target_per_min": WAKEUPS_TARGET,
        "wakeups_ratio_vs_asyncio": wake_ratio,
        "rss_ratio_vs_asyncio": ratio(t["rss_kib"], base["rss_kib"]),
        "verdict": verdict(t["wakeups_per_min"], WAKEUPS_TARGET),
    }


def render(report: dict[str, Any]) -> str:
    m, res, a = report["machine"], report["result"], report["args"]
    lines = [
        f"machine: {m['nproc']} CPU(s), {m['cpu']}, {m['implementation']} {m['python']}, "
        f"load average {'/'.join(map(str, report['load_average']))}",
        f"idle for {a['duration']} s after {a['settle']} s of rest, all three side by side",
        "",
        f"  {'process':<9}{'wakeups/min':>13}{'CPU ms/min':>12}{'(stat ticks)':>14}{'RSS MiB':>9}{'threads':>9}",
    ]
    for name, p in res["per_process"].items():
        lines.append(
            f"  {name:<9}{p['wakeups_per_min']:>13.1f}{p['cpu_ms_per_min']:>12.2f}{p['stat_cpu_ms_per_min']:>14.1f}"
            f"{p['rss_kib'] / 1024:>9.1f}{p['threads']:>9}"
        )
    lines.append("  takod wake-ups/min by thread: " + ", ".join(
        f"{k} {v:.0f}" for k, v in res["per_process"]["takod"]["wakeups_per_min_by_thread"].items()))
    lines.append(
        f"  takod wake-ups {res['per_process']['takod']['wakeups_per_min']:.1f}/min "
        f"(target <= {res['wakeups_target_per_min']:g}): {res['verdict']}; "
        f"ratio to the idle asyncio loop (floored at 1/min) {res['wakeups_ratio_vs_asyncio']:.1f}"
    )
    lines.append(f"  RSS takod / idle asyncio loop: {res['rss_ratio_vs_asyncio']:.2f}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=20.0, help="seconds measured (default 20; 60+ for a steadier figure)")
    p.add_argument("--settle", type=float, default=3.0, help="seconds of rest before measuring (default 3)")
    p.add_argument("--log-level", default="info", choices=["debug", "info"], help="takod's log level (default info)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    args = p.parse_args()
    report = {"machine": machine(), "args": vars(args), "result": run(args), "load_average": load_average()}
    emit(report, args.json, render)


if __name__ == "__main__":
    main()
