"""The listening socket: bind (or take one from a supervisor) and accept clients.

Every accepted connection is checked for the peer's uid before a single byte
is read: the 0700 directory is the first barrier, this is the second. Then the
raw socket goes to an asyncio transport (see connection.py).
"""

from __future__ import annotations

import itertools
import os
import socket
import stat
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import structlog
from anyio.abc import TaskStatus

from .connection import Connection
from takod.peercred import peer_of

if TYPE_CHECKING:
    from .daemon import Daemon

log = structlog.get_logger("takod.server")

MAX_CONNECTIONS = 4096
# As deep as the connection limit (the kernel caps it at net.core.somaxconn): on Linux
# a non-blocking connect (libuv, asyncio) to a full backlog fails with EAGAIN instead of
# waiting, so a burst of clients arriving while the loop is busy must fit in it.
BACKLOG = MAX_CONNECTIONS


class SocketInUse(Exception):
    pass


def _is_listening(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        probe.connect(os.fsencode(path))
    except (BlockingIOError, InterruptedError):
        return True  # a full backlog: someone listens
    except OSError:
        return False
    finally:
        probe.close()
    return True


def bind_socket(path: Path) -> socket.socket:
    """Bind a listening Unix socket at ``path``. The caller holds the instance lock,
    so a socket file already there is a leftover from a dead daemon, unless
    something still listens on it: a service manager's socket (takod.socket,
    the launchd agent), which we must not steal."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise SocketInUse(f"{path} exists and is not a socket; move it away and start again")
        if _is_listening(path):
            raise SocketInUse(
                f"something else listens on {path} (the takod service's socket? `takod service status` says); "
                "clients reach takod through it, no need to start one by hand"
            )
        path.unlink()
        log.info("removed stale socket", path=str(path))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # created 0600: no window with looser modes
    try:
        sock.bind(os.fsencode(path))
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(old_umask)
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


async def serve(
    daemon: "Daemon", sock: socket.socket, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Accept connections until cancelled; each runs in this task group."""
    ids = itertools.count(1)
    async with anyio.create_task_group() as tg:
        task_status.started()
        while True:
            await anyio.wait_readable(sock)
            # Take every connection already waiting: one wake-up for a burst of clients.
            while True:
                try:
                    client, _ = sock.accept()
                except BlockingIOError:
                    break
                except OSError as exc:  # EMFILE and friends: back off instead of spinning
                    log.warning("accept failed", error=exc.strerror)
                    await anyio.sleep(0.1)
                    break
                client.setblocking(False)
                tg.start_soon(_handle, daemon, client, next(ids))


async def _handle(daemon: "Daemon", sock: socket.socket, conn_id: int) -> None:
    try:
        peer = peer_of(sock)
    except OSError as exc:
        log.warning("refused connection: peer credentials unavailable", error=str(exc))
        sock.close()
        return
    if peer.uid != os.getuid():
        log.warning("refused connection from another user", peer_uid=peer.uid, peer_pid=peer.pid)
        sock.close()
        return
    if len(daemon.connections) >= MAX_CONNECTIONS:
        log.warning("refused connection: too many connections", limit=MAX_CONNECTIONS)
        sock.close()
        return
    conn = Connection(daemon, sock, conn_id, peer.pid)
    daemon.connections.add(conn)
    try:
        await conn.run()
    except Exception:  # a bug in serving one client must not take the daemon (and every other client) down
        log.exception("connection failed, closed it", conn=conn_id)
    finally:
        daemon.connections.discard(conn)
