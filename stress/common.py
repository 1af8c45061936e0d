"""Shared helpers for the stress scripts: the daemon's resources from /proc, checks, reports.

Each script starts a real daemon in a temporary HOME (bench/common.py), drives
it as clients do, prints its figures and a verdict (exit 0 pass, 1 fail), and
with ``--json`` prints the same as one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

STRESS = Path(__file__).resolve().parent
REPO = STRESS.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import load_average, machine, summary, temp_home  # noqa: E402,F401
from tests.harness import DaemonProcess, clean_env  # noqa: E402
from tests.procfs import alive, rss_kib  # noqa: E402,F401


@contextmanager
def running_daemon(home: Path, soft_fd_limit: int | None = None, log_level: str = "info") -> Iterator[DaemonProcess]:
    """A real daemon in ``home``. With ``soft_fd_limit`` it starts with that soft
    RLIMIT_NOFILE (inherited from us for the moment of the start), as under a
    login session that keeps the common default of 1024."""
    old = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft_fd_limit is not None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft_fd_limit, old[1]), old[1]))
    try:
        proc = DaemonProcess(home, clean_env(home)).start("--log-level", log_level)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, old)
    try:
        yield proc
    finally:
        proc.stop()


def log_events(daemon: DaemonProcess, levels: tuple[str, ...] = ("warning", "error", "critical")) -> dict[str, int]:
    """How often each message at ``levels`` appears in the daemon's JSON log."""
    counts: Counter[str] = Counter()
    for line in daemon.log_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("level") in levels:
            counts[f"{entry.get('level')}: {entry.get('event')}"] += 1
    return dict(counts)


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def nofile_limits(pid: int) -> tuple[int, int]:
    """The soft and hard RLIMIT_NOFILE of a running process, from /proc/PID/limits."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise RuntimeError(f"no open-files limit for pid {pid}")


def resources(pid: int) -> dict[str, int]:
    """What the daemon holds now: resident memory, open files, threads."""
    return {"rss_kib": rss_kib(pid), "fds": fd_count(pid), "threads": thread_count(pid)}


def raise_own_fd_limit(needed: int) -> int:
    """Lift this process's soft RLIMIT_NOFILE towards the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(needed, soft)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass
class Report:
    """Figures plus named pass/fail checks; ``finish`` prints them and gives the exit code."""

    name: str
    params: dict[str, Any]
    figures: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def check(self, name: str, ok: bool) -> bool:
        self.checks[name] = bool(ok)
        return bool(ok)

    @property
    def passed(self) -> bool:
        return all(self.checks.values())

    def finish(self, as_json: bool) -> int:
        doc = {
            "script": self.name,
            "params": self.params,
            "machine": machine(),
            "load_average": load_average(),
            "figures": self.figures,
            "checks": self.checks,
            "notes": self.notes,
            "verdict": "pass" if self.passed else "fail",
        }
        if as_json:
            print(json.dumps(doc, indent=2, sort_keys=True))
        else:
            print(f"== {self.name} ({', '.join(f'{k}={v}' for k, v in self.params.items())})")
            for section, values in self.figures.items():
                print(f"-- {section}")
                for key, value in (values.items() if isinstance(values, dict) else [("value", values)]):
                    print(f"   {key:<28} {_fmt(value)}")
            for name, ok in self.checks.items():
                print(f"   [{'ok' if ok else 'FAIL'}] {name}")
            for note in self.notes:
                print(f"   note: {note}")
            print(f"verdict: {doc['verdict']}")
        return 0 if self.passed else 1


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    return str(value)


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def latency_ms(samples_s: list[float]) -> dict[str, float]:
    s = summary([x * 1000 for x in samples_s], qs=(50, 99))
    s["max"] = max(samples_s) * 1000 if samples_s else float("nan")
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in s.items()}
