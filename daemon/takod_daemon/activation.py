"""Listening sockets handed over by a supervisor: systemd (LISTEN_FDS) or launchd.

systemd (sd_listen_fds(3)) passes fds from 3 on, with ``LISTEN_PID`` naming the
process they are meant for (so an inherited environment is ignored),
``LISTEN_FDS`` their count and ``LISTEN_FDNAMES`` the ``FileDescriptorName=``
of each. launchd hands them out on request through ``launch_activate_socket``,
which answers ESRCH when we were not started by launchd. Either way, no
supervisor means the daemon binds its socket itself.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import sys
from dataclasses import dataclass
from typing import Callable, Mapping

import structlog

from takod.units import FD_NAME

log = structlog.get_logger("takod.activation")

SD_LISTEN_FDS_START = 3
_SYSTEMD_VARS = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


@dataclass(frozen=True)
class Activated:
    """A listening socket a supervisor created; it owns the socket file, we never unlink it."""

    sock: socket.socket
    source: str  # "systemd" or "launchd"


def systemd_fds(env: Mapping[str, str], pid: int) -> list[tuple[int, str]]:
    """The (fd, name) pairs systemd passed to process ``pid``; [] if none are ours.

    Names missing from ``LISTEN_FDNAMES`` (or all of them, when it is unset)
    count as ours, so a socket unit without ``FileDescriptorName=`` still works.
    """
    if env.get("LISTEN_PID") != str(pid):
        return []
    try:
        count = int(env.get("LISTEN_FDS", ""))
    except ValueError:
        return []
    names = env["LISTEN_FDNAMES"].split(":") if env.get("LISTEN_FDNAMES") else []
    return [(SD_LISTEN_FDS_START + i, names[i] if i < len(names) else FD_NAME) for i in range(max(count, 0))]


def choose_fd(sockets: list[tuple[int, str]], name: str = FD_NAME) -> int | None:
    """Which passed socket is ours: the only one, whatever its name (a unit without
    ``FileDescriptorName=`` names it after itself, e.g. ``takod.socket``), else the
    first named ``name``."""
    if len(sockets) == 1:
        return sockets[0][0]
    return next((fd for fd, fd_name in sockets if fd_name == name), None)


def take_systemd(name: str = FD_NAME) -> socket.socket | None:
    """Claim our listener from systemd (:func:`choose_fd`), or None.

    The variables leave our environment and every passed fd becomes close-on-exec,
    so the provider CLIs we spawn inherit neither.
    """
    fds = systemd_fds(os.environ, os.getpid())
    for var in _SYSTEMD_VARS:
        os.environ.pop(var, None)
    sockets: list[tuple[int, str]] = []
    for fd, fd_name in fds:
        try:
            is_socket = stat.S_ISSOCK(os.fstat(fd).st_mode)
        except OSError:
            is_socket = False
        if not is_socket:
            log.warning("activation fd is not an open socket, ignored", fd=fd)
            continue
        os.set_inheritable(fd, False)
        sockets.append((fd, fd_name))
    chosen = choose_fd(sockets, name)
    for fd, fd_name in sockets:
        if fd != chosen:
            log.warning("ignoring an activation socket that is not ours", fd=fd, name=fd_name)
    return socket.socket(fileno=chosen) if chosen is not None else None  # detects family and type from the fd


LaunchActivate = Callable[[str], "tuple[int, list[int]]"]


def launchd_verdict(code: int) -> str:
    """What a ``launch_activate_socket`` return code means for us.

    ``activated``: use the fds. ``by-hand``: not a launchd job (ESRCH), bind it
    ourselves. ``no-socket``: a launchd job whose plist lacks our Sockets entry
    (ENOENT), bind ourselves and say so. ``claimed``: someone in this process
    took it already (EALREADY). ``failed``: anything else.
    """
    if code == 0:
        return "activated"
    return {errno.ESRCH: "by-hand", errno.ENOENT: "no-socket", errno.EALREADY: "claimed"}.get(code, "failed")


def _launch_activate_socket(name: str) -> tuple[int, list[int]]:
    """Call libSystem's ``launch_activate_socket`` through ctypes (macOS only)."""
    import ctypes

    libc = ctypes.CDLL("/usr/lib/libSystem.B.dylib", use_errno=True)
    fn = libc.launch_activate_socket
    fn.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.POINTER(ctypes.c_int)), ctypes.POINTER(ctypes.c_size_t)]
    fn.restype = ctypes.c_int
    fds = ctypes.POINTER(ctypes.c_int)()
    count = ctypes.c_size_t(0)
    code = fn(name.encode(), ctypes.byref(fds), ctypes.byref(count))
    if code != 0:
        return code, []
    try:
        return 0, [fds[i] for i in range(count.value)]
    finally:
        libc.free(fds)  # the array is ours to free; the fds stay open


def take_launchd(name: str = FD_NAME, activate: LaunchActivate = _launch_activate_socket) -> socket.socket | None:
    """Claim the listener named ``name`` from launchd, or None when we should bind ourselves."""
    code, fds = activate(name)
    verdict = launchd_verdict(code)
    if verdict != "activated" or not fds:
        if verdict not in ("by-hand", "activated"):
            log.warning("launchd socket not available, binding our own", verdict=verdict, error=os.strerror(code))
        return None
    for extra in fds[1:]:  # one path, one listener; more would be a plist mistake
        os.close(extra)
    os.set_inheritable(fds[0], False)
    return socket.socket(fileno=fds[0])


def activated_listener(name: str = FD_NAME) -> Activated | None:
    """The supervisor's listening socket, if a supervisor started us; else None."""
    sock = take_systemd(name)
    source = "systemd"
    if sock is None and sys.platform == "darwin":
        sock, source = take_launchd(name), "launchd"
    if sock is None:
        return None
    sock.setblocking(False)
    return Activated(sock, source)
