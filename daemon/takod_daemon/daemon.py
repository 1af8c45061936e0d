"""The daemon's lifetime: lock, listen, serve, stop cleanly.

One task group for the daemon; signals drive stop (SIGTERM, SIGINT) and
reload (SIGHUP). On stop, subscribers get a ``daemon`` event, in-flight
requests are answered with ``shutting_down``, queued replies are flushed, and
the socket file is removed unless a supervisor owns it.
"""

from __future__ import annotations

import os
import signal
import stat
import time
from pathlib import Path
from typing import Callable

import anyio
import structlog

from takod import __version__
from takod.paths import find_workspace, lock_path
from takod.protocol import PROTOCOL_VERSION, RpcError

from .api import registry
from .credentials import pi_lock
from .connection import Connection
from .events import EventBus
from .instance import InstanceLock
from .inference.engine import Engine
from .keystore import KeyStore
from .login import LoginManager
from .refresh.broker import DEFAULT_LEAD, RefreshBroker
from .rpc import Registry
from .server import activated_socket, bind_socket, serve
from .state import StateManager

log = structlog.get_logger("takod.daemon")


class Daemon:
    """Everything a request handler may need: state, events, connections."""

    def __init__(
        self, socket_path: Path, state_dir: Path, methods: Registry = registry, refresh_lead: float = DEFAULT_LEAD
    ):
        self.socket_path = socket_path
        self.state_dir = state_dir
        self.registry = methods
        self.bus = EventBus()
        self.connections: set[Connection] = set()
        self.started_at = time.time()
        self.activated = False
        self.version = __version__
        self.protocol = PROTOCOL_VERSION
        self._stop = anyio.Event()
        self.stop_reason = ""
        self.default_workspace = find_workspace()
        self.keys = KeyStore(state_dir)
        self.state = StateManager(self)
        self.broker = RefreshBroker(self, self.state.env, refresh_lead)
        self.engine = Engine(self)
        self.logins = LoginManager(self)

    def request_stop(self, reason: str) -> None:
        if not self._stop.is_set():
            self.stop_reason = reason
            self._stop.set()

    async def reload(self) -> None:
        """Re-read everything from disk (SIGHUP)."""
        log.info("reload requested")
        await self.state.reload()
        await self.broker.rescan()
        self.bus.publish("daemon", {"state": "reloaded"})

    async def _signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    await self.reload()
                else:
                    self.request_stop(signal.Signals(signum).name)

    async def run(self, on_ready: Callable[[], None] | None = None) -> None:
        """Serve until asked to stop. The caller holds the instance lock."""
        sock = activated_socket()
        self.activated = sock is not None
        if sock is None:
            sock = bind_socket(self.socket_path)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._signals)
                await tg.start(self.state.run)
                await tg.start(self.broker.run)
                await tg.start(self.engine.run)
                await tg.start(self.logins.run)
                await tg.start(serve, self, sock)
                log.info(
                    "takod ready",
                    version=self.version,
                    pid=os.getpid(),
                    socket=str(self.socket_path),
                    activated=self.activated,
                )
                if on_ready is not None:
                    on_ready()
                await self._stop.wait()
                log.info("stopping", reason=self.stop_reason)
                await self._close_connections()
                tg.cancel_scope.cancel()
        finally:
            if not self.activated:
                _remove_socket(self.socket_path)
            sock.close()

    async def _close_connections(self) -> None:
        self.bus.publish("daemon", {"state": "stopping", "reason": self.stop_reason})
        reason = RpcError("shutting_down", "takod is stopping")
        with anyio.move_on_after(3):
            async with anyio.create_task_group() as tg:
                for conn in list(self.connections):
                    tg.start_soon(conn.close, reason)


def _remove_socket(path: Path) -> None:
    """Remove our socket file. Safe: we still hold the instance lock, so no
    successor can have bound a new socket at this path yet."""
    try:
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()
    except FileNotFoundError:
        pass


def run_daemon(
    socket_path: Path,
    state_dir: Path,
    on_ready: Callable[[], None] | None = None,
    refresh_lead: float = DEFAULT_LEAD,
) -> None:
    """Take the instance lock, then serve. Raises AlreadyRunning / UnsafeDirectory."""
    from . import methods  # noqa: F401  (registers every method)

    lock = InstanceLock(lock_path(socket_path))
    lock.acquire()
    # pi locks a killed predecessor held would stall pi and us for 30 s: remove
    # those still exactly as it left them, then note our own.
    records = state_dir / "pi-locks"
    removed = pi_lock.reclaim_own(records)
    if removed:
        log.warning("removed pi locks a stopped takod left behind", locks=[str(p) for p in removed])
    pi_lock.keep_records(records)
    try:
        anyio.run(Daemon(socket_path, state_dir, refresh_lead=refresh_lead).run, on_ready)
    finally:
        lock.release()
