"""From a write to a credential file to the event at a takod subscriber, against raw watchfiles.

    python bench/file_events.py [--n 200] [--modes atomic,inplace] [--block 20] [--timeout 2] [--linked] [--json]

A real takod daemon runs in a temporary HOME with the real ``codex`` CLI on its
PATH and a ChatGPT login in ``$CODEX_HOME/auth.json``. A subscriber (one
``takod.Client``, topics ``status`` and ``auth``) sees ``--n`` changes per
write mode to that file, each toggling between a live login (codex ready) and
a logged-out file (codex ``no-credentials``):

- ``atomic``: temp file in the same directory, fsync, then ``os.replace``
  (what takod itself, pi and most careful writers do); the clock starts just
  before ``os.replace``;
- ``inplace``: ``open(O_TRUNC)`` + ``write`` on the same inode (what Codex
  itself does, research providers.md A2); the clock starts just before ``open``.

Latency is write -> arrival of the first ``status`` event that shows the new
codex state (and, separately, the first ``auth`` event). A change with no such
event within ``--timeout`` is a miss. Events beyond the expected one during
the quiet period after it are counted as extra.

With ``--linked`` the daemon's default workspace is a Tako workspace (it holds
``tako.toml``), so every Codex change also runs the Codex -> pi link: a new
login is copied into the workspace pi ``auth.json`` under pi's lock, which is
itself watched (the figures then include that work and its follow-on events).

Baseline, in the same run and interleaved in blocks (ABBA): a separate process
running a bare ``watchfiles.awatch`` on the same directory with takod's own
settings (step, debounce, rust_timeout, non-recursive, filtered by name), which
writes one byte to a pipe per batch it yields. It watches a sibling file
(``baseline.json``) written the same way, so neither watcher reacts to the
other's changes beyond a wake-up that is filtered away. The ratio and the
difference takod - raw show what takod adds to the OS + watchfiles floor:
re-reading the file, re-evaluating readiness, publishing, and the socket hop.
On Linux takod reads inotify itself (takod_daemon.watch.Inotify: a batch ends
once ``step`` ms pass without an event), so its floor is one step and the raw
watchfiles process shows what takod paid before.
"""

from __future__ import annotations

import argparse
import inspect
import os
import random
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from common import (
    BENCH,
    REPO,
    clean_env,
    cpu_seconds,
    emit,
    interleave,
    load_average,
    machine,
    percentile,
    ratio,
    stop,
    temp_home,
    verdict,
)
from takod import Client
from tests.harness import TOOLS_BIN, DaemonProcess

P99_TARGET_MS = 200.0
TARGETS = ("takod", "raw")
MODES = ("atomic", "inplace")
BASELINE_NAME = "baseline.json"
DAY = 86400.0


# files, as the tools write them ---------------------------------------------------


def codex_login(exp: float, tag: str) -> bytes:
    """``$CODEX_HOME/auth.json`` in ChatGPT mode (the shape the tests use, tests/integration/test_readiness.py)."""
    from tests.integration.test_readiness import codex_auth_doc, dumps

    return dumps(codex_auth_doc(exp, tag=tag))


LOGGED_OUT = b'{\n  "OPENAI_API_KEY": null\n}\n'


def write_atomic(path: Path, data: bytes) -> int:
    """Temp file + fsync + ``os.replace``; returns perf_counter_ns just before the replace."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    t0 = time.perf_counter_ns()
    os.replace(tmp, path)
    return t0


def write_inplace(path: Path, data: bytes) -> int:
    """Truncate and rewrite the same inode, as Codex saves; returns perf_counter_ns just before ``open``."""
    t0 = time.perf_counter_ns()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return t0


WRITERS: dict[str, Callable[[Path, bytes], int]] = {"atomic": write_atomic, "inplace": write_inplace}


# takod's watch settings ---------------------------------------------------------------


def watch_settings() -> dict[str, int]:
    """The step/debounce takod's state manager watches with (FileWatcher's defaults) and its rust_timeout."""
    from takod_daemon import watch

    params = inspect.signature(watch.FileWatcher.__init__).parameters
    return {
        "step_ms": params["step_ms"].default,
        "debounce_ms": params["debounce_ms"].default,
        "rust_timeout_ms": watch.RUST_TIMEOUT_MS,
    }


def baseline_watcher(directory: str, name: str, step: int, debounce: int, rust_timeout: int) -> None:
    """The baseline process: awatch as takod arms it; one byte on stdout per batch."""
    import anyio
    from watchfiles import awatch

    out = sys.stdout.buffer

    def wants(change: Any, path: str) -> bool:
        return os.path.basename(path) == name

    async def run() -> None:
        async for _ in awatch(directory, watch_filter=wants, recursive=False, step=step, debounce=debounce,
                              rust_timeout=rust_timeout):
            out.write(b".")
            out.flush()

    anyio.run(run)


# the two targets ----------------------------------------------------------------------


class TakodTarget:
    """Changes to ``auth.json``, observed as events at a subscriber."""

    def __init__(self, daemon: DaemonProcess, codex_home: Path, timeout: float, quiet: float):
        self.daemon, self.path, self.timeout, self.quiet = daemon, codex_home / "auth.json", timeout, quiet
        self.client = Client(daemon.socket, spawn=False, timeout=30).connect()
        self.client.call("subscribe", {"topics": ["status", "auth"]})
        self.ready = self._codex_ready(self.client.call("status"))
        self.count = 0

    @staticmethod
    def _codex_ready(status: dict[str, Any]) -> bool:
        return next(p for p in status["providers"] if p["name"] == "codex")["ready"]

    def change(self, mode: str) -> dict[str, Any]:
        self.count += 1
        want = not self.ready
        data = codex_login(time.time() + 10 * DAY, tag=str(self.count)) if want else LOGGED_OUT
        t0 = WRITERS[mode](self.path, data)
        status_ns = auth_ns = None
        extra = 0
        deadline = time.monotonic() + self.timeout
        quiet_until = None
        while True:
            limit = quiet_until if quiet_until is not None else deadline
            remaining = limit - time.monotonic()
            if remaining <= 0:
                break
            got = False
            for method, params in self.client.notifications(timeout=remaining):
                now = time.perf_counter_ns()
                got = True
                if method != "takod.event":
                    continue
                topic, payload = params[2], params[3]
                if topic == "status" and status_ns is None and self._codex_ready(payload) == want:
                    status_ns = now
                elif topic == "auth" and auth_ns is None:
                    auth_ns = now
                else:
                    extra += 1
                if status_ns is not None and auth_ns is not None:
                    quiet_until = time.monotonic() + self.quiet  # then count whatever else comes
                break
            if not got:
                break
        if status_ns is None:  # missed: learn where the daemon stands before the next change
            self.ready = self._codex_ready(self.client.call("status"))
        else:
            self.ready = want
        return {
            "event_ms": None if status_ns is None else (status_ns - t0) / 1e6,
            "auth_ms": None if auth_ns is None else (auth_ns - t0) / 1e6,
            "extra": extra,
        }

    def close(self) -> None:
        self.client.close()


class RawTarget:
    """Changes to a sibling file, observed by the bare awatch process."""

    def __init__(self, codex_home: Path, settings: dict[str, int], timeout: float, quiet: float, log: Path):
        self.path, self.timeout, self.quiet = codex_home / BASELINE_NAME, timeout, quiet
        self.path.write_bytes(LOGGED_OUT)
        argv = [sys.executable, str(Path(__file__).resolve()), "--baseline-watcher", str(codex_home), BASELINE_NAME,
                str(settings["step_ms"]), str(settings["debounce_ms"]), str(settings["rust_timeout_ms"])]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "client"), str(REPO / "daemon"), str(BENCH)]))
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        assert self.proc.stdout is not None
        self.fd = self.proc.stdout.fileno()
        self.live = False
        self.count = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def arm(self, attempts: int = 50) -> None:
        """Change the file until the watcher reports (its watch is armed some time after start)."""
        for _ in range(attempts):
            if self.change("atomic")["event_ms"] is not None:
                return
        raise RuntimeError("the baseline watcher never reported a change")

    def _wait(self, timeout: float) -> int | None:
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if not ready:
            return None
        now = time.perf_counter_ns()
        if not os.read(self.fd, 4096):
            raise RuntimeError("the baseline watcher exited")
        return now

    def change(self, mode: str) -> dict[str, Any]:
        self.count += 1
        self.live = not self.live
        data = codex_login(time.time() + 10 * DAY, tag=f"b{self.count}") if self.live else LOGGED_OUT
        t0 = WRITERS[mode](self.path, data)
        seen = self._wait(self.timeout)
        extra = 0
        if seen is not None:
            while self._wait(self.quiet) is not None:
                extra += 1
        return {"event_ms": None if seen is None else (seen - t0) / 1e6, "auth_ms": None, "extra": extra}

    def close(self) -> None:
        stop(self.proc)  # type: ignore[arg-type]
        if self.proc.stdout:
            self.proc.stdout.close()


# the run ------------------------------------------------------------------------------


def stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50": percentile(ordered, 50),
        "p90": percentile(ordered, 90),
        "p99": percentile(ordered, 99),
        "max": ordered[-1] if ordered else float("nan"),
    }


def start_daemon(home: Path, log_level: str, linked: bool) -> DaemonProcess:
    """A daemon with the real codex CLI on PATH and a live Codex login."""
    if linked:
        (home / "tako.toml").write_text("")  # the default workspace (HOME) becomes a Tako workspace
    bindir = home / "bin"
    bindir.mkdir()
    if (TOOLS_BIN / "codex").exists():
        (bindir / "codex").symlink_to(TOOLS_BIN / "codex")
    else:
        # No real CLI: codex stays not-installed, yet its credential changes still produce status events.
        print(f"note: {TOOLS_BIN / 'codex'} missing; run scripts/install-test-tools.sh", file=sys.stderr)
    codex_home = home / ".codex"
    codex_home.mkdir(mode=0o700)
    write_atomic(codex_home / "auth.json", codex_login(time.time() + 10 * DAY, tag="0"))
    env = clean_env(home, PATH=str(bindir), CODEX_HOME=str(codex_home))
    return DaemonProcess(home, env).start("--log-level", log_level)


def run(args: argparse.Namespace) -> dict[str, Any]:
    modes = [m for m in args.modes.split(",") if m]
    for m in modes:
        if m not in WRITERS:
            sys.exit(f"unknown mode {m!r}; modes are {', '.join(WRITERS)}")
    settings = watch_settings()
    rounds = max(1, -(-args.n // args.block))
    rng = random.Random(args.seed)
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {t: {m: [] for m in modes} for t in TARGETS}
    cpu: dict[str, dict[str, float]] = {t: {m: 0.0 for m in modes} for t in TARGETS}
    with temp_home() as home:
        daemon = start_daemon(home, args.log_level, args.linked)
        raw: RawTarget | None = None
        takod: TakodTarget | None = None
        try:
            takod = TakodTarget(daemon, home / ".codex", args.timeout, args.quiet)
            raw = RawTarget(home / ".codex", settings, args.timeout, args.quiet, home / "baseline.stderr")
            raw.arm()
            targets: dict[str, Any] = {"takod": takod, "raw": raw}
            pids = {"takod": daemon.pid, "raw": raw.pid}
            for _ in range(args.warmup):
                for mode in modes:
                    for t in targets.values():
                        t.change(mode)
            for r, name in interleave(rounds, TARGETS):
                for mode in modes:
                    count = min(args.block, args.n - r * args.block)
                    cpu0 = cpu_seconds(pids[name])
                    for _ in range(count):
                        samples[name][mode].append(targets[name].change(mode))
                        # A random pause, so writes land at every phase of the watcher's step.
                        time.sleep(rng.uniform(0, settings["step_ms"] / 1000))
                    cpu[name][mode] += cpu_seconds(pids[name]) - cpu0
        finally:
            if takod:
                takod.close()
            if raw:
                raw.close()
            daemon.stop()

    result: dict[str, Any] = {"watch_settings": settings, "modes": {}}
    for mode in modes:
        cell: dict[str, Any] = {}
        for name in TARGETS:
            rows = samples[name][mode]
            lat = [r["event_ms"] for r in rows if r["event_ms"] is not None]
            cell[name] = {
                **stats(lat),
                "changes": len(rows),
                "misses": sum(r["event_ms"] is None for r in rows),
                "extra_events": sum(r["extra"] for r in rows),
                "cpu_ms_per_change": cpu[name][mode] / len(rows) * 1000 if rows else float("nan"),
            }
            if name == "takod":
                auth = [r["auth_ms"] for r in rows if r["auth_ms"] is not None]
                cell[name]["auth_event"] = {**stats(auth), "misses": sum(r["auth_ms"] is None for r in rows)}
        t, b = cell["takod"], cell["raw"]
        cell["p50_ratio"] = ratio(t["p50"], b["p50"])
        cell["p99_ratio"] = ratio(t["p99"], b["p99"])
        cell["p50_overhead_ms"] = t["p50"] - b["p50"]
        cell["p99_overhead_ms"] = t["p99"] - b["p99"]
        cell["target_p99_ms"] = P99_TARGET_MS
        cell["verdict"] = verdict(t["p99"], P99_TARGET_MS) if not t["misses"] else "MISSED (misses)"
        result["modes"][mode] = cell
    return result


def render(report: dict[str, Any]) -> str:
    m, res, a = report["machine"], report["result"], report["args"]
    s = res["watch_settings"]
    lines = [
        f"machine: {m['nproc']} CPU(s), {m['cpu']}, {m['implementation']} {m['python']}, "
        f"load average {'/'.join(map(str, m['load_average']))}",
        f"watchfiles settings (takod's): step {s['step_ms']} ms, debounce {s['debounce_ms']} ms, "
        f"rust_timeout {s['rust_timeout_ms']} ms",
        f"{a['n']} changes per target and mode, interleaved in blocks of {a['block']}; timeout {a['timeout']} s"
        + ("; Codex -> pi link on (--linked)" if a["linked"] else ""),
        "",
        "write -> event at the subscriber (ms); takod = first `status` event showing the change,",
        "raw = bare awatch in its own process on the same directory",
    ]
    for mode, cell in res["modes"].items():
        lines += [
            "",
            f"{mode}:",
            f"  {'':<11}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}{'misses':>8}{'extra':>7}{'CPU/change':>12}",
        ]
        for name, label in (("takod", "takod"), ("raw", "raw awatch")):
            c = cell[name]
            lines.append(
                f"  {label:<11}{c['p50']:>8.1f}{c['p90']:>8.1f}{c['p99']:>8.1f}{c['max']:>8.1f}"
                f"{c['misses']:>8}{c['extra_events']:>7}{c['cpu_ms_per_change']:>10.2f}ms"
            )
        au = cell["takod"]["auth_event"]
        lines.append(
            f"  {'auth event':<11}{au['p50']:>8.1f}{au['p90']:>8.1f}{au['p99']:>8.1f}{au['max']:>8.1f}{au['misses']:>8}"
        )
        lines.append(
            f"  takod/raw: p50 {cell['p50_ratio']:.2f} ({cell['p50_overhead_ms']:+.1f} ms), "
            f"p99 {cell['p99_ratio']:.2f} ({cell['p99_overhead_ms']:+.1f} ms); "
            f"takod p99 target < {cell['target_p99_ms']:.0f} ms: {cell['verdict']}"
        )
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--baseline-watcher":
        directory, name, step, debounce, rust_timeout = sys.argv[2:7]
        baseline_watcher(directory, name, int(step), int(debounce), int(rust_timeout))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200, help="changes per target and write mode (default 200)")
    p.add_argument("--modes", default="atomic,inplace", help="write modes: atomic, inplace (default both)")
    p.add_argument("--block", type=int, default=20, help="changes per interleaved block (default 20)")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds without the event before a change is a miss")
    p.add_argument("--quiet", type=float, default=0.2,
                   help="seconds to keep counting extra events after the expected one (default 0.2)")
    p.add_argument("--linked", action="store_true",
                   help="make the default workspace a Tako workspace, so the Codex -> pi link runs on every change")
    p.add_argument("--warmup", type=int, default=4, help="unmeasured changes per target and mode first (default 4)")
    p.add_argument("--seed", type=int, default=1, help="seed of the random pauses between changes")
    p.add_argument("--log-level", default="info", choices=["debug", "info"], help="takod's log level (default info)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    args = p.parse_args()
    report = {"machine": machine(), "args": vars(args), "result": run(args)}
    report["machine"]["load_average"] = load_average()
    emit(report, args.json, render)


if __name__ == "__main__":
    main()
