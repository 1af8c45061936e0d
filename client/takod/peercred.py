"""Who is on the other end of a Unix socket: the daemon checks every client it
accepts, and a client checks the daemon before it sends a byte."""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Peer:
    uid: int
    pid: int | None


def _int(raw: bytes, at: int, signed: bool = False) -> int:
    """The native 32-bit int at byte ``at`` (int.from_bytes: no struct import at CLI start)."""
    return int.from_bytes(raw[at:at + 4], sys.byteorder, signed=signed)


def peer_of(sock: socket.socket) -> Peer:
    """The process's uid at the other end (and its pid where the OS says): the
    connecting client's for the daemon, the listening daemon's for a client."""
    if sys.platform.startswith("linux"):
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)  # struct ucred: pid, uid, gid
        return Peer(_int(raw, 4), _int(raw, 0, signed=True))
    if sys.platform == "darwin":
        # struct xucred: cr_version (must be 0), cr_uid, cr_ngroups, cr_groups[16]
        raw = sock.getsockopt(0, socket.LOCAL_PEERCRED, 4 * 19)  # SOL_LOCAL = 0
        if _int(raw, 0) != 0:
            raise OSError("unexpected xucred version")
        try:
            pid: int | None = _int(sock.getsockopt(0, 0x002, 4), 0, signed=True)  # LOCAL_PEERPID
        except OSError:
            pid = None
        return Peer(_int(raw, 4), pid)
    raise OSError(f"peer credentials are not supported on {sys.platform}")
