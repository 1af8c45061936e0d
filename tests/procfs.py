"""What /proc says about a process: memory, CPU time, liveness, and which takod daemons exist."""

from __future__ import annotations

import os
from pathlib import Path


def _stat_fields(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name (field 3, the state, comes first)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def cpu_ticks(pid: int) -> int:
    """User plus system CPU time so far, in clock ticks."""
    fields = _stat_fields(pid)
    return int(fields[11]) + int(fields[12])


def alive(pid: int) -> bool:
    """Running (a zombie nobody has reaped yet counts as gone)."""
    try:
        return _stat_fields(pid)[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def daemons_for(socket: Path) -> list[int]:
    """Live ``takod_daemon`` processes whose environment names ``socket``."""
    wanted = f"TAKOD_SOCKET={socket}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"takod_daemon" in cmdline and wanted in environ and alive(int(entry)):
            found.append(int(entry))
    return found


def inotify_watched_inodes(pid: int) -> list[int]:
    """The inode of every directory (or file) watched by an inotify descriptor of ``pid`` (/proc/PID/fdinfo)."""
    inodes = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:inotify":
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                for line in f:
                    if line.startswith("inotify wd:"):
                        fields = dict(part.split(":", 1) for part in line.split()[1:] if ":" in part)
                        inodes.append(int(fields["ino"], 16))
        except OSError:
            continue  # closed meanwhile
    return inodes


def inotify_watches(pid: int) -> int:
    """Watches held by every inotify descriptor of ``pid``."""
    return len(inotify_watched_inodes(pid))


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))
