"""The systemd user units and the launchd agent: where they live, rendered as text (pure functions).

``takod service install`` writes these with this installation's absolute
interpreter path; ``systemd/`` and ``launchd/`` in the source tree hold the
same renderings with ``@PYTHON@`` and ``@PATH@`` placeholders for reading.
Standard library only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

SOCKET_UNIT = "takod.socket"
SERVICE_UNIT = "takod.service"
LAUNCHD_LABEL = "dev.tako.takod"
# FileDescriptorName= in the socket unit and the Sockets key in the plist: the
# daemon claims its listener by this name.
FD_NAME = "takod"
# Every file install writes starts with this line; uninstall removes only such files.
MARKER = "Written by `takod service install`; `takod service uninstall` removes it."
DAEMON_ARGS = ("-m", "takod_daemon")


def systemd_unit_dir(env: Mapping[str, str], home: Path) -> Path:
    """Where user units go: ``$XDG_CONFIG_HOME/systemd/user``, default ``~/.config/systemd/user``."""
    config = env.get("XDG_CONFIG_HOME", "")
    return (Path(config) if os.path.isabs(config) else home / ".config") / "systemd" / "user"


def runtime_dir(env: Mapping[str, str], uid: int) -> Path:
    """The user manager's ``%t``: ``$XDG_RUNTIME_DIR`` when absolute, else ``/run/user/<uid>`` (pam_systemd's)."""
    value = env.get("XDG_RUNTIME_DIR", "")
    return Path(value) if os.path.isabs(value) else Path(f"/run/user/{uid}")


def written_by_takod(path: Path) -> bool:
    """The file at ``path`` carries install's marker (so uninstall may remove it)."""
    try:
        with open(path, "rb") as f:
            return MARKER.encode() in f.read(4096)
    except OSError:
        return False


def launchd_plist_path(home: Path) -> Path:
    return home / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"


def systemd_socket_path(runtime_dir: Path) -> Path:
    """Where the socket unit listens (``%t`` is the user manager's runtime dir),
    which is where :func:`takod.paths.socket_path` looks first."""
    return runtime_dir / "takod" / "rpc.sock"


def launchd_socket_path(home: Path) -> Path:
    """Where the agent's socket lives: the macOS default of :func:`takod.paths.socket_path`."""
    return home / "Library" / "Application Support" / "takod" / "rpc.sock"


def _exec_path(path: str) -> str:
    """The ExecStart= executable: specifiers (%) escaped, quoted when it holds more than plain
    path characters. systemd expands $VARS only in the arguments after it, never in the path."""
    escaped = path.replace("%", "%%")
    if path and all(c.isalnum() or c in "/._-+" for c in path):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _env_assignment(name: str, value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'"{name}={escaped}"'


def render_socket_unit() -> str:
    """``takod.socket``: a 0600 socket in a 0700 directory under the user's runtime dir."""
    return f"""# {MARKER}
[Unit]
Description=takod inference daemon socket

[Socket]
ListenStream=%t/takod/rpc.sock
SocketMode=0600
DirectoryMode=0700
FileDescriptorName={FD_NAME}
# Gone when stopped, so clients fall back to starting a daemon themselves.
RemoveOnStop=yes

[Install]
WantedBy=sockets.target
"""


def render_service_unit(python: str, path_env: str) -> str:
    """``takod.service``: the daemon in the foreground, notify-ready, watchdogged, logging to journald."""
    exec_start = " ".join((_exec_path(python), *DAEMON_ARGS, "--log", "journal"))
    return f"""# {MARKER}
[Unit]
Description=takod inference daemon
Requires={SOCKET_UNIT}
After={SOCKET_UNIT}

[Service]
Type=notify
NotifyAccess=main
ExecStart={exec_start}
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=2
WatchdogSec=30
TimeoutStopSec=15
StandardOutput=journal
StandardError=journal
# The user manager's PATH is minimal; the daemon finds provider CLIs (pi, codex, ...) on this one.
Environment={_env_assignment("PATH", path_env)}

[Install]
# Started at login too, not only on first connect: it keeps OAuth tokens fresh.
WantedBy=default.target
"""


def launchd_agent(python: str, socket: Path, log_dir: Path, path_env: str) -> dict[str, Any]:
    """The LaunchAgent as a plist dictionary (see :func:`render_launchd_plist`)."""
    return {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": [python, *DAEMON_ARGS, "--log", "json"],
        "Sockets": {FD_NAME: {"SockPathName": str(socket), "SockPathMode": 0o600}},  # plist stores 384
        "RunAtLoad": True,
        # Restarted after a crash, not after `takod stop` (a clean exit).
        "KeepAlive": {"SuccessfulExit": False},
        "ProcessType": "Adaptive",
        "StandardOutPath": str(log_dir / "daemon.stderr"),
        "StandardErrorPath": str(log_dir / "daemon.stderr"),
        "EnvironmentVariables": {"PATH": path_env},
        "Comment": MARKER,
    }


def render_launchd_plist(python: str, socket: Path, log_dir: Path, path_env: str) -> bytes:
    """``dev.tako.takod.plist``, XML."""
    import plistlib

    return plistlib.dumps(launchd_agent(python, socket, log_dir, path_env), sort_keys=False)
