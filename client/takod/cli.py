"""The ``takod`` command line. Standard library and msgspec only (it must start fast).

Exit codes: 0 success, 1 the daemon reported an error, 2 bad usage,
3 the daemon could not be reached or started, 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import msgspec

from . import __version__
from .client import Client, ConnectError, ConnectionLost, RemoteError, TakodError
from .paths import find_workspace, lock_path, log_path, socket_path, state_dir
from .schema import TOPICS

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERRUPTED = 130


# output ----------------------------------------------------------------------


class Output:
    """Writes human or JSON output; colours only on a terminal without NO_COLOR."""

    def __init__(self, json_mode: bool):
        self.json = json_mode
        self.color = sys.stdout.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"

    def paint(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def ok(self, text: str) -> str:
        return self.paint(text, "32")

    def bad(self, text: str) -> str:
        return self.paint(text, "31")

    def dim(self, text: str) -> str:
        return self.paint(text, "2")

    def emit_json(self, value: Any, *, compact: bool = False) -> None:
        data = msgspec.json.encode(value)
        if not compact:
            data = msgspec.json.format(data, indent=2)
        sys.stdout.write(data.decode() + "\n")
        sys.stdout.flush()

    def error(self, code: str, message: str) -> None:
        if self.json:
            self.emit_json({"error": {"code": code, "message": message}})
        else:
            print(f"takod: {message}" if code in ("unavailable", "error") else f"takod: {code}: {message}", file=sys.stderr)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60}s"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600}h"


# commands --------------------------------------------------------------------


def _client(args: argparse.Namespace, *, spawn: bool | None = None) -> Client:
    return Client(args.socket, spawn=spawn, workspace=find_workspace(), name=f"takod-cli/{__version__}")


def cmd_status(args: argparse.Namespace, out: Output) -> int:
    with _client(args) as c:
        st = c.call("status")
    if out.json:
        out.emit_json(st)
        return EXIT_OK
    d = st["daemon"]
    print(f"takod {d['version']} · pid {d['pid']} · up {_duration(d['uptime_s'])} · {d['socket']}")
    print(f"workspace  {st['workspace']}")
    selected = st["selected"]
    print(f"selected   {out.ok(selected) if selected else out.bad('none')}")
    print()
    width = max(len(p["name"]) for p in st["providers"]) if st["providers"] else 8
    for p in st["providers"]:
        mark = out.ok("ready") if p["ready"] else out.bad(p["level"])
        line = f"  {p['name']:<{width}}  {mark}"
        if not p["ready"] and p.get("reason"):
            line += f"  {p['reason']}"
            if p.get("hint"):
                line += out.dim(f" — {p['hint']}")
        print(line)
    return EXIT_OK


def cmd_paths(args: argparse.Namespace, out: Output) -> int:
    sock = Path(args.socket) if args.socket else socket_path()
    paths = {
        "socket": str(sock),
        "lock": str(lock_path(sock)),
        "state_dir": str(state_dir()),
        "log": str(log_path()),
        "workspace": str(find_workspace()),
    }
    if out.json:
        out.emit_json(paths)
    else:
        for key, value in paths.items():
            print(f"{key:<10} {value}")
    return EXIT_OK


def cmd_stop(args: argparse.Namespace, out: Output) -> int:
    client = _client(args, spawn=False)
    try:
        client.connect()
        pid = client.call("shutdown")["pid"]
    except ConnectError:
        if out.json:
            out.emit_json({"stopped": False, "running": False})
        else:
            print("takod is not running")
        return EXIT_OK
    finally:
        client.close()
    # Wait until it has really let go of the socket, so `stop && serve` works.
    deadline = time.monotonic() + 10
    stopped = False
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            stopped = True
            break
        except PermissionError:
            break
        time.sleep(0.02)
    if out.json:
        out.emit_json({"stopped": stopped, "running": not stopped, "pid": pid})
    else:
        print(f"takod stopped (pid {pid})" if stopped else f"takod (pid {pid}) is still stopping")
    return EXIT_OK if stopped else EXIT_ERROR


def cmd_watch(args: argparse.Namespace, out: Output) -> int:
    topics = args.topic or list(TOPICS)
    with _client(args) as c:
        sub = c.call("subscribe", {"topics": topics})
        if not out.json:
            print(out.dim(f"watching {', '.join(sub['topics'])} (Ctrl-C to stop)"), file=sys.stderr)
        try:
            for method, params in c.notifications():
                if method != "takod.event" or len(params) != 4:
                    continue
                sub_id, seq, topic, payload = params
                if out.json:
                    out.emit_json({"sub_id": sub_id, "seq": seq, "topic": topic, "payload": payload}, compact=True)
                else:
                    stamp = time.strftime("%H:%M:%S")
                    body = msgspec.json.encode(payload).decode()
                    print(f"{out.dim(stamp)} {topic:<7} {body}", flush=True)
        except ConnectionLost:
            if not out.json:
                print(out.dim("takod stopped"), file=sys.stderr)
    return EXIT_OK


def cmd_serve(args: argparse.Namespace, out: Output) -> int:
    try:
        from takod_daemon.main import main as daemon_main
    except ImportError:
        out.error("unavailable", "the daemon is not installed in this Python (package takod_daemon missing)")
        return EXIT_UNAVAILABLE
    argv = ["--log", args.log, "--log-level", args.log_level]
    if args.socket:
        argv += ["--socket", args.socket]
    return daemon_main(argv)


# parser ----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output (stable keys)")
    common.add_argument("--socket", metavar="PATH", help="daemon socket (default: $TAKOD_SOCKET or the platform default)")

    parser = argparse.ArgumentParser(
        prog="takod",
        description="takod: the per-user inference daemon for Tako workspaces.",
        epilog="Run `takod COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"takod {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace, Output], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(func=func)
        return p

    add("status", cmd_status, "show the daemon and every provider's readiness")
    add("paths", cmd_paths, "show the socket, lock, state and log paths takod uses")
    add("stop", cmd_stop, "stop the running daemon (never starts one)")
    w = add("watch", cmd_watch, "print events (status, auth, daemon, login) as they happen")
    w.add_argument("--topic", action="append", choices=TOPICS, help="only this topic (repeatable)")
    s = add("serve", cmd_serve, "run the daemon in the foreground")
    s.add_argument("--log", choices=["auto", "console", "json", "journal"], default="auto", help="log output format")
    s.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    out = Output(args.json)
    try:
        return args.func(args, out)
    except RemoteError as exc:
        out.error(exc.code, exc.message)
        return EXIT_USAGE if exc.is_bad_request else EXIT_ERROR
    except ConnectError as exc:
        out.error("unavailable", str(exc))
        return EXIT_UNAVAILABLE
    except TakodError as exc:
        out.error("error", str(exc))
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `takod watch | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
