"""Notifier benchmark: writes at a steady rate → signed webhook deliveries at a local receiver.

Registry and notifier run as their own processes (uvicorn), as deployed.
Mode ``auto``: person writes through the registry API, whose outbox relay
publishes them; mode ``direct``: person events published straight to the bus
(notifier alone).
Prints deliveries/s and p50/p99 latency from the write to the receiver's arrival.

    python benchmarks/bench_notifier.py                     # 200 writes/s for 60 s
    python benchmarks/bench_notifier.py --rate 100 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import secrets
import shutil
import statistics
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

import orgdir.contracts  # noqa: F401 - the event catalogue
from notifier.settings import NotifierSettings
from orgdir.bus import Bus
from orgdir.events import new_event
from orgdir.localservers import ServerSet, free_port, run_dir
from orgdir.testkit import ADMIN, WRITER, ServiceProcess, settings_for
from registry.settings import RegistrySettings

try:
    import orjson as _json  # type: ignore[import-not-found]

    loads: Callable[[bytes], Any] = _json.loads
except ImportError:
    import json

    loads = json.loads


class Receiver:
    """Records when each subject's first event arrives (no verification: it would cost CPU here)."""

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self.count = 0
        self.lock = threading.Lock()
        rcv = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                now = time.time()
                subject = loads(body)["subject"]
                with rcv.lock:
                    rcv.count += 1
                    rcv.arrivals.setdefault(subject, now)
                self.send_response(204)
                self.send_header("content-length", "0")
                self.end_headers()

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@contextlib.asynccontextmanager
async def registry_writer(base: dict[str, Any], mode: str) -> AsyncIterator[Callable[[int], Awaitable[str]] | None]:
    """A write function through the registry API (its own process), or None in direct mode."""
    if mode == "direct":
        yield None
        return
    settings = settings_for(RegistrySettings, service="registry", **base)
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with (
        ServiceProcess("registry", settings) as registry,
        httpx.AsyncClient(base_url=registry.url, headers=WRITER, timeout=60, limits=limits) as http,
    ):

        async def write(i: int) -> str:
            r = await http.post("/api/v1/persons", json={"given_name": f"Bench{i}", "surname": "Jensen"})
            r.raise_for_status()
            return str(r.json()["uuid"])

        yield write


async def run(rate: float, seconds: float, amqp_url: str, mongodb_url: str, mode: str) -> None:
    ns = f"bench{uuid.uuid4().hex[:6]}"
    base = {"ns": ns, "amqp_url": amqp_url, "mongodb_url": mongodb_url}
    settings = settings_for(NotifierSettings, service="notifier", **base)
    receiver = Receiver()
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    bus = Bus(settings)
    await bus.connect()
    written: dict[str, float] = {}

    async def direct(i: int) -> str:
        subject = str(uuid.uuid4())
        timeline = [{"validity": {"from": "2020-01-01", "to": None}, "given_name": f"B{i}", "surname": "J"}]
        await bus.publish(
            new_event(
                service="registry",
                type="person.created",
                subject=subject,
                sequence=1,
                data={"uuid": subject, "version": 1, "timeline": timeline},
            )
        )
        return subject

    async with (
        ServiceProcess("notifier", settings) as notifier,
        httpx.AsyncClient(base_url=notifier.url, headers=ADMIN, timeout=30) as notifier_http,
        registry_writer(base, mode) as via_registry,
    ):
        mode = "registry" if via_registry else "direct"
        write = via_registry or direct
        r = await notifier_http.post(
            "/api/v1/subscriptions",
            json={
                "name": "bench",
                "url": f"http://127.0.0.1:{receiver.port}/hook",
                "secret": secret,
                "event_types": ["person.*"],
            },
        )
        r.raise_for_status()
        print(f"mode: {mode}; {rate:.0f} writes/s for {seconds:.0f} s")
        total = int(rate * seconds)
        errors = 0

        async def one(i: int) -> None:
            nonlocal errors
            started = time.time()
            try:
                subject = await write(i)
            except Exception:
                errors += 1
                return
            written[subject] = started

        start = time.monotonic()
        tasks: set[asyncio.Task[None]] = set()
        skipped = 0
        for i in range(total):
            if time.monotonic() - start > seconds:
                skipped = total - i  # the writer cannot keep the rate: stop on time
                break
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(tasks) >= 256:  # bounded outstanding writes; a slot missed is a write skipped
                skipped += 1
                continue
            task = asyncio.create_task(one(i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks, timeout=20)
        write_span = time.monotonic() - start
        if skipped:
            print(f"writer fell behind: {skipped} of {total} scheduled writes were not issued")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if len(set(written) & set(receiver.arrivals)) >= len(written):
                break
            await asyncio.sleep(0.2)
    await bus.close()
    arrived = [receiver.arrivals[s] - t for s, t in written.items() if s in receiver.arrivals]
    arrived.sort()
    first = min(written.values()) if written else 0.0
    last = max((receiver.arrivals[s] for s in written if s in receiver.arrivals), default=first)
    print(f"writes: {len(written)} ok, {errors} failed, in {write_span:.1f} s ({len(written) / write_span:.0f}/s)")
    print(f"delivered: {len(arrived)}/{len(written)}; receiver saw {receiver.count} requests")
    if arrived:
        p = statistics.quantiles(arrived, n=100) if len(arrived) > 1 else [arrived[0]] * 99
        print(f"deliveries/s: {len(arrived) / max(0.001, last - first):.0f}")
        print(
            f"latency write→arrival: p50 {p[49] * 1000:.0f} ms, p99 {p[98] * 1000:.0f} ms, "
            f"max {arrived[-1] * 1000:.0f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--mode", choices=["auto", "direct"], default="auto")
    args = parser.parse_args()
    base_dir = run_dir() / f"bench-notifier-{uuid.uuid4().hex[:6]}"
    servers = ServerSet.for_dir(base_dir, rabbit_name=f"benchn{uuid.uuid4().hex[:6]}")
    servers.start()
    try:
        asyncio.run(run(args.rate, args.seconds, servers.amqp_url, servers.mongodb_url, args.mode))
    finally:
        servers.stop()
        shutil.rmtree(base_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
