"""peer_of: the uid and pid at the other end of a Unix socket, read without the struct module."""

from __future__ import annotations

import os
import socket

from takod.peercred import peer_of


def test_peer_of_a_socketpair_is_this_process() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        peer = peer_of(a)
        assert peer.uid == os.getuid()
        assert peer.pid == os.getpid()
