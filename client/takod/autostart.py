"""Start the daemon on demand when nothing listens on the socket (Watchman-style).

An installed service comes first (the gpg-agent lesson: one start-up path,
and the daemon's lock settles any race): when ``takod service install`` put
units or an agent in place for this very socket, the service manager is asked
to start it. Only when there is none, or the manager cannot be reached, does
the client start the daemon itself.

The daemon is started detached (new session, stdin from /dev/null, stdout
and stderr to ``daemon.stderr`` in the state dir) with a *ready pipe*: it
writes ``ok`` once it listens, ``already running ...`` if it lost the lock
race (fine: someone else's daemon serves us), or ``error: ...``. A user never
sees a bare "connection refused"; they see the daemon's own words.
"""

from __future__ import annotations

import os
import select
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping

from . import units
from .paths import IS_MACOS, ensure_private_dir, home, state_dir

READY_TIMEOUT = 15.0


class StartFailed(Exception):
    """The daemon could not be started; the message says why, in its own words."""


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            return f.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


SERVICE_START_TIMEOUT = 10.0


def service_start_command(socket: Path, env: Mapping[str, str], uid: int, home_dir: Path,
                          macos: bool) -> list[str] | None:
    """The command that makes the installed service listen on ``socket``, or None
    when no service of ours is installed for that path (reads one file at most)."""
    if macos:
        plist = units.launchd_plist_path(home_dir)
        if socket == units.launchd_socket_path(home_dir) and units.written_by_takod(plist):
            return ["launchctl", "bootstrap", f"gui/{uid}", str(plist)]
        return None
    unit = units.systemd_unit_dir(env, home_dir) / units.SOCKET_UNIT
    if socket == units.systemd_socket_path(units.runtime_dir(env, uid)) and units.written_by_takod(unit):
        return ["systemctl", "--user", "start", units.SOCKET_UNIT]
    return None


def start_service(socket: Path) -> bool:
    """Ask the installed service manager to listen on ``socket``; False if there is
    none for it or it could not be reached (then the caller starts the daemon itself)."""
    command = service_start_command(socket, os.environ, os.getuid(), home(), IS_MACOS)
    if command is None:
        return False
    if IS_MACOS:
        # A loaded agent only needs a kick; bootstrap is for one that is not loaded yet.
        target = f"gui/{os.getuid()}/{units.LAUNCHD_LABEL}"
        if _quiet(["launchctl", "kickstart", target]):
            return True
    return _quiet(command)


def _quiet(command: list[str]) -> bool:
    try:
        return subprocess.run(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            timeout=SERVICE_START_TIMEOUT,
        ).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def spawn_daemon(socket: Path) -> str:
    """Start a detached daemon for ``socket`` and wait until it is ready.

    Returns the ready line (``ok`` or ``already running ...``); raises
    :class:`StartFailed` with the daemon's own error otherwise.
    """
    state = state_dir()
    problem = ensure_private_dir(state, "TAKOD_STATE_DIR")
    if problem is not None:
        raise StartFailed(f"cannot start takod: state directory {problem}")
    errlog = state / "daemon.stderr"
    read_fd, write_fd = os.pipe()
    env = dict(os.environ, TAKOD_SOCKET=str(socket))
    try:
        with os.fdopen(open_log(errlog), "ab", buffering=0) as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "takod_daemon", "--ready-fd", str(write_fd), "--log", "json"],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                pass_fds=(write_fd,),
                start_new_session=True,
                close_fds=True,
                cwd="/",
                env=env,
            )
    except OSError as exc:
        os.close(read_fd)
        raise StartFailed(f"cannot start takod ({sys.executable} -m takod_daemon): {exc}") from None
    finally:
        os.close(write_fd)
    try:
        line = _read_line(read_fd, READY_TIMEOUT)
    finally:
        os.close(read_fd)
    if line.startswith("ok") or line.startswith("already running"):
        return line
    if line.startswith("error: "):
        raise StartFailed(line[len("error: "):])
    try:
        # No verdict: the pipe closed (it is exiting; the EOF can come before the exit
        # status is ready) or timed out. Either way, give it a moment to say how it ended.
        code: int | None = proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        code = None
    detail = _tail(errlog)
    if code is None:
        raise StartFailed(f"takod did not become ready within {READY_TIMEOUT:.0f} s (pid {proc.pid}); see {errlog}")
    hint = "" if "No module named" not in detail else " (is the takod daemon package installed in this Python?)"
    raise StartFailed(f"takod exited with status {code} before it was ready{hint}:\n{detail}")


def open_log(path: Path) -> int:
    """Open the daemon's stderr log for appending (0600), never through a symlink
    (``O_NOFOLLOW``) nor into a hard-linked file: a link planted in the state
    directory must not receive the daemon's output. Raises :class:`StartFailed`."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        what = "is a symlink" if os.path.islink(path) else f"cannot be opened ({exc.strerror or exc})"
        raise StartFailed(f"cannot start takod: {path} {what}; remove it") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_nlink != 1:
        os.close(fd)
        raise StartFailed(f"cannot start takod: {path} is not a private file of yours with one link; remove it")
    os.fchmod(fd, 0o600)
    return fd


def _read_line(fd: int, timeout: float) -> str:
    """Read until newline or EOF, for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode("utf-8", "replace").strip()
