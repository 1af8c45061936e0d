"""A minimal asyncio msgpack-rpc client for the stress scripts (msgpack-python, none of takod's code)."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
from typing import Any

import msgpack


class AConn:
    """One connection; requests are matched to replies by msgid, notifications are counted."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        self.ids = itertools.count(1)
        self.notifications = 0

    backlog_full = 0  # connects refused with EAGAIN because the daemon's accept backlog was full

    @classmethod
    async def open(cls, path: str | os.PathLike[str]) -> "AConn":
        """Connect as a non-blocking client (libuv, asyncio) does. On Linux a full
        accept backlog fails such a connect with EAGAIN (asyncio would hand back an
        unconnected socket); it is counted and retried."""
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                sock.connect(os.fspath(path))
                break
            except BlockingIOError:
                sock.close()
                AConn.backlog_full += 1
                await asyncio.sleep(0.01)
            except BaseException:
                sock.close()
                raise
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=1 << 20)
        return cls(reader, writer)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def recv(self) -> Any:
        while True:
            for msg in self.unpacker:
                if msg[0] == 2:
                    self.notifications += 1
                    continue
                return msg
            data = await self.reader.read(1 << 16)
            if not data:
                raise ConnectionError("daemon closed the connection")
            self.unpacker.feed(data)

    async def call(self, method: str, *params: Any) -> Any:
        """One request; the whole response ``[1, msgid, error, result]``."""
        msgid = next(self.ids) & 0xFFFFFFFF
        self.send(msgpack.packb([0, msgid, method, list(params)]))
        msg = await self.recv()
        if msg[1] != msgid:
            raise AssertionError(f"reply for {msg[1]}, wanted {msgid}")
        return msg

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass
