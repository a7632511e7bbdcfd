"""Notifier benchmark: writes at a steady rate → signed webhook deliveries at a local receiver.

Registry and notifier run as their own processes (uvicorn), as deployed.
Mode ``auto``: person writes (PUT with a fresh uuid) through the registry API,
whose outbox relay publishes them; mode ``direct``: person events published
straight to the bus (notifier alone). The load generator and the receiver are
``lighthttp``: on a 2-core machine httpx and ``http.server`` took a third of
the CPU the services needed. Prints writes/s achieved, deliveries/s and p50/p99
latency from the write to the receiver's arrival.

    python benchmarks/bench_notifier.py                     # 200 writes/s for 60 s
    python benchmarks/bench_notifier.py --rate 100 --seconds 20 --replicas 2
    python benchmarks/bench_notifier.py --matrix            # 100 and 300 writes/s, 1 and 2 replicas
    python benchmarks/bench_notifier.py --matrix --find-max # and the highest rate sustained for 60 s

``--replicas N`` runs N processes of registry and of notifier on one database
and broker; the load generator spreads its writes over the registry replicas.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import secrets
import shutil
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import uvloop
from lighthttp import Client, Receiver  # beside this script

import orgdir.contracts  # noqa: F401 - the event catalogue
from notifier.settings import NotifierSettings
from orgdir.bus import Bus
from orgdir.events import new_event
from orgdir_tools.localservers import ServerSet, free_port, run_dir
from orgdir_tools.testkit import ADMIN, WRITER, ServiceProcess, bench_settings_for
from registry.settings import RegistrySettings

Write = Callable[[str, int], Awaitable[None]]


@contextlib.asynccontextmanager
async def registry_writer(base: dict[str, Any], replicas: int) -> AsyncIterator[tuple[Write, list[str]]]:
    """Writes through the registry API, spread over its replicas (each its own process)."""
    settings = bench_settings_for(RegistrySettings, service="registry", **base)
    async with contextlib.AsyncExitStack() as stack:
        procs = [ServiceProcess("registry", settings) for _ in range(replicas)]
        await asyncio.gather(*(stack.enter_async_context(p) for p in procs))
        clients = [Client("127.0.0.1", int(p.url.rsplit(":", 1)[1]), 64, WRITER) for p in procs]

        async def write(subject: str, i: int) -> None:
            body = json.dumps({"given_name": f"Bench{i}", "surname": "Jensen"}).encode()
            status, answer = await clients[i % replicas].request("PUT", f"/api/v1/persons/{subject}", body)
            if status not in (200, 201):
                raise RuntimeError(f"registry answered {status}: {answer[:200]!r}")

        try:
            yield write, [p.url for p in procs]
        finally:
            for client in clients:
                await client.close()


@contextlib.asynccontextmanager
async def direct_writer(bus: Bus) -> AsyncIterator[tuple[Write, list[str]]]:
    """Person events straight onto the bus, as registry would publish them."""

    async def write(subject: str, i: int) -> None:
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

    yield write, []


async def outbox_backlog(urls: list[str]) -> float:
    """``orgdir_outbox_backlog`` summed over the writing replicas: events written, not yet published."""
    total = 0.0
    async with httpx.AsyncClient(timeout=5) as http:
        for url in urls:
            with contextlib.suppress(httpx.HTTPError):
                for line in (await http.get(f"{url}/metrics")).text.splitlines():
                    if line.startswith("orgdir_outbox_backlog{"):
                        total += float(line.rsplit(" ", 1)[1])
    return total


async def run(
    rate: float, seconds: float, amqp_url: str, mongodb_url: str, mode: str, replicas: int = 1
) -> tuple[str, bool]:
    """One run; the table row and whether the rate was sustained (answered in time, deliveries kept up)."""
    ns = f"bench{uuid.uuid4().hex[:6]}"
    base = {"ns": ns, "amqp_url": amqp_url, "mongodb_url": mongodb_url}
    settings = bench_settings_for(NotifierSettings, service="notifier", **base)
    receiver = Receiver()
    await receiver.start(free_port())
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    bus = Bus(settings)
    await bus.connect()
    written: dict[str, float] = {}
    async with contextlib.AsyncExitStack() as stack:
        notifiers = [ServiceProcess("notifier", settings) for _ in range(replicas)]
        await asyncio.gather(*(stack.enter_async_context(p) for p in notifiers))
        notifier = notifiers[0]
        write, metrics_urls = await stack.enter_async_context(
            direct_writer(bus) if mode == "direct" else registry_writer(base, replicas)
        )
        async with httpx.AsyncClient(base_url=notifier.url, headers=ADMIN, timeout=30) as http:
            r = await http.post(
                "/api/v1/subscriptions",
                json={
                    "name": "bench",
                    "url": f"http://127.0.0.1:{receiver.port}/hook",
                    "secret": secret,
                    "event_types": ["person.*"],
                },
            )
            r.raise_for_status()
        print(f"mode: {mode}; {rate:.0f} writes/s for {seconds:.0f} s; {replicas} replica(s)", flush=True)
        total = int(rate * seconds)
        errors: list[str] = []
        outstanding: set[asyncio.Task[None]] = set()

        async def one(i: int) -> None:
            subject = str(uuid.uuid4())
            started = time.time()
            try:
                await write(subject, i)
            except Exception as exc:
                errors.append(str(exc))
                return
            written[subject] = started

        start = time.monotonic()
        issued = 0
        next_report = start + 10
        for i in range(total):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(i))
            outstanding.add(task)
            task.add_done_callback(outstanding.discard)
            issued += 1
            if time.monotonic() > next_report:
                print(
                    f"  {issued:,} writes issued, {len(written):,} done, {len(outstanding):,} waiting, "
                    f"{receiver.count:,} delivered",
                    flush=True,
                )
                next_report += 10
        issue_span = time.monotonic() - start
        behind = len(written) - len(set(written) & set(receiver.arrivals))  # not yet at the receiver
        if outstanding:
            await asyncio.wait(outstanding, timeout=60)
        write_span = time.monotonic() - start
        backlog_after_writes = await outbox_backlog(metrics_urls)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(set(written) & set(receiver.arrivals)) < len(written):
            await asyncio.sleep(0.2)
        backlog_end = await outbox_backlog(metrics_urls)
    await bus.close()
    await receiver.stop()
    arrived = sorted(receiver.arrivals[s] - t for s, t in written.items() if s in receiver.arrivals)
    first = min(written.values()) if written else 0.0
    last = max((receiver.arrivals[s] for s in written if s in receiver.arrivals), default=first)
    print(
        f"writes: {issued} issued in {issue_span:.1f} s ({issued / issue_span:.0f}/s); {len(written)} answered "
        f"within {write_span:.1f} s ({len(written) / write_span:.0f}/s), {len(errors)} failed"
    )
    if errors:
        print(f"  first error: {errors[0]}")
    print(f"delivered: {len(arrived)}/{len(written)}; receiver saw {receiver.count} requests")
    print(
        f"outbox backlog (orgdir_outbox_backlog): {backlog_after_writes:.0f} when the writes were answered, "
        f"{backlog_end:.0f} at the end"
    )
    # Sustained: the writes were answered at the rate asked, and when the last one was issued the
    # webhooks were less than two seconds of writes behind (a backlog that does not grow).
    sustained = (
        len(written) >= 0.95 * issued
        and write_span <= seconds * 1.1 + 2
        and behind <= 2 * rate
        and len(arrived) == len(written)
    )
    print(
        f"behind when the last write was issued: {behind} writes ({behind / rate:.1f} s); "
        f"sustained: {'yes' if sustained else 'no'}"
    )
    if not arrived:
        return f"| {rate:.0f} | {replicas} | {len(written)} | 0 | - | - | - | {backlog_end:.0f} |", False
    p = statistics.quantiles(arrived, n=100) if len(arrived) > 1 else [arrived[0]] * 99
    per_second = len(arrived) / max(0.001, last - first)
    print(f"deliveries/s: {per_second:.0f}")
    print(
        f"latency write→arrival: p50 {p[49] * 1000:.0f} ms, p99 {p[98] * 1000:.0f} ms, max {arrived[-1] * 1000:.0f} ms"
    )
    return (
        f"| {rate:.0f} | {replicas} | {len(written)} | {len(arrived)} | {per_second:.0f} "
        f"| {p[49] * 1000:.0f} | {p[98] * 1000:.0f} | {backlog_end:.0f} |"
    ), sustained


def find_max(seconds: float, amqp_url: str, mongodb_url: str, mode: str, replicas: int, rows: list[str]) -> float:
    """The highest rate sustained for ``seconds``: double from 100 until one fails, then bisect twice."""
    good, bad, rate = 0.0, 0.0, 100.0
    while bad == 0.0 and rate <= 3200:
        row, ok = uvloop.run(run(rate, seconds, amqp_url, mongodb_url, mode, replicas))
        rows.append(row)
        good, bad, rate = (rate, bad, rate * 2) if ok else (good, rate, rate)
    for _ in range(2):
        if bad == 0.0 or bad - good < 25:
            break
        rate = round((good + bad) / 2 / 10) * 10
        row, ok = uvloop.run(run(rate, seconds, amqp_url, mongodb_url, mode, replicas))
        rows.append(row)
        good, bad = (rate, bad) if ok else (good, rate)
    print(f"highest sustained rate: {good:.0f} writes/s for {seconds:.0f} s with {replicas} replica(s)", flush=True)
    return good


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--mode", choices=["auto", "direct"], default="auto")
    parser.add_argument("--replicas", type=int, default=1, help="processes of registry and of notifier")
    parser.add_argument("--matrix", action="store_true", help="100 and 300 writes/s with 1 and 2 replicas")
    parser.add_argument(
        "--find-max",
        action="store_true",
        help="also the highest rate sustained for --max-seconds without a growing backlog, with 1 and 2 replicas",
    )
    parser.add_argument("--max-seconds", type=float, default=60.0, help="length of each --find-max run")
    args = parser.parse_args()
    runs = [(args.rate, args.replicas)]
    if args.matrix:
        runs = [(rate, n) for rate in (100.0, 300.0) for n in (1, 2)]
        args.seconds = min(args.seconds, 20.0)
    base_dir = run_dir() / f"bench-notifier-{uuid.uuid4().hex[:6]}"
    servers = ServerSet.for_dir(base_dir, rabbit_name=f"benchn{uuid.uuid4().hex[:6]}")
    servers.start()
    rows = []
    try:
        for i, (rate, replicas) in enumerate(runs, start=1):
            print(f"\n[{i}/{len(runs)}]", flush=True)
            row, _ = uvloop.run(run(rate, args.seconds, servers.amqp_url, servers.mongodb_url, args.mode, replicas))
            rows.append(row)
        if args.find_max:
            for replicas in (1, 2):
                print(f"\n[max {replicas}]", flush=True)
                find_max(args.max_seconds, servers.amqp_url, servers.mongodb_url, args.mode, replicas, rows)
        print("\n| writes/s | replicas | written | delivered | deliveries/s | p50 ms | p99 ms | outbox backlog |")
        print("|---|---|---|---|---|---|---|---|")
        print("\n".join(rows))
    finally:
        servers.stop()
        shutil.rmtree(base_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
