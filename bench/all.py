"""Every takod benchmark with short defaults, and one summary table.

    python bench/all.py [--only rpc,cli,cold,events,relay,idle,workspaces] [--json]

Each benchmark runs as its own process (``--json``), one after another, with
arguments short enough for the whole set to take about five minutes here
(``SHORT`` below; run a script by itself with its defaults for steadier
figures). The table has one row per figure: takod's value, the baseline's
value measured in the same run, their ratio (or difference), the target and
the verdict: ``ok``, ``MISSED``, or ``info`` for figures without a target.
``--json`` prints the rows and every benchmark's own full report.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any, Callable

from cli_startup import SHORT_KEYED
from common import BENCH, emit, load_average, machine

# name -> (script, short arguments)
SHORT: dict[str, tuple[str, list[str]]] = {
    "rpc": ("rpc.py", ["--n", "3000", "--rounds", "10", "--duration", "1", "--tp-rounds", "1"]),
    "cli": ("cli_startup.py", ["--n", "12"]),
    "cold": ("status_vs_cold.py", ["--rounds", "3", "--calls", "20", "--cli-runs", "2"]),
    "events": ("file_events.py", ["--n", "40"]),
    "relay": ("relay.py", ["--rounds", "4", "--delays", "0.002"]),
    "idle": ("idle.py", ["--duration", "20", "--settle", "5"]),
    "workspaces": ("workspaces.py", ["--n", "300", "--idle", "5"]),
}

Row = dict[str, Any]


def row(bench: str, figure: str, value: str, baseline: str, ratio: str, target: str, verdict: str) -> Row:
    return {"bench": bench, "figure": figure, "value": value, "baseline": baseline, "ratio": ratio,
            "target": target, "verdict": verdict}


def rpc_rows(r: dict[str, Any]) -> list[Row]:
    lat, per = r["latency"], r["latency"]["per_server"]
    out = [
        row("rpc", f"`status` p50 round trip vs {base}", f"{per['takod']['p50']:.1f} µs",
            f"{base} {per[base]['p50']:.1f} µs", f"{v['p50_ratio']:.2f}x", f"<= {lat['target']}x", v["verdict"])
        for base, v in lat["vs"].items()
    ]
    for clients, cell in sorted(r.get("throughput", {}).get("cells", {}).items(), key=lambda kv: int(kv[0])):
        bases = list(cell["ratio"])
        out.append(row(
            "rpc", f"`status` throughput, {clients} client(s)", f"{cell['takod']['rps_median']:.0f} req/s",
            ", ".join(f"{b} {cell[b]['rps_median']:.0f}" for b in bases),
            " / ".join(f"{cell['ratio'][b]:.2f}x" for b in bases), "-", "info",
        ))
    return out


def cli_rows(r: dict[str, Any]) -> list[Row]:
    st = r["startup"]
    per = st["per_command"]
    return [row("cli_startup", "`takod status` process vs `python -c 'import msgspec'`",
                f"{per['takod status']['p50']:.1f} ms", f"{per['import msgspec']['p50']:.1f} ms",
                f"{st['ratio']:.2f}x", f"<= {st['target']}x", st["verdict"]),
            row("cli_startup", "`takod status --short` process vs `python -c pass`",
                f"{per['takod status --short']['p50']:.1f} ms", f"{per['python -c pass']['p50']:.1f} ms",
                f"{st['short_ratio']:.2f}x", f"<= {st['short_target']}x", st["short_verdict"]),
            row("cli_startup", "`takod status --short` with a key exported vs `python -c pass`",
                f"{per[SHORT_KEYED]['p50']:.1f} ms", f"{per['python -c pass']['p50']:.1f} ms",
                f"{st['short_keyed_ratio']:.2f}x", f"<= {st['short_target']}x", st["short_keyed_verdict"])]


def cold_rows(r: dict[str, Any]) -> list[Row]:
    res = r["result"]
    cold = res["per_target"]["cold probe"]["p50"]
    return [
        row("status_vs_cold", f"cold probe / {name}", f"{res['per_target'][name]['p50']:.1f} ms",
            f"cold {cold:.0f} ms", f"{v['cold_over_warm']:.0f}x", f">= {res['target']}x",
            v["verdict"] if not res["facts_disagree"] else "MISSED (facts disagree)")
        for name, v in res["ratios"].items() if name != "status (open conn)"
    ]


def events_rows(r: dict[str, Any]) -> list[Row]:
    return [
        row("file_events", f"file write -> event p99, {mode}", f"{c['takod']['p99']:.1f} ms",
            f"raw watchfiles {c['raw']['p99']:.1f} ms", f"{c['p99_ratio']:.2f}x", f"< {c['target_p99_ms']:g} ms",
            c["verdict"])
        for mode, c in r["result"]["modes"].items()
    ]


def relay_rows(r: dict[str, Any]) -> list[Row]:
    out = []
    for b in r["results"]:
        if not b["delay_s"]:
            continue  # a flood measures capacity, with no target
        out.append(row("relay", f"{b['backend']} time to first token", f"{b['takod']['ttft_ms']['p50']:.2f} ms",
                       f"direct {b['direct']['ttft_ms']['p50']:.2f} ms", f"{b['ttft_diff_ms']:+.2f} ms", "<= +2 ms",
                       "ok" if b["ttft_ok"] else "MISSED"))
        out.append(row("relay", f"{b['backend']} tokens/s", f"{b['takod']['tokens_per_s']['p50']:.0f}",
                       f"direct {b['direct']['tokens_per_s']['p50']:.0f}", f"{b['throughput_ratio']:.3f}x",
                       ">= 0.9x", "ok" if b["throughput_ok"] else "MISSED"))
    return out


def idle_rows(r: dict[str, Any]) -> list[Row]:
    res = r["result"]
    t, base = res["per_process"]["takod"], res["per_process"]["asyncio"]
    return [
        row("idle", "idle daemon wake-ups/min (all threads)", f"{t['wakeups_per_min']:.1f}",
            f"idle asyncio {base['wakeups_per_min']:.1f}", f"{res['wakeups_ratio_vs_asyncio']:.1f}x",
            f"<= {res['wakeups_target_per_min']:g}/min", res["verdict"]),
        row("idle", "idle daemon CPU ms/min, RSS", f"{t['cpu_ms_per_min']:.1f} ms, {t['rss_kib'] / 1024:.1f} MiB",
            f"idle asyncio {base['cpu_ms_per_min']:.1f} ms, {base['rss_kib'] / 1024:.1f} MiB",
            f"RSS {res['rss_ratio_vs_asyncio']:.2f}x", "-", "info"),
    ]


def workspaces_rows(r: dict[str, Any]) -> list[Row]:
    res, n = r["result"], r["args"]["n"]
    base, load = res["phases"]["one workspace"]["prober_ms"], res["phases"]["new workspaces"]["prober_ms"]
    mem = res["memory"]
    return [
        row("workspaces", f"other client's `status` p99 while {n} new workspaces are named", f"{load['p99']:.2f} ms",
            f"one workspace {base['p99']:.2f} ms", f"{res['p99_ratio']:.2f}x", f"< {res['target_p99_ms']:g} ms",
            res["verdict"]),
        row("workspaces", "per-load time, last tenth / first tenth", "", "", f"{res['load_growth']:.2f}x", "-", "info"),
        row("workspaces", "RSS after idle eviction", f"{mem['after eviction']['rss_kib'] / 1024:.1f} MiB",
            f"start {mem['start']['rss_kib'] / 1024:.1f} MiB", f"{res['rss_after_eviction_ratio']:.2f}x", "-", "info"),
    ]


ROWS: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "rpc": rpc_rows, "cli": cli_rows, "cold": cold_rows, "events": events_rows, "relay": relay_rows, "idle": idle_rows,
    "workspaces": workspaces_rows,
}


def run_one(name: str) -> tuple[dict[str, Any] | None, list[Row], float]:
    script, args = SHORT[name]
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(BENCH / script), *args, "--json"], capture_output=True, text=True)
    elapsed = time.monotonic() - t0
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return None, [row(name, f"{script} failed ({proc.returncode})", tail[0][:80], "", "", "", "FAILED")], elapsed
    report = json.loads(proc.stdout)
    return report, ROWS[name](report), elapsed


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    cols = ["bench", "figure", "value", "baseline", "ratio", "target", "verdict"]
    rows = report["rows"]
    width = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    lines = [
        f"machine: {m['nproc']} CPU(s), {m['cpu']}, {m['implementation']} {m['python']}, {m['platform']}",
        f"load average at the end: {'/'.join(map(str, report['load_average']))}; "
        + ", ".join(f"{k} {v:.0f} s" for k, v in report["seconds"].items()),
        "",
        "  ".join(c.ljust(width[c]) for c in cols),
        "  ".join("-" * width[c] for c in cols),
    ]
    lines += ["  ".join(str(r[c]).ljust(width[c]) for c in cols) for r in rows]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default=",".join(SHORT), help=f"benchmarks to run (default all: {','.join(SHORT)})")
    p.add_argument("--json", action="store_true", help="machine-readable output: the rows and every full report")
    args = p.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(SHORT))
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(unknown)}")
    report: dict[str, Any] = {"machine": machine(), "rows": [], "reports": {}, "seconds": {}}
    for name in names:
        print(f"running {SHORT[name][0]} ...", file=sys.stderr, flush=True)
        full, rows, elapsed = run_one(name)
        report["rows"] += rows
        report["reports"][name] = full
        report["seconds"][name] = elapsed
    report["load_average"] = load_average()
    emit(report, args.json, render)
    sys.exit(1 if any(r["verdict"] in ("MISSED", "FAILED") or r["verdict"].startswith("MISSED") for r in report["rows"]) else 0)


if __name__ == "__main__":
    main()
