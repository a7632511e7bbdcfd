"""Minimal HTTP/1.1 client and webhook receiver on asyncio protocols, for load generation.

The benchmarks share two cores with the system they measure; httpx and
``http.server`` cost several milliseconds of CPU per request, which at 200
requests/s took a third of the machine from the services. These speak just
enough HTTP/1.1 (keep-alive, Content-Length bodies) for the services' own
uvicorn and the notifier's httpx sender, like ``wrk`` would.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import cast


class _Conn(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed"))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        head_end = self.buf.find(b"\r\n\r\n")
        if head_end < 0 or self.waiter is None:
            return
        head = bytes(self.buf[:head_end]).decode("latin-1").split("\r\n")
        length = 0
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if len(self.buf) < head_end + 4 + length:
            return
        body = bytes(self.buf[head_end + 4 : head_end + 4 + length])
        del self.buf[: head_end + 4 + length]
        if not self.waiter.done():
            self.waiter.set_result((int(head[0].split(" ", 2)[1]), body))


class Client:
    """A pool of keep-alive connections to one host; ``request`` waits for a free one."""

    def __init__(self, host: str, port: int, size: int, headers: dict[str, str]) -> None:
        self.host, self.port = host, port
        self.extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.free: asyncio.Queue[_Conn | None] = asyncio.Queue()
        for _ in range(size):
            self.free.put_nowait(None)

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(_Conn, self.host, self.port)
        return conn

    async def request(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        conn = await self.free.get()
        try:
            if conn is None or conn.lost:
                conn = await self._connect()
            conn.waiter = asyncio.get_running_loop().create_future()
            assert conn.transport is not None
            conn.transport.write(
                f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{self.extra}"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            return await conn.waiter
        except BaseException:
            if conn is not None and conn.transport is not None:
                conn.transport.close()
            conn = None
            raise
        finally:
            self.free.put_nowait(conn)

    async def close(self) -> None:
        while not self.free.empty():
            conn = self.free.get_nowait()
            if conn is not None and conn.transport is not None:
                conn.transport.close()


class _Hook(asyncio.Protocol):
    def __init__(self, on_body: Callable[[bytes], None]) -> None:
        self.on_body = on_body
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            head_end = self.buf.find(b"\r\n\r\n")
            if head_end < 0:
                return
            length = 0
            for line in bytes(self.buf[:head_end]).split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buf) < head_end + 4 + length:
                return
            body = bytes(self.buf[head_end + 4 : head_end + 4 + length])
            del self.buf[: head_end + 4 + length]
            self.on_body(body)
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")


class Receiver:
    """A webhook target: records when each subject's first event arrives (answers 204)."""

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self.count = 0
        self.port = 0
        self.server: asyncio.Server | None = None

    def _on_body(self, body: bytes) -> None:
        self.count += 1
        self.arrivals.setdefault(json.loads(body)["subject"], time.time())

    async def start(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _Hook(self._on_body), "127.0.0.1", port)
        self.port = port

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
