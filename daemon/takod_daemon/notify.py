"""sd_notify without libsystemd: READY, STATUS, WATCHDOG and STOPPING datagrams.

Each message is one datagram of newline-separated ``KEY=VALUE`` lines sent to
``$NOTIFY_SOCKET`` (a leading ``@`` is a Linux abstract-namespace name). The
watchdog is pinged at half of ``$WATCHDOG_USEC`` from the event loop itself,
so a wedged loop stops the pings and systemd restarts us. With no
``NOTIFY_SOCKET`` every call is a no-op.
"""

from __future__ import annotations

import os
import socket
from typing import Mapping

import anyio
import structlog

log = structlog.get_logger("takod.notify")

_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def notify_address(value: str) -> str | bytes | None:
    """The address to send to for a ``$NOTIFY_SOCKET`` value; None if unusable."""
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # vsock: addresses and relative paths are not for a user daemon


def watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Seconds between watchdog pings (half of ``WATCHDOG_USEC``), or None when not asked.

    ``WATCHDOG_PID``, when set, must name us: the value may have been inherited.
    """
    if env.get("WATCHDOG_PID", str(pid)) != str(pid):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None


class Notifier:
    """Talks to the service manager that started us, if any."""

    def __init__(self, address: str | bytes | None, watchdog: float | None):
        self.address = address
        self.watchdog = watchdog if address is not None else None
        self._sock: socket.socket | None = None
        if address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)

    @classmethod
    def from_env(cls) -> "Notifier":
        """Read (and remove, so spawned CLIs never inherit them) the notify variables."""
        env = os.environ
        address = notify_address(env.get("NOTIFY_SOCKET", ""))
        interval = watchdog_interval(env, os.getpid())
        for var in _VARS:
            env.pop(var, None)
        return cls(address, interval)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, **fields: str) -> None:
        """Send one message, e.g. ``send(READY="1", STATUS="serving")``. Never raises."""
        if self._sock is None:
            return
        payload = "\n".join(f"{key}={value.replace(chr(10), ' ')}" for key, value in fields.items())
        try:
            self._sock.sendto(payload.encode(), self.address)  # type: ignore[arg-type]
        except OSError as exc:  # the manager went away or is backed up: not worth dying for
            log.debug("sd_notify failed", error=exc.strerror, fields=sorted(fields))

    async def ping_watchdog(self) -> None:
        """Send WATCHDOG=1 at the interval until cancelled (returns at once if not asked)."""
        if self.watchdog is None:
            return
        while True:
            self.send(WATCHDOG="1")
            await anyio.sleep(self.watchdog)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
