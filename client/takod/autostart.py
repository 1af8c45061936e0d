"""Start the daemon on demand when nothing listens on the socket (Watchman-style).

The daemon is started detached (new session, stdin from /dev/null, stdout
and stderr to ``daemon.stderr`` in the state dir) with a *ready pipe*: it
writes ``ok`` once it listens, ``already running ...`` if it lost the lock
race (fine: someone else's daemon serves us), or ``error: ...``. A user never
sees a bare "connection refused"; they see the daemon's own words.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

from .paths import ensure_private_dir, state_dir

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


def spawn_daemon(socket: Path) -> str:
    """Start a detached daemon for ``socket`` and wait until it is ready.

    Returns the ready line (``ok`` or ``already running ...``); raises
    :class:`StartFailed` with the daemon's own error otherwise.
    """
    state = state_dir()
    problem = ensure_private_dir(state)
    if problem is not None:
        raise StartFailed(f"cannot start takod: state directory {problem}")
    errlog = state / "daemon.stderr"
    read_fd, write_fd = os.pipe()
    env = dict(os.environ, TAKOD_SOCKET=str(socket))
    try:
        with open(errlog, "ab", buffering=0) as err:
            os.chmod(errlog, 0o600)
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
