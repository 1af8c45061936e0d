"""A connection from another uid is refused and logged (the second barrier after the 0700 directory).

The 0700 socket directory stops other users before they reach the socket, so
to test the uid check the socket is hard-linked into a world-accessible
directory on the same filesystem and the link made 0666, as if the directory
barrier had failed. A forked child dropped to ``nobody`` then connects.
"""

from __future__ import annotations

import os
import pwd
import socket
import tempfile
from pathlib import Path
from typing import Iterator

import msgpack
import pytest

from tests.harness import DaemonProcess, wait_for
from tests.rawrpc import WAIT, served

pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="needs root to act as another user")


def ping_outcome(path: Path) -> str:
    """Connect, send a ping, and say what came back."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(WAIT)
    try:
        sock.connect(os.fsencode(path))
        sock.sendall(msgpack.packb([0, 1, "ping", []]))
        data = sock.recv(4096)
    except (ConnectionResetError, BrokenPipeError):  # closed before or after our request arrived
        data = b""
    except socket.timeout:
        return "no answer and not closed"
    except OSError as exc:
        return f"cannot connect: {exc}"
    finally:
        sock.close()
    return f"answered {msgpack.unpackb(data)!r}" if data else "closed"


def ping_outcome_as(uid: int, gid: int, path: Path) -> str:
    """:func:`ping_outcome` from a forked child running as ``uid``/``gid``."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            result = ping_outcome(path)
        except BaseException as exc:
            result = f"child failed: {exc!r}"
        os.write(write_fd, result.encode())
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        result = pipe.read().decode()  # ends when the child exits (its wait is bounded by WAIT)
    os.waitpid(pid, 0)
    return result


@pytest.fixture
def exposed_link(daemon: DaemonProcess) -> Iterator[Path]:
    """A 0666 hard link to the daemon's socket in a directory anyone can enter."""
    public = Path(tempfile.mkdtemp(prefix="takod-peer-", dir="/tmp"))
    try:
        os.chmod(public, 0o755)
        if public.stat().st_dev != daemon.socket.stat().st_dev:
            pytest.skip("no world-accessible directory on the socket's filesystem")
        link = public / "rpc.sock"
        os.link(daemon.socket, link)
        os.chmod(link, 0o666)
        yield link
    finally:
        for child in public.iterdir():
            child.unlink()
        public.rmdir()


def test_connection_from_another_uid_is_closed_unanswered_and_logged(daemon: DaemonProcess, exposed_link: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    assert ping_outcome_as(nobody.pw_uid, nobody.pw_gid, exposed_link) == "closed"
    wait_for(lambda: '"event": "refused connection from another user"' in daemon.log_text(), timeout=WAIT)
    assert f'"peer_uid": {nobody.pw_uid}' in daemon.log_text()
    # The same path works for the daemon's own user: the refusal was about who, not how.
    assert ping_outcome(exposed_link) == "answered [1, 1, None, 'pong']"
    assert served(daemon.socket)
