"""How long `takod status` takes as a whole process, against `python -c "import msgspec"`;
and `takod status --short` (the shell-prompt line, with and without an API key
exported in the shell) against `python -c pass`.

    python bench/cli_startup.py [--n 30] [--takod PATH] [--python PATH] [--json]

A warm takod daemon runs in a temporary HOME; `takod status` is run against
it with TAKOD_NO_SPAWN=1, interleaved with the baseline (the least any
msgspec-based CLI must pay) and with `python -c pass` (the interpreter's own
floor). Reports medians and the ratios `takod status` / `import msgspec`
(target <= 1.5) and `takod status --short` / `python -c pass` (target <= 3: a
prompt or status bar runs it all the time), then the top costs of
`python -X importtime -c "import takod.cli"`.

By default both commands run from this interpreter's bin directory (the real
console script and the real interpreter); ``--takod`` and ``--python`` name
others, e.g. version-manager shims, to see what they add.

Bytecode: an installed wheel has .pyc files, but an editable checkout run with
PYTHONDONTWRITEBYTECODE=1 (as in this project's sandbox) compiles every takod
module from source on every start. By default (``--bytecode cached``) all
commands share a temporary PYTHONPYCACHEPREFIX filled by the warm-up runs;
``--bytecode env`` keeps the environment's own setting.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import clean_env, emit, interleave, machine, median, ratio, summary, takod_daemon, temp_home, verdict

TARGET = 1.5
TARGET_SHORT = 3.0
IMPORT_RUNS = 5


SHORT_KEYED = "  ... a key exported"
SHELL_KEY = {"OPENAI_API_KEY": "sk-bench-not-a-real-key"}  # hashed for the file, never sent anywhere


def commands(takod: str | None, python: str | None) -> dict[str, list[str]]:
    takod = takod or str(Path(sys.executable).parent / "takod")
    python = python or sys.executable
    return {
        "takod status": [takod, "status"],
        "takod status --short": [takod, "status", "--short"],
        SHORT_KEYED: [takod, "status", "--short"],
        "import msgspec": [python, "-c", "import msgspec"],
        "python -c pass": [python, "-c", "pass"],
    }


def run_once(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one run, in ms. CPU time counts
    only the process's own work, so it holds up better on a busy machine."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({proc.returncode}): {err.decode(errors='replace')}")
    return elapsed * 1000, (usage.ru_utime + usage.ru_stime) * 1000


def startup(n: int, cmds: dict[str, list[str]], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    envs = {name: {**env, **SHELL_KEY} if name == SHORT_KEYED else env for name in cmds}
    for name, argv in cmds.items():  # warm the page cache, .pyc files and the status-line file
        run_once(argv, envs[name], cwd)
    samples: dict[str, list[float]] = {name: [] for name in cmds}
    cpu: dict[str, list[float]] = {name: [] for name in cmds}
    for _, name in interleave(n, list(cmds)):
        wall_ms, cpu_ms = run_once(cmds[name], envs[name], cwd)
        samples[name].append(wall_ms)
        cpu[name].append(cpu_ms)
    per = {name: {**summary(s, (50, 90)), "cpu_p50": median(cpu[name]), "argv": cmds[name]}
           for name, s in samples.items()}
    rounds = [ratio(a, b) for a, b in zip(samples["takod status"], samples["import msgspec"])]
    value = ratio(per["takod status"]["p50"], per["import msgspec"]["p50"])
    short_rounds = [ratio(a, b) for a, b in zip(samples["takod status --short"], samples["python -c pass"])]
    short = ratio(per["takod status --short"]["p50"], per["python -c pass"]["p50"])
    keyed = ratio(per[SHORT_KEYED]["p50"], per["python -c pass"]["p50"])
    return {
        "per_command": per,
        "ratio": value,
        "ratio_rounds_median": median(rounds),
        "target": TARGET,
        "verdict": verdict(value, TARGET),
        "short_ratio": short,
        "short_ratio_rounds_median": median(short_rounds),
        "short_target": TARGET_SHORT,
        "short_verdict": verdict(short, TARGET_SHORT),
        "short_cpu_ratio": ratio(per["takod status --short"]["cpu_p50"], per["python -c pass"]["cpu_p50"]),
        "short_keyed_ratio": keyed,
        "short_keyed_verdict": verdict(keyed, TARGET_SHORT),
        "short_keyed_cpu_ratio": ratio(per[SHORT_KEYED]["cpu_p50"], per["python -c pass"]["cpu_p50"]),
    }


def parse_importtime(stderr: str) -> dict[str, tuple[int, int]]:
    """``name -> (self_us, cumulative_us)`` from ``-X importtime`` output."""
    out = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cum_us, name = line[len("import time:"):].split("|")
        out[name.strip()] = (int(self_us), int(cum_us))
    return out


def import_costs(env: dict[str, str], top: int) -> dict[str, Any]:
    """Median ``-X importtime`` figures of the modules `import takod.cli` adds to a bare start."""

    def runs(code: str) -> list[dict[str, tuple[int, int]]]:
        argv = [sys.executable, "-X", "importtime", "-c", code]
        return [parse_importtime(subprocess.run(argv, env=env, capture_output=True, text=True).stderr)
                for _ in range(IMPORT_RUNS)]

    bare = set().union(*runs("pass"))
    cli = runs("import takod.cli")
    names = [name for name in cli[0] if name not in bare]
    rows = [
        {
            "module": name,
            "self_ms": median([r[name][0] for r in cli if name in r]) / 1000,
            "cumulative_ms": median([r[name][1] for r in cli if name in r]) / 1000,
        }
        for name in names
    ]
    mods = {r["module"]: r for r in rows}
    return {
        "total_ms": mods["takod.cli"]["cumulative_ms"],
        "msgspec_ms": mods.get("msgspec", {}).get("cumulative_ms", 0.0),
        "modules_added": len(mods),
        "top_self": sorted(rows, key=lambda r: -r["self_ms"])[:top],
        "top_cumulative": sorted(
            (r for r in rows if r["module"] != "takod.cli"), key=lambda r: -r["cumulative_ms"]
        )[:top],
    }


def render(report: dict[str, Any]) -> str:
    m, st, imp = report["machine"], report["startup"], report["imports"]
    lines = [
        f"machine: {m['nproc']} CPU(s), {m['cpu']}, {m['implementation']} {m['python']}",
        "",
        f"whole-process start, {report['args']['n']} interleaved runs each, bytecode {report['args']['bytecode']} (ms)",
        f"  {'command':<22}{'p50':>8}{'p90':>8}{'cpu p50':>9}   argv",
    ]
    for name, s in st["per_command"].items():
        lines.append(f"  {name:<22}{s['p50']:>8.1f}{s['p90']:>8.1f}{s['cpu_p50']:>9.1f}   {' '.join(s['argv'])}")
    lines.append(
        f"  ratio takod status / import msgspec: {st['ratio']:.2f} (target <= {st['target']}) {st['verdict']}"
        f"   median of per-round ratios {st['ratio_rounds_median']:.2f}"
    )
    lines.append(
        f"  ratio takod status --short / python -c pass: {st['short_ratio']:.2f} (target <= {st['short_target']})"
        f" {st['short_verdict']}   median of per-round ratios {st['short_ratio_rounds_median']:.2f}"
        f"   CPU time ratio {st['short_cpu_ratio']:.2f}"
    )
    lines.append(
        f"  ratio ... with a key exported / python -c pass: {st['short_keyed_ratio']:.2f} (target <= {st['short_target']})"
        f" {st['short_keyed_verdict']}   CPU time ratio {st['short_keyed_cpu_ratio']:.2f}"
    )
    lines += [
        "",
        f"python -X importtime -c 'import takod.cli' (median of {IMPORT_RUNS}; modules beyond a bare start: "
        f"{imp['modules_added']})",
        f"  takod.cli total {imp['total_ms']:.1f} ms, of which msgspec {imp['msgspec_ms']:.1f} ms",
        f"  {'top by cumulative':<36}{'cum ms':>8}      {'top by self':<36}{'self ms':>8}",
    ]
    for c, s in zip(imp["top_cumulative"], imp["top_self"]):
        lines.append(f"  {c['module']:<36}{c['cumulative_ms']:>8.1f}      {s['module']:<36}{s['self_ms']:>8.1f}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=30, help="runs of each command (default 30)")
    p.add_argument("--top", type=int, default=12, help="import-time rows to show (default 12)")
    p.add_argument("--takod", help="the takod command to time (default: the console script next to this python)")
    p.add_argument("--python", help="the python for the baselines (default: this one)")
    p.add_argument("--bytecode", choices=["cached", "env"], default="cached",
                   help="cached: .pyc files as an installed wheel has (default); env: as the environment says")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    args = p.parse_args()

    report: dict[str, Any] = {"machine": machine(), "args": vars(args)}
    with temp_home() as home, takod_daemon(home):
        env = clean_env(home, TAKOD_NO_SPAWN="1")
        if args.bytecode == "cached":
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(home / "pycache")
        report["startup"] = startup(args.n, commands(args.takod, args.python), env, home)
        report["imports"] = import_costs(env, args.top)
    emit(report, args.json, render)


if __name__ == "__main__":
    main()
