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
from takod.paths import find_workspace, home, lock_path
from takod.protocol import PROTOCOL_VERSION, RpcError
from takod.schema import workspace_problem

from .api import registry
from .connection import READ_SIZE, Connection
from .credentials import pi_lock
from .events import EventBus
from .instance import AlreadyRunning, InstanceLock
from .inference.engine import Engine
from .keystore import KeyStore
from .login import LoginManager
from .refresh.broker import DEFAULT_LEAD, RefreshBroker
from .rpc import Registry
from .activation import Activated, activated_listener
from .notify import Notifier
from .server import bind_socket, serve
from .state import StateManager
from .status_file import StatusFile

log = structlog.get_logger("takod.daemon")


def _default_workspace() -> Path:
    """:func:`find_workspace`, unless the protocol could never name it (a path
    that is not UTF-8, say): then the home directory, with a warning, so one odd
    directory name does not keep the daemon from serving every other workspace."""
    found = find_workspace()
    problem = workspace_problem(str(found))
    if problem is None:
        return found
    log.warning("default workspace unusable; using the home directory", problem=problem, path=ascii(str(found)))
    return home()

ACTIVATED_LOCK_WAIT = 10.0


class SupervisorConflict(Exception):
    """systemd/launchd gave us the socket, but a daemon it did not start holds the lock."""

    def __init__(self, pid: int | None, socket_path: Path, source: str):
        who = f"takod (pid {pid})" if pid else "another takod"
        stop = f"`kill {pid}`" if pid else "stop it"
        super().__init__(
            f"{who} holds the instance lock, but {source} owns {socket_path} now, so that daemon is unreachable; "
            f"{stop} and {source} starts takod on the next connection"
        )
        self.pid = pid


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
        self.read_buffer = memoryview(bytearray(READ_SIZE))  # every connection reads into it (connection.py)
        self.started_at = time.time()
        self.pid = os.getpid()  # asked on every status: getpid is a syscall each time
        self.activated = False
        self.version = __version__
        self.protocol = PROTOCOL_VERSION
        self._stop = anyio.Event()
        self.stop_reason = ""
        self.default_workspace = _default_workspace()
        self.keys = KeyStore(state_dir)
        self.status_file = StatusFile(socket_path)
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

    async def run(
        self,
        activated: Activated | None = None,
        notifier: Notifier | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        """Serve until asked to stop. The caller holds the instance lock."""
        self.activated = activated is not None
        notifier = notifier or Notifier(None, None)
        sock = activated.sock if activated is not None else bind_socket(self.socket_path)
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
                    activated=activated.source if activated is not None else None,
                )
                notifier.send(READY="1", STATUS=self._status_line())
                if notifier.enabled:
                    tg.start_soon(notifier.ping_watchdog)
                    tg.start_soon(self._report_status, notifier)
                if on_ready is not None:
                    on_ready()
                await self._stop.wait()
                log.info("stopping", reason=self.stop_reason)
                notifier.send(STOPPING="1", STATUS=f"stopping: {self.stop_reason}")
                await self._close_connections()
                tg.cancel_scope.cancel()
        finally:
            self.status_file.remove()
            notifier.close()
            if not self.activated:
                _remove_socket(self.socket_path)
            sock.close()

    def _status_line(self) -> str:
        """The one-line STATUS= systemctl shows: what the default workspace would use."""
        ws = self.state.loaded(self.default_workspace)
        selected = ws.selected if ws is not None else None
        return f"serving {self.socket_path}; " + (f"provider {selected}" if selected else "no provider ready")

    async def _report_status(self, notifier: Notifier) -> None:
        """Keep the manager's STATUS= in step with readiness changes."""
        sub = self.bus.subscribe(["status"], "notify")
        try:
            last = ""
            while True:
                await sub.wakeup.wait()
                sub.take()
                line = self._status_line()
                if line != last:
                    notifier.send(STATUS=line)
                    last = line
        finally:
            self.bus.unsubscribe(sub)

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
    notifier: Notifier | None = None,
) -> None:
    """Take the instance lock, then serve.

    Raises AlreadyRunning / UnsafeDirectory, or SupervisorConflict when a
    supervisor handed us its socket while a daemon it did not start holds the lock.
    ``notifier`` (default: from the environment) stays open on a failed start, so
    the caller can tell the service manager why.
    """
    from . import methods  # noqa: F401  (registers every method)

    # Both before anything copies the environment: provider CLIs must not inherit these variables.
    activated = activated_listener()
    notifier = notifier if notifier is not None else Notifier.from_env()
    if activated is not None:
        bound = activated.sock.getsockname()
        if isinstance(bound, str) and bound.startswith("/"):
            socket_path = Path(bound)  # the lock lives beside the socket the supervisor made
    lock = InstanceLock(lock_path(socket_path))
    try:
        # A daemon that is stopping lets go within seconds; wait for it, as a
        # supervisor restarting us expects, but never for a live one.
        lock.acquire(wait=ACTIVATED_LOCK_WAIT if activated is not None else 0.0)
    except AlreadyRunning as exc:
        if activated is None:
            raise
        activated.sock.close()
        raise SupervisorConflict(exc.pid, socket_path, activated.source) from None
    # pi locks a killed predecessor held would stall pi and us for 30 s: remove
    # those still exactly as it left them, then note our own.
    records = state_dir / "pi-locks"
    removed = pi_lock.reclaim_own(records)
    if removed:
        log.warning("removed pi locks a stopped takod left behind", locks=[str(p) for p in removed])
    pi_lock.keep_records(records)
    try:
        # uvloop: the event loop and socket transports in C (libuv). A status round
        # trip costs the daemon about a fifth less CPU than on asyncio's own loop
        # (bench/rpc.py --before, docs/performance.md).
        anyio.run(
            Daemon(socket_path, state_dir, refresh_lead=refresh_lead).run,
            activated,
            notifier,
            on_ready,
            backend_options={"use_uvloop": True},
        )
    finally:
        lock.release()
