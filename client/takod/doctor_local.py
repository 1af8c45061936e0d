"""Doctor checks that need only this machine's files: the socket directory, the
socket, the state directory, XDG_RUNTIME_DIR and systemd linger.

The daemon runs them as part of ``doctor.run``; the CLI runs them itself when
the daemon cannot be reached, which is exactly when they matter most. Checks
are pure functions of :class:`PathFacts`; :func:`path_facts` and
:func:`local_facts` gather them. Standard library and msgspec only.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .schema import DoctorCheck

# Proxy variables doctor looks at (each also in lower case).
PROXY_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY")
# Files takod writes in its state directory; each must be 0600.
STATE_FILES = ("daemon.log", "daemon.log.1", "keys.json", "key-index.json")


@dataclass(frozen=True)
class PathFacts:
    """What ``lstat`` says about one path (``exists`` False: nothing else is set)."""

    path: str
    exists: bool
    kind: str = ""  # dir | socket | file | symlink | other
    mode: int = 0  # permission bits only
    uid: int = -1


@dataclass(frozen=True)
class LocalFacts:
    """Everything the local checks read."""

    uid: int
    platform: str
    socket: PathFacts
    socket_dir: PathFacts
    state_dir: PathFacts
    state_files: tuple[PathFacts, ...]
    xdg_runtime_dir: str | None
    runtime_dir: PathFacts | None
    systemd: bool  # a systemd user session is possible here
    linger: bool | None  # /var/lib/systemd/linger/<user> exists; None: unknown
    user: str


def path_facts(path: Path | str) -> PathFacts:
    try:
        st = os.lstat(path)
    except OSError:
        return PathFacts(str(path), False)
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        kind = "symlink"
    elif stat.S_ISDIR(mode):
        kind = "dir"
    elif stat.S_ISSOCK(mode):
        kind = "socket"
    elif stat.S_ISREG(mode):
        kind = "file"
    else:
        kind = "other"
    return PathFacts(str(path), True, kind, stat.S_IMODE(mode), st.st_uid)


def local_facts(socket: Path, state: Path, env: Mapping[str, str]) -> LocalFacts:
    """Gather the local facts for the daemon socket at ``socket`` and the state
    directory ``state``, as the process with environment ``env`` sees them."""
    user = env.get("USER") or env.get("LOGNAME") or str(os.getuid())
    runtime = env.get("XDG_RUNTIME_DIR") or None
    systemd = sys.platform.startswith("linux") and os.path.isdir("/run/systemd/system")
    linger_file = Path("/var/lib/systemd/linger") / user
    return LocalFacts(
        uid=os.getuid(),
        platform=sys.platform,
        socket=path_facts(socket),
        socket_dir=path_facts(socket.parent),
        state_dir=path_facts(state),
        state_files=tuple(path_facts(state / name) for name in STATE_FILES),
        xdg_runtime_dir=runtime,
        runtime_dir=path_facts(runtime) if runtime else None,
        systemd=systemd,
        linger=linger_file.exists() if systemd else None,
        user=user,
    )


def _owner_problem(facts: PathFacts, uid: int) -> str | None:
    return f"is owned by uid {facts.uid}, not {uid}" if facts.uid != uid else None


def check_private_dir(check_id: str, what: str, facts: PathFacts, uid: int) -> DoctorCheck:
    """A directory that must be ours and 0700 (the socket's, the state dir)."""
    path = facts.path
    if not facts.exists:
        return DoctorCheck(check_id, "ok", f"{what} {path} does not exist yet; takod creates it 0700")
    if facts.kind != "dir":
        return DoctorCheck(check_id, "fail", f"{what} {path} is a {facts.kind}, not a directory",
                           fix=f"move it aside: mv '{path}' '{path}.bad'; takod recreates it 0700")
    owner = _owner_problem(facts, uid)
    if owner:
        # Never "chown it": a directory another user made stays theirs to meddle with.
        setting = "TAKOD_STATE_DIR" if check_id == "state-dir" else "TAKOD_SOCKET"
        return DoctorCheck(check_id, "fail", f"{what} {path} {owner}; takod will not use it",
                           fix=f"set {setting} to a path in a private directory of your own; do not chown it"
                               f" (if you made it yourself as root, remove it: sudo rm -r '{path}')")
    if facts.mode & 0o077:
        return DoctorCheck(check_id, "fail", f"{what} {path} has mode {facts.mode:04o}, must be 0700",
                           detail="other users could reach the socket or read takod's state",
                           fix=f"chmod 700 '{path}' (`takod doctor --fix` does it)", fixable=True)
    return DoctorCheck(check_id, "ok", f"{what} {path} is private (0700, yours)")


def check_socket(facts: PathFacts, uid: int, daemon_up: bool) -> DoctorCheck:
    """The socket file: ours, 0600 (0700 is what some binds leave; anything for group/other is not)."""
    path = facts.path
    if not facts.exists:
        if daemon_up:  # e.g. a supervisor's socket at another path
            return DoctorCheck("socket", "warn", f"no socket at {path}, yet the daemon answered",
                               fix="check TAKOD_SOCKET in this shell and in the service")
        return DoctorCheck("socket", "warn", f"no socket at {path}: the daemon is not running",
                           fix="`takod serve`, or any takod command starts it")
    if facts.kind != "socket":
        return DoctorCheck("socket", "fail", f"{path} is a {facts.kind}, not a socket",
                           fix=f"stop takod and remove it: rm '{path}'")
    owner = _owner_problem(facts, uid)
    if owner:
        return DoctorCheck("socket", "fail", f"socket {path} {owner}", fix=f"stop that daemon; rm '{path}'")
    if facts.mode & 0o077:
        return DoctorCheck("socket", "warn", f"socket {path} has mode {facts.mode:04o}, should be 0600",
                           detail="the 0700 directory is the real barrier; the mode is a second one",
                           fix=f"chmod 600 '{path}' (`takod doctor --fix` does it)", fixable=True)
    return DoctorCheck("socket", "ok", f"socket {path} is yours, mode {facts.mode:04o}")


def check_state_files(files: tuple[PathFacts, ...], uid: int) -> DoctorCheck:
    """Log and key files in the state directory: ours and 0600."""
    loose = [f for f in files if f.exists and f.kind == "file" and f.uid == uid and f.mode & 0o077]
    foreign = [f for f in files if f.exists and (f.kind != "file" or f.uid != uid)]
    if foreign:
        names = ", ".join(f"{f.path} ({f.kind}, uid {f.uid})" for f in foreign)
        return DoctorCheck("state-files", "fail", f"takod's state files are not plain files of yours: {names}",
                           fix="move them aside; takod recreates what it needs")
    if loose:
        names = ", ".join(f"{f.path} ({f.mode:04o})" for f in loose)
        return DoctorCheck("state-files", "warn", f"state files readable by others: {names}",
                           fix="chmod 600 them (`takod doctor --fix` does it)", fixable=True)
    return DoctorCheck("state-files", "ok", "state files are 0600")


def check_runtime_dir(facts: LocalFacts) -> DoctorCheck:
    """XDG_RUNTIME_DIR: where the socket belongs on Linux."""
    if facts.platform == "darwin":
        return DoctorCheck("runtime-dir", "ok", "macOS: the socket lives in ~/Library/Application Support/takod")
    if facts.xdg_runtime_dir is None:
        return DoctorCheck(
            "runtime-dir", "warn", "XDG_RUNTIME_DIR is not set",
            detail=f"the socket falls back to {facts.socket.path}; clients in a session that has it set "
            "(a desktop terminal, systemd) look in another place and start a second daemon",
            fix="log in through a session manager (pam_systemd sets it), or set TAKOD_SOCKET the same everywhere",
        )
    rt = facts.runtime_dir
    if rt is None or not rt.exists or rt.kind != "dir" or rt.uid != facts.uid or rt.mode & 0o077:
        what = "does not exist" if rt is None or not rt.exists else f"is not a private directory of yours ({rt.kind}, uid {rt.uid}, {rt.mode:04o})"
        return DoctorCheck("runtime-dir", "warn", f"XDG_RUNTIME_DIR={facts.xdg_runtime_dir} {what}; takod does not use it",
                           detail=f"the socket is at {facts.socket.path} instead",
                           fix="fix the session setup (pam_systemd), or unset XDG_RUNTIME_DIR")
    return DoctorCheck("runtime-dir", "ok", f"XDG_RUNTIME_DIR={facts.xdg_runtime_dir} is private")


def check_linger(facts: LocalFacts) -> DoctorCheck:
    """Without linger, systemd stops a user's services (takod too) at logout."""
    if not facts.systemd:
        return DoctorCheck("linger", "ok", "no systemd here: linger does not apply")
    if facts.linger:
        return DoctorCheck("linger", "ok", f"linger is on for {facts.user}: takod's service survives logout")
    return DoctorCheck("linger", "warn", f"linger is off for {facts.user}",
                       detail="systemd stops takod's user service when your last session ends",
                       fix=f"loginctl enable-linger {facts.user}")


def chmod_own(path: str, mode: int) -> str:
    """Set ``mode`` on ``path`` if it is a real file or directory of ours (never
    through a symlink). Returns what was done; raises ``PermissionError`` otherwise."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or st.st_uid != os.getuid():
        raise PermissionError(f"{path} is a symlink or not yours; takod leaves it alone")
    os.chmod(path, mode)
    return f"chmod {mode:04o} {path}"


# Local check id -> the mode --fix gives its path(s).
FIX_MODES = {"socket-dir": 0o700, "socket": 0o600, "state-dir": 0o700, "state-files": 0o600}


def mode_fixes(facts: LocalFacts, check_ids: set[str]) -> list[tuple[str, str, int]]:
    """(check id, path, mode) for every mode repair the given failing checks call for."""
    paths = {"socket-dir": [facts.socket_dir], "socket": [facts.socket], "state-dir": [facts.state_dir],
             "state-files": [f for f in facts.state_files if f.exists]}
    return [(cid, f.path, FIX_MODES[cid]) for cid in FIX_MODES if cid in check_ids
            for f in paths[cid] if f.mode & 0o077]


def local_checks(facts: LocalFacts, *, daemon_up: bool) -> list[DoctorCheck]:
    """Every local check, in report order."""
    return [
        check_private_dir("socket-dir", "socket directory", facts.socket_dir, facts.uid),
        check_socket(facts.socket, facts.uid, daemon_up),
        check_private_dir("state-dir", "state directory", facts.state_dir, facts.uid),
        check_state_files(facts.state_files, facts.uid),
        check_runtime_dir(facts),
        check_linger(facts),
    ]


def counts(checks: list[DoctorCheck]) -> dict[str, int]:
    out = {"ok": 0, "warn": 0, "fail": 0}
    for check in checks:
        out[check.verdict] += 1
    return out
