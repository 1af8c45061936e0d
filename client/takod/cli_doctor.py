"""``takod doctor [--fix] [--json]``: what is wrong, and how to fix it.

The daemon runs the checks (``doctor.run``), so they see what the daemon sees;
progress of long repairs streams to stderr. When the daemon cannot be reached,
the checks that need only this machine's files still run here (and ``--fix``
repairs the modes that keep a daemon from starting), and the report says the
daemon is down. Exit 0 when nothing failed, 4 when a check failed, 3 when the
daemon is unreachable.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Callable

import msgspec

from .cli import EXIT_NOT_READY, EXIT_OK, EXIT_UNAVAILABLE, Output, _client
from .client import ConnectError
from .doctor_local import PROXY_VARS, chmod_own, counts, local_checks, local_facts, mode_fixes
from .paths import find_workspace, socket_path, state_dir
from .schema import DoctorCheck, DoctorFix
from .status_line import client_env

_MARK = {"ok": ("ok", "32"), "warn": ("WARN", "33"), "fail": ("FAIL", "31")}


def _env_names() -> list[str]:
    """Names (never values) of this shell's key and proxy variables."""
    proxies = [k for k, v in os.environ.items() if v and k.upper() in PROXY_VARS]
    return sorted(set(client_env()) | set(proxies))


def _print_report(result: dict[str, Any], out: Output) -> None:
    where = "" if result["daemon"] else out.bad(" · daemon not reachable: local checks only")
    print(f"takod doctor · workspace {result['workspace']}{where}")
    width = max((len(c["id"]) for c in result["checks"]), default=8)
    for check in result["checks"]:
        label, color = _MARK[check["verdict"]]
        print(f"  {out.paint(f'{label:<4}', color)}  {check['id']:<{width}}  {check['summary']}")
        if check["verdict"] != "ok":
            pad = " " * (width + 8)
            if check.get("detail"):
                print(out.dim(f"{pad}{check['detail']}"))
            if check.get("fix"):
                print(f"{pad}fix: {check['fix']}" + (out.dim(" [--fix]") if check.get("fixable") else ""))
    for fix in result["fixes"]:
        mark = out.ok("fixed") if fix["ok"] else out.bad("not fixed")
        print(f"{mark} {fix['id']}: {fix['message']}")
    n = result["counts"]
    print(f"{n['ok']} ok, {n['warn']} warn, {n['fail']} fail")


def _local_report(args: argparse.Namespace, error: str) -> dict[str, Any]:
    """The client's own checks, for when the daemon cannot be reached."""
    sock = Path(args.socket) if args.socket else socket_path()
    facts = local_facts(sock, state_dir(), os.environ)
    checks = local_checks(facts, daemon_up=False)
    fixes: list[DoctorFix] = []
    if args.fix:
        for check_id, path, mode in mode_fixes(facts, {c.id for c in checks if c.fixable}):
            try:
                fixes.append(DoctorFix(check_id, True, chmod_own(path, mode)))
            except OSError as exc:
                fixes.append(DoctorFix(check_id, False, str(exc)))
        if fixes:
            checks = local_checks(local_facts(sock, state_dir(), os.environ), daemon_up=False)
    checks.insert(0, DoctorCheck("daemon", "fail", f"the daemon is not reachable: {error}",
                                 fix="`takod serve` shows why it does not start; `takod paths` shows where it is looked for"))
    return msgspec.to_builtins({
        "ok": False, "workspace": str(find_workspace()), "daemon": False,
        "checks": checks, "fixes": fixes, "counts": counts(checks),
    })


def _daemon_report(args: argparse.Namespace, out: Output) -> dict[str, Any]:
    """``doctor.run`` in the daemon, its progress on stderr. Raises ConnectError."""
    params = {"fix": args.fix, "stream": True, "env_names": _env_names()}
    result: dict[str, Any] = {}
    with _client(args) as c:
        for kind, payload in c.stream("doctor.run", params, timeout=900):
            if kind == "progress" and not out.json:
                print(out.dim(f"… {payload['message']}"), file=sys.stderr, flush=True)
            elif kind == "result":
                result = payload
    return result


def cmd_doctor(args: argparse.Namespace, out: Output) -> int:
    try:
        result = _daemon_report(args, out)
    except ConnectError as exc:
        result = _local_report(args, str(exc))
        if result["fixes"] and all(f["ok"] for f in result["fixes"]):
            # What kept the daemon from starting may be what was just fixed.
            try:
                local_fixes = result["fixes"]
                result = _daemon_report(args, out)
                result["fixes"] = local_fixes + result["fixes"]
            except ConnectError:
                pass
    if out.json:
        out.emit_json(result)
    else:
        _print_report(result, out)
    if not result["daemon"]:
        return EXIT_UNAVAILABLE
    return EXIT_NOT_READY if result["counts"]["fail"] else EXIT_OK


def register(add: Callable[..., argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = add("doctor", cmd_doctor, "check sockets, keys, providers, pi runtime, proxies, clock and recent errors; "
            "--fix repairs what is safe")
    p.add_argument("--fix", action="store_true",
                   help="fix modes, install the workspace pi runtime, create a missing workspace auth.json, re-probe")
