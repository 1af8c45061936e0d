"""Where takod keeps its socket, lock, state and logs, and how a workspace is found.

Socket resolution (first that applies):
1. ``$TAKOD_SOCKET``.
2. Linux: ``$XDG_RUNTIME_DIR/takod/rpc.sock`` when that runtime dir is absolute,
   ours and private; then ``/run/user/<uid>/takod/rpc.sock`` likewise; else
   ``$XDG_STATE_HOME/takod/s.<host8>.sock`` (home, not /tmp, hashed by host for
   NFS homes).
3. macOS: ``~/Library/Application Support/takod/rpc.sock`` (never cleaned, unlike
   ``$TMPDIR``).
4. A path too long for ``sun_path`` falls back to ``/tmp/takod-<uid>/rpc.sock``.

Standard library only: the CLI imports this at start.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

IS_MACOS = sys.platform == "darwin"
# sun_path is 108 bytes on Linux and 104 on macOS, including the trailing NUL.
SUN_PATH_MAX = 104 if IS_MACOS else 108

WORKSPACE_MARKERS = ("tako.toml",)
WORKSPACE_MARKER_SET = ("AGENTS.md", "SOUL.md", "MEMORY.md")


def home() -> Path:
    return Path(os.environ.get("HOME") or os.path.expanduser("~"))


def _private_dir_of_ours(path: Path) -> bool:
    try:
        st = path.lstat()
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and (st.st_mode & 0o077) == 0


def _xdg_state_home() -> Path:
    value = os.environ.get("XDG_STATE_HOME", "")
    if value and os.path.isabs(value):
        return Path(value)
    return home() / ".local" / "state"


def socket_path() -> Path:
    """The socket the daemon listens on and clients connect to."""
    explicit = os.environ.get("TAKOD_SOCKET")
    if explicit:
        return Path(explicit).expanduser()
    if IS_MACOS:
        candidate = home() / "Library" / "Application Support" / "takod" / "rpc.sock"
    else:
        candidate = None
        runtime = os.environ.get("XDG_RUNTIME_DIR", "")
        for base in (runtime, f"/run/user/{os.getuid()}"):
            if base and os.path.isabs(base) and _private_dir_of_ours(Path(base)):
                candidate = Path(base) / "takod" / "rpc.sock"
                break
        if candidate is None:
            import hashlib  # only this rare rule needs them; they cost ~3 ms of every CLI start
            import socket

            host8 = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
            candidate = _xdg_state_home() / "takod" / f"s.{host8}.sock"
    if len(os.fsencode(candidate)) >= SUN_PATH_MAX:
        candidate = Path(f"/tmp/takod-{os.getuid()}") / "rpc.sock"
    return candidate


def lock_path(sock: Path) -> Path:
    """The single-instance lock that guards ``sock`` (taken before any unlink or bind)."""
    return sock.with_name(sock.name + ".lock")


def state_dir() -> Path:
    """Daemon state and logs: ``$TAKOD_STATE_DIR``, else the platform's state home."""
    explicit = os.environ.get("TAKOD_STATE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    if IS_MACOS:
        return home() / "Library" / "Application Support" / "takod"
    return _xdg_state_home() / "takod"


def log_path() -> Path:
    return state_dir() / "daemon.log"


def is_marked_workspace(path: Path) -> bool:
    """``tako.toml``, or all of AGENTS.md, SOUL.md and MEMORY.md."""
    if any((path / m).is_file() for m in WORKSPACE_MARKERS):
        return True
    return all((path / m).is_file() for m in WORKSPACE_MARKER_SET)


def find_workspace(start: Path | None = None) -> Path:
    """``$TAKO_WORKSPACE``, else the nearest ancestor of ``start`` (the cwd) that
    holds ``tako.toml`` (or AGENTS.md + SOUL.md + MEMORY.md), else the home directory."""
    explicit = os.environ.get("TAKO_WORKSPACE")
    if explicit:
        return Path(explicit).expanduser().resolve()
    try:
        here = (start or Path.cwd()).resolve()
    except OSError:
        return home()
    for candidate in (here, *here.parents):
        if is_marked_workspace(candidate):
            return candidate
    return home()


class DirProblem:
    """Why a private directory is unsafe, with the exact command that fixes it.
    (A plain class: dataclasses imports inspect, ~10 ms of a shell prompt's `takod status --short`.)"""

    __slots__ = ("path", "reason", "fix")

    def __init__(self, path: Path, reason: str, fix: str):
        self.path, self.reason, self.fix = path, reason, fix

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DirProblem) and (self.path, self.reason, self.fix) == (other.path, other.reason, other.fix)

    def __hash__(self) -> int:
        return hash((self.path, self.reason, self.fix))

    def __repr__(self) -> str:
        return f"DirProblem({self.path!r}, {self.reason!r}, {self.fix!r})"

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}; fix: {self.fix}"


def check_private_dir(path: Path, setting: str = "TAKOD_SOCKET") -> DirProblem | None:
    """None if ``path`` is a real directory (not a symlink), owned by us, with no
    group/other bits: tmux's rule for its socket directory. ``setting`` is the
    variable that points takod at another directory, named in the fix."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return DirProblem(path, "does not exist", f"mkdir -m 700 -p '{path}'")
    if st.st_uid != os.getuid():
        # Someone else made it: taking it over (chown) would hand us a directory
        # its maker can still meddle with, so the fix is never chown.
        return DirProblem(
            path,
            f"is owned by uid {st.st_uid}, not {os.getuid()} (another user made it; takod will not use it)",
            f"set {setting} to a path in a private directory of your own; do not chown it"
            f" (if you made it yourself as root, remove it: sudo rm -r '{path}')",
        )
    if stat.S_ISLNK(st.st_mode):
        return DirProblem(path, "is a symlink", f"rm '{path}' && mkdir -m 700 '{path}'")
    if not stat.S_ISDIR(st.st_mode):
        return DirProblem(path, "is not a directory", f"rm '{path}' && mkdir -m 700 '{path}'")
    if st.st_mode & 0o077:
        return DirProblem(
            path, f"has mode {stat.S_IMODE(st.st_mode):04o}, must be 0700", f"chmod 700 '{path}'"
        )
    return None


def ensure_private_dir(path: Path, setting: str = "TAKOD_SOCKET") -> DirProblem | None:
    """Create ``path`` 0700 if missing (its parents as needed); never loosen, fix or
    take over an existing one. The last step is tmux's: mkdir (which fails if
    anything is there, a squatter's directory or symlink included), fchmod what we
    made through a descriptor that cannot follow a link, then check it with lstat."""
    if not os.path.lexists(path):
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass  # made meanwhile, by us or by someone else: the check below decides
        except OSError as exc:
            return DirProblem(path, f"cannot be created ({exc.strerror})", f"mkdir -m 700 -p '{path}'")
        else:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
                try:
                    os.fchmod(fd, 0o700)  # mkdir's mode is filtered by the umask
                finally:
                    os.close(fd)
            except OSError:
                pass  # replaced already: the check below refuses it
    return check_private_dir(path, setting)


def socket_is_explicit() -> bool:
    """Whether the socket path comes from ``$TAKOD_SOCKET`` rather than a default location."""
    return bool(os.environ.get("TAKOD_SOCKET"))
