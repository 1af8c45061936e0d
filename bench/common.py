"""Shared helpers for the takod benchmarks: statistics, interleaving, servers to measure.

Every benchmark runs its baseline in the same run as takod, interleaved
(``interleave``), and reports a ratio: the machine is small and noisy, so
absolute timings are for context only.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # for tests.harness

from tests.harness import DaemonProcess, _read_line, clean_env  # noqa: E402

# statistics ----------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile ``q`` (0..100) of already sorted values."""
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summary(values: Sequence[float], qs: Sequence[int] = (50, 90, 99)) -> dict[str, float]:
    """``{"p50": .., "p90": .., "p99": .., "n": ..}`` of ``values``."""
    ordered = sorted(values)
    out = {f"p{q}": percentile(ordered, q) for q in qs}
    out["n"] = len(ordered)
    return out


def ratio(a: float, b: float) -> float:
    return a / b if b else float("inf")


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def interleave(rounds: int, targets: Sequence[str]) -> Iterator[tuple[int, str]]:
    """``(round, target)`` pairs, alternating which target goes first (ABBA...)
    so slow drift of the machine weighs on every target equally."""
    for r in range(rounds):
        order = targets if r % 2 == 0 else list(reversed(targets))
        for target in order:
            yield r, target


# the machine ----------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or "unknown"
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }


def cpu_seconds(pid: int) -> float:
    """CPU time all of a process's threads have used so far, to the nanosecond
    (Linux /proc/PID/task/*/schedstat; /proc/PID/stat counts in 10 ms ticks)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that just ended
    return total / 1e9


def pin(pid: int, cpus: set[int]) -> None:
    """Run every thread of ``pid`` (0: this process) on ``cpus`` only; threads born later inherit it."""
    tasks = [0] if pid == 0 else [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()]
    for tid in tasks:
        try:
            os.sched_setaffinity(tid, cpus)
        except ProcessLookupError:
            pass  # a thread that just ended


# output -----------------------------------------------------------------------


def emit(report: dict[str, Any], as_json: bool, render: Any) -> None:
    """Print ``report`` as JSON, or through ``render(report) -> str`` for people."""
    if as_json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(render(report))


def verdict(value: float, target: float) -> str:
    return "ok" if value <= target else "MISSED"


# servers --------------------------------------------------------------------


@contextmanager
def temp_home() -> Iterator[Path]:
    """A short temporary HOME (socket paths must stay under ~100 bytes), private: the
    baselines' sockets live in it, and the client talks only through a 0700 directory."""
    with tempfile.TemporaryDirectory(prefix="takodb") as tmp:
        home = Path(tmp) / "h"
        home.mkdir(mode=0o700)
        yield home


@contextmanager
def takod_daemon(home: Path, log_level: str = "info") -> Iterator[DaemonProcess]:
    """A real takod daemon in ``home``, logging JSON to its state dir at ``log_level``
    (``info`` is what a user runs; the test harness uses ``debug``)."""
    proc = DaemonProcess(home, clean_env(home)).start("--log-level", log_level)
    try:
        yield proc
    finally:
        proc.stop()


def spawn_ready(argv: list[str], env: dict[str, str], cwd: Path | None = None, timeout: float = 20.0,
                log: Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``argv`` + ``--ready-fd N`` and wait for its ``ok`` line (takod's ready-pipe protocol)."""
    read_fd, write_fd = os.pipe()
    out = open(log, "ab") if log else None
    try:
        proc = subprocess.Popen([*argv, "--ready-fd", str(write_fd)], env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=out, pass_fds=(write_fd,))
    finally:
        os.close(write_fd)
        if out:
            out.close()
    try:
        line = _read_line(read_fd, timeout)
    finally:
        os.close(read_fd)
    if line != "ok":
        stop(proc)
        detail = log.read_text(errors="replace") if log and log.exists() else ""
        raise RuntimeError(f"{argv[:3]} not ready: {line!r}\n{detail}")
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass
class Server:
    """A server process under measurement."""

    pid: int
    socket: Path


@contextmanager
def echo_server(home: Path, result: Any) -> Iterator[Server]:
    """bench/echo_server.py, answering every request with ``result`` (msgpack-encoded once, up front)."""
    import msgspec

    result_file = home / "echo-result.msgpack"
    result_file.write_bytes(msgspec.msgpack.encode(result))
    sock = home / "echo.sock"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "client"), os.environ.get("PYTHONPATH", "")]))
    proc = spawn_ready([sys.executable, str(BENCH / "echo_server.py"), str(sock), str(result_file)], env)
    try:
        yield Server(proc.pid, sock)
    finally:
        stop(proc)


@contextmanager
def nvim_server(home: Path, timeout: float = 20.0) -> Iterator[Server]:
    """``nvim --headless --clean --listen SOCKET``: Neovim's own msgpack-rpc server (HOME and XDG dirs in ``home``)."""
    import shutil
    import socket
    import time

    nvim = shutil.which("nvim")
    if nvim is None:
        raise RuntimeError("nvim is not on PATH")
    sock = home / "nvim.sock"
    xdg = {f"XDG_{kind}_HOME": str(home / f"xdg-{kind.lower()}") for kind in ("CONFIG", "DATA", "STATE", "CACHE")}
    env = dict(os.environ, HOME=str(home), **xdg)
    proc = subprocess.Popen([nvim, "--headless", "--clean", "--listen", str(sock)], env=env, cwd=home,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while True:  # nvim has no ready pipe: wait until the socket accepts
            try:
                with socket.socket(socket.AF_UNIX) as probe:
                    probe.connect(str(sock))
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"nvim did not listen on {sock}") from None
                time.sleep(0.02)
        yield Server(proc.pid, sock)
    finally:
        stop(proc)


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages when the run ended (others' work on a shared machine)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []
