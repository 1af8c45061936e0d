"""Warm `status` from takod against a cold probe of the same facts, as Takobot does it today.

    python bench/status_vs_cold.py [--rounds 10] [--calls 50] [--cli-runs 3] [--json]

Setup, in a temporary HOME: the real pi, codex, claude and gemini CLIs (npm's
links from .tools/npm/node_modules/.bin) and node on PATH; a Codex ChatGPT
login, a Claude Code login, a Gemini OAuth login and a pi API key in their
usual files; OLLAMA_HOST on a loopback port where nothing listens. A takod
daemon runs there, warm.

Measured, interleaved round by round (ABBA order):

- ``status (new conn)``: ``takod.Client`` connect + hello + ``status`` + close,
  in this process: what a program that asks once pays (``--calls`` per round);
- ``status (open conn)``: ``status`` on a connection kept open (context);
- ``takod status``: the whole CLI process, TAKOD_NO_SPAWN=1 (``--cli-runs`` per round);
- ``cold probe``: the same facts found the way Takobot finds them, in this
  process, sequentially: ``shutil.which`` + ``<cli> --version`` for pi, codex,
  claude and gemini; read and parse every credential file takod reads; and
  ``GET /api/version`` on the Ollama host (refused). Once per round.

Reports medians and the ratios cold / warm (target >= 20), and checks that the
cold probe and takod agree on the facts (CLI versions, Ollama unreachable).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

from common import clean_env, emit, interleave, load_average, machine, median, ratio, summary, temp_home
from takod import Client
from tests.harness import TOOLS_BIN, DaemonProcess

TARGET = 20.0  # cold / warm, at least
CLIS = ("pi", "codex", "claude", "gemini")
TARGETS = ("status (new conn)", "status (open conn)", "takod status", "cold probe")
VERSION_TIMEOUT = 10.0
DAY = 86400.0
VERSION_RE = re.compile(r"v?(\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?)")


def at_least(value: float, target: float) -> str:
    return "ok" if value >= target else "MISSED"


# the machine under test ------------------------------------------------------------------


def closed_port() -> int:
    """A loopback port where nothing listens: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def credential_files(home: Path) -> list[Path]:
    """Every credential or settings file takod reads in this HOME (state.py / credentials/*)."""
    return [
        home / ".codex" / "auth.json",
        home / ".codex" / "config.toml",
        home / ".claude" / ".credentials.json",
        home / ".claude.json",
        home / ".gemini" / "oauth_creds.json",
        home / ".gemini" / "settings.json",
        home / ".pi" / "agent" / "auth.json",
        home / ".pi" / "auth.json",
        home / ".tako" / "pi" / "agent" / "auth.json",
        home / ".tako" / "state" / "inference-settings.json",
    ]


def populate(home: Path) -> dict[str, str]:
    """CLIs on PATH and logins on disk; returns the environment for the daemon and the probes."""
    from tests.integration.test_readiness import (
        GEMINI_SETTINGS,
        claude_credentials_doc,
        codex_auth_doc,
        dumps,
        gemini_oauth_doc,
        pi_auth_doc,
        write_in_place,
    )

    bindir = home / "bin"
    bindir.mkdir()
    missing = [name for name in CLIS if not (TOOLS_BIN / name).exists()]
    if missing:
        sys.exit(f"real CLIs missing from {TOOLS_BIN}: {', '.join(missing)}; run scripts/install-test-tools.sh")
    for name in CLIS:
        (bindir / name).symlink_to(TOOLS_BIN / name)
    node = shutil.which("node")
    if node:
        (bindir / "node").symlink_to(node)
    now = time.time()
    write_in_place(home / ".codex" / "auth.json", dumps(codex_auth_doc(now + 10 * DAY)))
    write_in_place(home / ".claude" / ".credentials.json", dumps(claude_credentials_doc(int((now + 8 * 3600) * 1000))))
    write_in_place(home / ".gemini" / "oauth_creds.json", dumps(gemini_oauth_doc(int((now + 3600) * 1000))))
    write_in_place(home / ".gemini" / "settings.json", dumps(GEMINI_SETTINGS))
    write_in_place(home / ".pi" / "agent" / "auth.json", dumps(pi_auth_doc()))
    return clean_env(home, PATH=str(bindir), OLLAMA_HOST=f"http://127.0.0.1:{closed_port()}")


# the cold probe ----------------------------------------------------------------------------


def cold_probe(env: dict[str, str], home: Path) -> dict[str, Any]:
    """The facts, found the way Takobot finds them: sequentially, spawning every CLI.

    Returns the facts and how long each step took (ms)."""
    steps: dict[str, float] = {}
    facts: dict[str, Any] = {"versions": {}, "files": {}, "ollama": None}
    for name in CLIS:
        t0 = time.perf_counter()
        path = shutil.which(name, path=env["PATH"])
        version = None
        if path:
            try:
                proc = subprocess.run([path, "--version"], env=env, cwd=home, stdin=subprocess.DEVNULL,
                                      capture_output=True, text=True, timeout=VERSION_TIMEOUT)
                found = VERSION_RE.search(proc.stdout) or VERSION_RE.search(proc.stderr)
                version = found[1] if found else None
            except subprocess.TimeoutExpired:
                version = "timeout"
        facts["versions"][name] = version
        steps[f"{name} --version"] = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    for path in credential_files(home):
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            continue
        try:
            facts["files"][str(path)] = bool(json.loads(raw)) if path.suffix == ".json" else True
        except ValueError:
            facts["files"][str(path)] = "unparsable"
    steps["read files"] = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(f"{env['OLLAMA_HOST']}/api/version", timeout=2) as resp:
            facts["ollama"] = json.loads(resp.read())
    except (urllib.error.URLError, OSError) as exc:
        facts["ollama"] = f"unreachable: {getattr(exc, 'reason', exc)}"
    steps["ollama /api/version"] = (time.perf_counter() - t0) * 1000
    return {"facts": facts, "steps": steps}


def same_facts(status: dict[str, Any], probe: dict[str, Any]) -> list[str]:
    """Where takod's warm status and the cold probe disagree (empty: they agree)."""
    providers = {p["name"]: p for p in status["providers"]}
    diffs = []
    for name in CLIS:
        warm = providers[name]["detail"].get("version")
        cold = probe["facts"]["versions"][name]
        if warm != cold:
            diffs.append(f"{name} version: takod {warm!r}, --version {cold!r}")
    ollama_down = str(probe["facts"]["ollama"]).startswith("unreachable")
    if ollama_down != (providers["ollama"]["reason"] == "unreachable"):
        diffs.append(f"ollama: takod {providers['ollama']['reason']!r}, probe {probe['facts']['ollama']!r}")
    return diffs


# the run --------------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def run(args: argparse.Namespace) -> dict[str, Any]:
    samples: dict[str, list[float]] = {t: [] for t in TARGETS}
    round_medians: dict[str, list[float]] = {t: [] for t in TARGETS}
    steps: dict[str, list[float]] = {}
    with temp_home() as home:
        env = populate(home)
        daemon = DaemonProcess(home, env).start("--log-level", "info")
        try:
            cli_env = dict(env, TAKOD_NO_SPAWN="1")
            if args.bytecode == "cached":  # as an installed wheel, with .pyc files (see bench/cli_startup.py)
                cli_env.pop("PYTHONDONTWRITEBYTECODE", None)
                cli_env["PYTHONPYCACHEPREFIX"] = str(home / "pycache")
            takod_cmd = [args.takod or str(Path(sys.executable).parent / "takod"), "status"]

            def new_conn() -> Any:
                with Client(daemon.socket, spawn=False, timeout=30) as c:
                    return c.call("status")

            def cli() -> None:
                proc = subprocess.run(takod_cmd, env=cli_env, cwd=home, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE)
                if proc.returncode:
                    sys.exit(f"`{' '.join(takod_cmd)}` failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}")

            open_client = Client(daemon.socket, spawn=False, timeout=30).connect()
            try:
                # Warm-up: every path once (page cache, .pyc files, the CLIs' own caches).
                warm_status = new_conn()
                probe = cold_probe(env, home)
                cli()
                for _ in range(50):
                    open_client.call("status")
                    new_conn()
                disagree = same_facts(warm_status, probe)
                one = {
                    "status (new conn)": (args.calls, new_conn),
                    "status (open conn)": (args.calls, lambda: open_client.call("status")),
                    "takod status": (args.cli_runs, cli),
                    "cold probe": (1, None),
                }
                for _, name in interleave(args.rounds, TARGETS):
                    count, fn = one[name]
                    block = []
                    for _ in range(count):
                        if fn is None:
                            t0 = time.perf_counter()
                            result = cold_probe(env, home)
                            block.append((time.perf_counter() - t0) * 1000)
                            for step, ms in result["steps"].items():
                                steps.setdefault(step, []).append(ms)
                        else:
                            block.append(timed(fn))
                    samples[name] += block
                    round_medians[name].append(median(block))
                    # Let whatever a target set off (gemini writes under ~/.gemini, the daemon may
                    # re-read a file) settle before the next target is timed.
                    time.sleep(args.pause)
            finally:
                open_client.close()
        finally:
            daemon.stop()

    per = {name: {**summary(s, (50, 90)), "round_medians": round_medians[name]} for name, s in samples.items()}
    cold = per["cold probe"]["p50"]
    result: dict[str, Any] = {"per_target": per, "cold_steps_ms": {k: median(v) for k, v in steps.items()},
                              "facts_disagree": disagree, "target": TARGET, "ratios": {}}
    for name in ("status (new conn)", "status (open conn)", "takod status"):
        value = ratio(cold, per[name]["p50"])
        rounds = [ratio(c, w) for c, w in zip(round_medians["cold probe"], round_medians[name])]
        result["ratios"][name] = {
            "cold_over_warm": value,
            "per_round": {"min": min(rounds), "median": median(rounds), "max": max(rounds)},
            "verdict": at_least(value, TARGET),
        }
    return result


def render(report: dict[str, Any]) -> str:
    m, res, a = report["machine"], report["result"], report["args"]
    lines = [
        f"machine: {m['nproc']} CPU(s), {m['cpu']}, {m['implementation']} {m['python']}, "
        f"load average {'/'.join(map(str, m['load_average']))}",
        f"{a['rounds']} interleaved rounds; per round: {a['calls']} status calls, {a['cli_runs']} CLI runs, "
        f"1 cold probe; bytecode {a['bytecode']}",
        "",
        f"  {'target':<20}{'p50 ms':>10}{'p90 ms':>10}{'n':>6}",
    ]
    for name, s in res["per_target"].items():
        lines.append(f"  {name:<20}{s['p50']:>10.2f}{s['p90']:>10.2f}{s['n']:>6}")
    lines += ["", "  cold probe, median per step (ms):"]
    for step, ms in res["cold_steps_ms"].items():
        lines.append(f"    {step:<22}{ms:>9.1f}")
    lines += ["", f"  cold probe / warm (target >= {res['target']:.0f}):"]
    for name, r in res["ratios"].items():
        pr = r["per_round"]
        lines.append(
            f"    vs {name:<20}{r['cold_over_warm']:>9.0f}x  {r['verdict']:<7}"
            f"per round: min {pr['min']:.0f}, median {pr['median']:.0f}, max {pr['max']:.0f}"
        )
    lines.append("")
    if res["facts_disagree"]:
        lines.append("  facts DISAGREE: " + "; ".join(res["facts_disagree"]))
    else:
        lines.append("  facts agree: takod's CLI versions and Ollama reachability match the cold probe's")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=10, help="interleaved rounds (default 10)")
    p.add_argument("--calls", type=int, default=50, help="status calls per round and kind (default 50)")
    p.add_argument("--cli-runs", type=int, default=3, help="`takod status` runs per round (default 3)")
    p.add_argument("--pause", type=float, default=0.3, help="seconds between targets, untimed (default 0.3)")
    p.add_argument("--takod", help="the takod command to time (default: the console script next to this python)")
    p.add_argument("--bytecode", choices=["cached", "env"], default="cached",
                   help="cached: .pyc files as an installed wheel has (default); env: as the environment says")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    args = p.parse_args()
    report = {"machine": machine(), "args": vars(args), "result": run(args)}
    report["machine"]["load_average"] = load_average()
    emit(report, args.json, render)


if __name__ == "__main__":
    main()
