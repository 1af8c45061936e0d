"""Stand-ins for the far-side system tools ``takod service`` drives: systemctl, loginctl, launchctl.

Installed into a bin directory by :func:`install` (as the tool's name, so the
CLI finds them on PATH), they append their argv as one JSON line to
``$FAKE_TOOLS_LOG`` and answer like the real ones:

- ``FAKE_USER_BUS=down``: every ``systemctl --user`` call fails as it does with
  no user manager ("Failed to connect to bus: No medium found", status 1);
- ``is-active`` / ``is-enabled`` print ``active`` / ``enabled``;
- ``FAKE_LINGER=yes|no``: ``loginctl show-user ... --value`` prints it;
- ``systemctl --user start takod.socket`` does what systemd does: creates
  ``$XDG_RUNTIME_DIR/takod/rpc.sock`` (0600 in a 0700 directory) and starts
  the daemon with it as fd 3 and LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES set, in a
  new session, output appended to ``$FAKE_DAEMON_OUT``.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path


def _log(tool: str) -> None:
    with open(os.environ["FAKE_TOOLS_LOG"], "a") as f:
        f.write(json.dumps([tool, *sys.argv[1:]]) + "\n")


def _activate() -> None:
    path = Path(os.environ["XDG_RUNTIME_DIR"]) / "takod" / "rpc.sock"
    path.parent.mkdir(mode=0o700, exist_ok=True)
    if path.exists():
        path.unlink()  # systemd replaces a leftover socket file too
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    os.chmod(path, 0o600)
    listener.listen(64)
    if os.fork() == 0:
        os.setsid()
        os.dup2(listener.fileno(), 3)
        os.set_inheritable(3, True)  # dup2 onto itself keeps close-on-exec
        out = os.open(os.environ["FAKE_DAEMON_OUT"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        env = dict(os.environ, LISTEN_PID=str(os.getpid()), LISTEN_FDS="1", LISTEN_FDNAMES="takod")
        os.execve(sys.executable, [sys.executable, "-m", "takod_daemon", "--log", "json"], env)


def systemctl() -> int:
    _log("systemctl")
    args = sys.argv[1:]
    if args[:1] == ["--user"] and os.environ.get("FAKE_USER_BUS") == "down":
        print("Failed to connect to bus: No medium found", file=sys.stderr)
        return 1
    verb = args[1] if len(args) > 1 else ""
    if verb == "is-active":
        print("active")
    elif verb == "is-enabled":
        print("enabled")
    elif verb == "start" and "takod.socket" in args:
        _activate()
    return 0


def loginctl() -> int:
    _log("loginctl")
    linger = os.environ.get("FAKE_LINGER")
    if linger is None:
        print("Could not get properties: no logind here", file=sys.stderr)
        return 1
    print(linger)
    return 0


def launchctl() -> int:
    _log("launchctl")
    if sys.argv[1:2] == ["print"]:
        return 0 if os.environ.get("FAKE_LAUNCHD_LOADED") == "1" else 113
    return 0


TOOLS = {"systemctl": systemctl, "loginctl": loginctl, "launchctl": launchctl}


def install(bin_dir: Path, *tools: str) -> None:
    """Put the named fakes (default: all) into ``bin_dir`` as executables."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    here = Path(__file__).resolve()
    for tool in tools or tuple(TOOLS):
        script = bin_dir / tool
        script.write_text(
            f"#!{sys.executable}\nimport runpy, sys\n"
            f"sys.exit(runpy.run_path({str(here)!r})['TOOLS'][{tool!r}]())\n"
        )
        script.chmod(0o755)


def calls(log: Path) -> list[list[str]]:
    """Every recorded invocation, in order."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]
