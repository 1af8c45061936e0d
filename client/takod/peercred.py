"""Who is on the other end of a Unix socket: the daemon checks every client it
accepts, and a client checks the daemon before it sends a byte."""

from __future__ import annotations

import socket
import struct
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Peer:
    uid: int
    pid: int | None


def peer_of(sock: socket.socket) -> Peer:
    """The connecting process's uid (and pid where the OS says)."""
    if sys.platform.startswith("linux"):
        pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        return Peer(uid, pid)
    if sys.platform == "darwin":
        # struct xucred: cr_version (must be 0), cr_uid, cr_ngroups, cr_groups[16]
        raw = sock.getsockopt(0, socket.LOCAL_PEERCRED, 4 * 19)  # SOL_LOCAL = 0
        version, uid = struct.unpack_from("=II", raw)
        if version != 0:
            raise OSError("unexpected xucred version")
        try:
            pid = struct.unpack("i", sock.getsockopt(0, 0x002, 4))[0]  # LOCAL_PEERPID
        except OSError:
            pid = None
        return Peer(uid, pid)
    raise OSError(f"peer credentials are not supported on {sys.platform}")
