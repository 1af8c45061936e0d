"""The baseline for bench/rpc.py: the least a Python msgpack-rpc server can do.

    python bench/echo_server.py SOCKET RESULT_FILE [--ready-fd FD]

One asyncio process on uvloop (the event loop takod runs on), one
BufferedProtocol per connection reading into one shared buffer (as takod
does: a plain Protocol's fresh 256 KiB ``bytes`` per read can cost three mmap
syscalls, see daemon/takod_daemon/connection.py), no task per request, no
queues, no logging. It speaks takod's framing (a bare stream of msgpack
arrays, split with takod's own FrameSplitter) and answers every request, with
any method, with the msgpack bytes in RESULT_FILE (a captured takod ``status``
result, so replies are the same size). Notifications are ignored.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from pathlib import Path

import msgspec
import uvloop

from takod.protocol import FrameSplitter, ProtocolError, Request, decode_message, encode_response


READ_BUFFER = memoryview(bytearray(256 * 1024))


class EchoProtocol(asyncio.BufferedProtocol):
    def __init__(self, result: msgspec.Raw):
        self.result = result
        self.splitter = FrameSplitter()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        return READ_BUFFER

    def buffer_updated(self, nbytes: int) -> None:
        assert self.transport is not None
        try:
            replies = [
                encode_response(msg.msgid, None, self.result)
                for msg in map(decode_message, self.splitter.feed(READ_BUFFER[:nbytes]))
                if isinstance(msg, Request)
            ]
        except ProtocolError:
            self.transport.close()
            return
        if replies:
            self.transport.write(b"".join(replies))


async def serve(socket_path: Path, result: msgspec.Raw, ready_fd: int | None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    socket_path.unlink(missing_ok=True)
    server = await loop.create_unix_server(lambda: EchoProtocol(result), str(socket_path), backlog=512)
    if ready_fd is not None:
        os.write(ready_fd, b"ok\n")
        os.close(ready_fd)
    async with server:
        await stop.wait()
    socket_path.unlink(missing_ok=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("socket", type=Path)
    p.add_argument("result_file", type=Path)
    p.add_argument("--ready-fd", type=int)
    args = p.parse_args()
    result = msgspec.Raw(args.result_file.read_bytes())
    uvloop.run(serve(args.socket, result, args.ready_fd))


if __name__ == "__main__":
    main()
