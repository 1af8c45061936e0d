"""``takod service install|uninstall|status``: the systemd user units or the launchd agent.

``install`` writes the units with this Python's absolute path, stops a daemon
that a client started by itself (the service manager must own the socket),
and enables them. ``uninstall`` disables and removes exactly what install
wrote (files carrying its marker line). ``status`` says what is installed and
running, and what would stop it working: no user manager, XDG_RUNTIME_DIR,
lingering, clients that look for a different socket.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from . import units
from .cli import EXIT_ERROR, EXIT_OK, EXIT_USAGE, Output, _lock_is_free
from .client import Client, TakodError
from .paths import SUN_PATH_MAX, DirProblem, check_private_dir, ensure_private_dir, home, lock_path, socket_path

COMMAND_TIMEOUT = 30.0
LINGER_DIR = Path("/var/lib/systemd/linger")


@dataclass(frozen=True)
class Problem:
    """Something that stops the service working (or working after logout), with its fix."""

    code: str
    message: str
    fix: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "fix": self.fix}


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str

    @property
    def said(self) -> str:
        return self.stderr or self.stdout or f"exit status {self.returncode}"


def _run(*argv: str) -> Ran:
    """Run a service-manager command; a missing or hanging tool is an answer, not a traceback."""
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return Ran(127, "", f"{argv[0]} not found")
    except subprocess.TimeoutExpired:
        return Ran(124, "", f"`{' '.join(argv)}` did not answer within {COMMAND_TIMEOUT:.0f} s")
    return Ran(r.returncode, r.stdout.strip(), r.stderr.strip())


def environment_problems(
    env: Mapping[str, str],
    uid: int,
    user: str,
    runtime_problem: DirProblem | None,
    linger: bool | None,
) -> list[Problem]:
    """What in this environment keeps a systemd user service from being reached or from outliving a logout."""
    problems = []
    runtime = env.get("XDG_RUNTIME_DIR", "")
    if not runtime:
        problems.append(Problem(
            "xdg_runtime_dir_unset",
            "XDG_RUNTIME_DIR is not set (usual under su, sudo or cron), so `systemctl --user` cannot find your user "
            "manager and clients look for the socket in /run/user/UID directly",
            f"log in directly (ssh or console), or `export XDG_RUNTIME_DIR=/run/user/{uid}`",
        ))
    elif runtime_problem is not None:
        problems.append(Problem(
            "xdg_runtime_dir_unusable", f"XDG_RUNTIME_DIR {runtime_problem.path} {runtime_problem.reason}",
            runtime_problem.fix,
        ))
    if linger is False:
        problems.append(Problem(
            "linger_off",
            f"lingering is off for {user}: systemd stops takod at your last logout (and removes /run/user/{uid}), "
            "so tokens are not kept fresh while you are logged out",
            f"loginctl enable-linger {user}",
        ))
    return problems


def socket_problem(client_socket: Path, service_socket: Path, env: Mapping[str, str]) -> Problem | None:
    """Clients in this environment would not reach the service's socket."""
    if client_socket == service_socket:
        return None
    fix = (f"unset TAKOD_SOCKET (or set it to {service_socket})" if env.get("TAKOD_SOCKET")
           else "make XDG_RUNTIME_DIR (or /run/user/UID) a private directory of yours")
    return Problem(
        "socket_mismatch", f"clients here connect to {client_socket}, but the service listens at {service_socket}", fix
    )


def _write(path: Path, data: bytes) -> None:
    """Atomically, 0644: the manager reads it, nothing in it is secret."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        os.fchmod(f.fileno(), 0o644)
    os.replace(tmp, path)


class Systemd:
    """Socket and service units under ``~/.config/systemd/user``, driven by ``systemctl --user``."""

    name = "systemd"

    def __init__(self, env: Mapping[str, str], uid: int, user: str, home_dir: Path, python: str):
        self.env, self.uid, self.user = env, uid, user
        self.unit_dir = units.systemd_unit_dir(env, home_dir)
        self.socket = units.systemd_socket_path(units.runtime_dir(env, uid))
        self.python = python
        self.unit_names = (units.SOCKET_UNIT, units.SERVICE_UNIT)

    def files(self) -> dict[Path, bytes]:
        return {
            self.unit_dir / units.SOCKET_UNIT: units.render_socket_unit().encode(),
            self.unit_dir / units.SERVICE_UNIT: units.render_service_unit(
                self.python, self.env.get("PATH", os.defpath)
            ).encode(),
        }

    def _systemctl(self, *args: str) -> Ran:
        return _run("systemctl", "--user", *args)

    def unreachable(self) -> Problem | None:
        if shutil.which("systemctl", path=self.env.get("PATH")) is None:
            return Problem("no_systemctl", "systemctl not found: this system does not run systemd",
                           "nothing to install; clients start takod themselves (or run `takod serve`)")
        ran = self._systemctl("show-environment")  # cheap, and needs the user manager
        if ran.returncode == 0:
            return None
        fix = (f"`export XDG_RUNTIME_DIR=/run/user/{self.uid}` first" if not self.env.get("XDG_RUNTIME_DIR")
               else f"log in through a session that runs `systemd --user` (ssh or console, not su), "
                    f"or `loginctl enable-linger {self.user}` to start one without a login")
        return Problem("no_user_manager", f"no systemd user manager is reachable ({ran.said})", fix)

    def prepare(self) -> Problem | None:
        return None  # systemd makes the socket directory itself (DirectoryMode=0700)

    def enable(self, changed: bool) -> Problem | None:
        steps: list[tuple[str, ...]] = [("daemon-reload",), ("enable", "--now", *self.unit_names)]
        if changed:  # a daemon already running from the old unit (another Python) is replaced
            steps.append(("try-restart", units.SERVICE_UNIT))
        for args in steps:
            ran = self._systemctl(*args)
            if ran.returncode != 0:
                return Problem("enable_failed", f"`systemctl --user {' '.join(args)}` failed: {ran.said}",
                               "see `journalctl --user -u takod`, then run `takod service install` again")
        return None

    def disable(self) -> Problem | None:
        ran = self._systemctl("disable", "--now", *reversed(self.unit_names))
        if ran.returncode != 0:
            return Problem("disable_failed", f"`systemctl --user disable --now` failed: {ran.said}",
                           "stop it by hand: `systemctl --user stop takod.service takod.socket`")
        return None

    def after_removal(self) -> None:
        # Enable links left by a manager we could not reach would dangle.
        for target, unit in (("sockets.target.wants", units.SOCKET_UNIT), ("default.target.wants", units.SERVICE_UNIT)):
            link = self.unit_dir / target / unit
            if link.is_symlink():
                link.unlink()
        self._systemctl("daemon-reload")

    def state(self) -> dict[str, dict[str, str]]:
        return {
            unit: {
                "active": self._systemctl("is-active", unit).stdout or "unknown",
                "enabled": self._systemctl("is-enabled", unit).stdout or "unknown",
            }
            for unit in self.unit_names
        }

    def advice(self) -> list[Problem]:
        runtime = self.env.get("XDG_RUNTIME_DIR", "")
        problem = check_private_dir(Path(runtime), "XDG_RUNTIME_DIR") if os.path.isabs(runtime) else None
        return environment_problems(self.env, self.uid, self.user, problem, _linger(self.user))

    def logs_hint(self) -> str:
        return "journalctl --user -u takod"


class Launchd:
    """A LaunchAgent in ``~/Library/LaunchAgents``, driven by ``launchctl`` in the gui/<uid> domain."""

    name = "launchd"

    def __init__(self, env: Mapping[str, str], uid: int, user: str, home_dir: Path, python: str):
        self.env, self.uid = env, uid
        self.plist = units.launchd_plist_path(home_dir)
        self.socket = units.launchd_socket_path(home_dir)
        self.log_dir = home_dir / "Library" / "Logs" / "takod"
        self.python = python
        self.target = f"gui/{uid}/{units.LAUNCHD_LABEL}"

    def files(self) -> dict[Path, bytes]:
        path_env = self.env.get("PATH", os.defpath)
        return {self.plist: units.render_launchd_plist(self.python, self.socket, self.log_dir, path_env)}

    def unreachable(self) -> Problem | None:
        if shutil.which("launchctl", path=self.env.get("PATH")) is None:
            return Problem("no_launchctl", "launchctl not found: launchd agents exist only on macOS",
                           "use `--manager systemd` on Linux; otherwise clients start takod themselves")
        return None

    def prepare(self) -> Problem | None:
        if len(os.fsencode(self.socket)) >= SUN_PATH_MAX:
            # Clients would fall back to /tmp (see takod.paths); an agent there could be cleaned away.
            return Problem("socket_path_too_long", f"{self.socket} is too long for a Unix socket",
                           "use a shorter home directory path; clients start takod themselves meanwhile")
        # launchd creates the socket but not its directory, and does not expand ~.
        problem = ensure_private_dir(self.socket.parent)
        if problem is not None:
            return Problem("socket_dir", f"socket directory {problem.path}: {problem.reason}", problem.fix)
        try:
            self.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            return Problem("log_dir", f"cannot create {self.log_dir}: {exc.strerror}", f"mkdir -p '{self.log_dir}'")
        return None

    def enable(self, changed: bool) -> Problem | None:
        # bootout first: bootstrap refuses a loaded job, and a changed plist must be re-read anyway.
        _run("launchctl", "bootout", self.target)
        ran = _run("launchctl", "bootstrap", f"gui/{self.uid}", str(self.plist))
        if ran.returncode != 0:
            return Problem("enable_failed", f"`launchctl bootstrap` failed: {ran.said}",
                           f"see {self.log_dir / 'daemon.stderr'}, then run `takod service install` again")
        return None

    def disable(self) -> Problem | None:
        ran = _run("launchctl", "bootout", self.target)
        if ran.returncode != 0 and _run("launchctl", "print", self.target).returncode == 0:
            return Problem("disable_failed", f"`launchctl bootout` failed: {ran.said}", f"launchctl bootout {self.target}")
        return None

    def after_removal(self) -> None:
        pass

    def state(self) -> dict[str, dict[str, str]]:
        loaded = _run("launchctl", "print", self.target).returncode == 0
        return {units.LAUNCHD_LABEL: {"active": "loaded" if loaded else "not-loaded",
                                      "enabled": "enabled" if self.plist.exists() else "disabled"}}

    def advice(self) -> list[Problem]:
        return []

    def logs_hint(self) -> str:
        return f"tail {self.log_dir / 'daemon.stderr'} and the daemon.log in the state dir"


Manager = Systemd | Launchd


def _linger(user: str) -> bool | None:
    """Lingering on (True), off (False) or unknowable here (None): logind's word, else its state directory."""
    ran = _run("loginctl", "show-user", user, "--property=Linger", "--value")
    if ran.returncode == 0 and ran.stdout in ("yes", "no"):
        return ran.stdout == "yes"
    return (LINGER_DIR / user).exists() if LINGER_DIR.is_dir() else None


def _manager(args: argparse.Namespace) -> Manager:
    choice = args.manager
    if choice == "auto":
        choice = "launchd" if sys.platform == "darwin" else "systemd"
    uid = os.getuid()
    try:
        import pwd

        user = pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        user = os.environ.get("USER", str(uid))
    # Not resolved: a venv's python is a symlink whose target would lose the venv.
    python = os.path.abspath(sys.executable)
    cls = Launchd if choice == "launchd" else Systemd
    return cls(os.environ, uid, user, home(), python)


def _stop_self_started(sock: Path) -> int | None:
    """Stop a daemon a client started itself at ``sock`` (the manager is about to own
    that path); return its pid. A daemon the manager started is left alone."""
    try:
        with Client(sock, spawn=False, timeout=10) as c:
            if c.call("status")["daemon"].get("activated"):
                return None
            pid: int = c.call("shutdown")["pid"]
    except TakodError:
        return None  # nothing listening there
    deadline = time.monotonic() + 10
    while not _lock_is_free(lock_path(sock)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return pid


def _report_problems(out: Output, problems: list[Problem]) -> None:
    for p in problems:
        print(out.bad(f"! {p.message}"), file=sys.stderr)
        print(out.dim(f"  fix: {p.fix}"), file=sys.stderr)


def _client_socket_problem(args: argparse.Namespace, mgr: Manager) -> list[Problem]:
    client = Path(args.socket) if args.socket else socket_path()
    problem = socket_problem(client, mgr.socket, os.environ)
    return [problem] if problem else []


def cmd_install(args: argparse.Namespace, out: Output) -> int:
    mgr = _manager(args)
    files = mgr.files()
    if args.print:
        if out.json:
            out.emit_json({"manager": mgr.name, "files": {str(p): d.decode() for p, d in files.items()}})
        else:
            for path, data in files.items():
                print(out.dim(f"# {path}"))
                sys.stdout.write(data.decode())
        return EXIT_OK
    result: dict[str, Any] = {"manager": mgr.name, "files": [str(p) for p in files], "socket": str(mgr.socket),
                              "written": False, "enabled": False, "stopped_pid": None, "problems": []}

    def fail(problem: Problem, code: int) -> int:
        result["problems"].append(problem.as_dict())
        if out.json:
            out.emit_json(result)
        else:
            _report_problems(out, [problem])
        return code

    if importlib.util.find_spec("takod_daemon") is None:
        return fail(Problem("no_daemon", f"the daemon package (takod_daemon) is not installed in {mgr.python}",
                            "install takod into this Python, or run `takod service install` from the Python that has it"),
                    EXIT_ERROR)
    for path in files:
        if path.exists() and not units.written_by_takod(path):
            return fail(Problem("not_ours", f"{path} exists and was not written by takod", f"move {path} away first"),
                        EXIT_USAGE)
    enable = not args.no_enable
    blocker = mgr.unreachable() if enable else None
    blocker = blocker or mgr.prepare()
    if blocker is not None:
        return fail(blocker, EXIT_ERROR)
    changed = any(path.exists() and path.read_bytes() != data for path, data in files.items())
    try:
        for path, data in files.items():
            _write(path, data)
    except OSError as exc:
        return fail(Problem("write_failed", f"cannot write {exc.filename}: {exc.strerror}",
                            f"make {Path(exc.filename or path).parent} writable, then install again"), EXIT_ERROR)
    result["written"] = True
    problem = None
    if enable:
        result["stopped_pid"] = _stop_self_started(mgr.socket)
        problem = mgr.enable(changed)
        result["enabled"] = problem is None
    advice = ([problem] if problem else []) + mgr.advice() + _client_socket_problem(args, mgr)
    result["problems"] = [p.as_dict() for p in advice]
    if out.json:
        out.emit_json(result)
    else:
        for path in files:
            print(f"wrote {path}")
        if result["stopped_pid"]:
            print(f"stopped the takod a client had started (pid {result['stopped_pid']}) so {mgr.name} owns the socket")
        if result["enabled"]:
            print(out.ok(f"enabled: takod starts at login and on the first connection to {mgr.socket}"))
            print(out.dim(f"logs: {mgr.logs_hint()}"))
        elif not enable:
            print("not enabled (--no-enable)")
        _report_problems(out, advice)
    return EXIT_ERROR if problem else EXIT_OK


def cmd_uninstall(args: argparse.Namespace, out: Output) -> int:
    mgr = _manager(args)
    present = [p for p in mgr.files() if p.exists()]
    ours = [p for p in present if units.written_by_takod(p)]
    kept = [p for p in present if p not in ours]
    problems: list[Problem] = []
    if ours:
        blocker = mgr.unreachable()
        # Files go even when the manager is unreachable: nothing can start them once they are gone.
        problem = blocker or mgr.disable()
        if problem is not None:
            problems.append(problem)
        for path in list(ours):
            try:
                path.unlink()
            except OSError as exc:
                ours.remove(path)
                problems.append(Problem("remove_failed", f"cannot remove {path}: {exc.strerror}", f"rm '{path}'"))
        mgr.after_removal()
    for path in kept:
        problems.append(Problem("not_ours", f"kept {path}: it was not written by takod", f"remove {path} yourself"))
    result = {"manager": mgr.name, "removed": [str(p) for p in ours], "kept": [str(p) for p in kept],
              "problems": [p.as_dict() for p in problems]}
    if out.json:
        out.emit_json(result)
    else:
        for path in ours:
            print(f"removed {path}")
        if not present:
            print("takod service is not installed")
        _report_problems(out, problems)
    return EXIT_OK


def cmd_status(args: argparse.Namespace, out: Output) -> int:
    mgr = _manager(args)
    files = []
    for path, data in mgr.files().items():
        present = path.exists()
        ours = present and units.written_by_takod(path)
        files.append({"path": str(path), "present": present, "ours": ours,
                      "current": ours and path.read_bytes() == data})
    installed = all(f["ours"] for f in files)
    blocker = mgr.unreachable()
    state = mgr.state() if blocker is None else {}
    problems = ([blocker] if blocker else []) + mgr.advice() + _client_socket_problem(args, mgr)
    result = {"manager": mgr.name, "installed": installed, "files": files, "socket": str(mgr.socket),
              "reachable": blocker is None, "units": state, "problems": [p.as_dict() for p in problems]}
    if out.json:
        out.emit_json(result)
        return EXIT_OK
    print(f"manager  {mgr.name}" + ("" if blocker is None else out.bad(" (not reachable)")))
    for f in files:
        mark = (out.ok("installed") if f["current"] else out.bad("outdated: run `takod service install`")) \
            if f["ours"] else (out.bad("not written by takod") if f["present"] else "not installed")
        print(f"file     {f['path']}  {mark}")
    print(f"socket   {mgr.socket}")
    for unit, st in state.items():
        print(f"unit     {unit}  {st['active']}, {st['enabled']}")
    _report_problems(out, problems)
    return EXIT_OK


def register(add: Callable[..., argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = add("service", cmd_status, "install, remove or inspect the systemd user units (launchd agent on macOS) "
            "that start takod at login and on first connect")
    sub = p.add_subparsers(dest="service_command", metavar="ACTION", required=True)
    manager = argparse.ArgumentParser(add_help=False)
    manager.add_argument("--manager", choices=["auto", "systemd", "launchd"], default="auto",
                         help="service manager (default: launchd on macOS, systemd elsewhere)")
    i = sub.add_parser("install", parents=[common, manager], help="write the units with this Python's path and enable them")
    i.set_defaults(func=cmd_install)
    i.add_argument("--print", action="store_true", help="show the files install would write; change nothing")
    i.add_argument("--no-enable", action="store_true", help="write the files only (e.g. for a later login)")
    u = sub.add_parser("uninstall", parents=[common, manager], help="disable and remove what install wrote")
    u.set_defaults(func=cmd_uninstall)
    s = sub.add_parser("status", parents=[common, manager], help="what is installed and running, and what stands in the way")
    s.set_defaults(func=cmd_status)
