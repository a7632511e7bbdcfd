"""bench-bus: events/s through outbox relay → RabbitMQ → consumer, next to raw aio-pika.

Both paths run in the same process, against the same broker, in the same run:

- raw: persistent ~300-byte messages to a quorum queue with publisher
  confirms (up to 100 in flight), consumed with manual acks;
- orgdir: N aggregates written with their events left in the outbox, then
  the relay publishes them (confirms, mandatory, then ``$pullAll``) and a
  platform Consumer handles them (parse, validate the data model, stale check
  and mark in the database, ack).

Usage: ``python benchmarks/bench_bus.py [--events N]``. Uses AMQP_URL /
MONGODB_URL when set, else starts private servers under .run/.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import time
import uuid

import aio_pika
from pydantic import BaseModel

from orgdir.bus import Bus, Consumer, Router
from orgdir.events import CloudEvent, register_aggregate
from orgdir.service import Runtime
from orgdir.settings import Settings
from orgdir.store import Change
from orgdir_tools.localservers import ServerSet, run_dir


class BenchState(BaseModel):
    uuid: str
    version: int
    name: str
    note: str


register_aggregate("benchitem", BenchState, "benchmark item", ("created",))


async def raw_baseline(amqp_url: str, n: int, in_flight: int = 100) -> float:
    conn = await aio_pika.connect(amqp_url)
    try:
        channel = await conn.channel(publisher_confirms=True)
        queue = await channel.declare_queue(
            f"bench.raw.{uuid.uuid4().hex[:6]}", durable=True, arguments={"x-queue-type": "quorum"}
        )
        body = b"x" * 300
        received = 0
        done = asyncio.Event()
        consumer_channel = await conn.channel()
        await consumer_channel.set_qos(prefetch_count=100)
        cq = await consumer_channel.get_queue(queue.name)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal received
            await message.ack()
            received += 1
            if received == n:
                done.set()

        await cq.consume(on_message)
        started = time.perf_counter()
        for i in range(0, n, in_flight):
            await asyncio.gather(
                *(
                    channel.default_exchange.publish(
                        aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=queue.name
                    )
                    for _ in range(min(in_flight, n - i))
                )
            )
        await asyncio.wait_for(done.wait(), 300)
        elapsed = time.perf_counter() - started
        await queue.delete(if_unused=False, if_empty=False)
        return n / elapsed
    finally:
        await conn.close()


async def orgdir_path(amqp_url: str, mongodb_url: str, n: int) -> tuple[float, float]:
    ns = f"bench{uuid.uuid4().hex[:6]}"
    settings = Settings(
        service_name="bench",
        amqp_url=amqp_url,
        mongodb_url=mongodb_url,
        database=f"{ns}_bench",
        exchange=f"{ns}.events",
        queue_prefix=f"{ns}.",
        prefetch=100,
        relay_sweep_seconds=3600,
    )
    runtime = Runtime(settings)
    repo = runtime.repository("items")
    consumer_bus = Bus(settings)
    await consumer_bus.connect()
    await runtime.bus.connect()
    received = 0
    done = asyncio.Event()
    router = Router()

    @router.on("benchitem.*")
    async def handle(event: CloudEvent, data: BenchState) -> None:
        nonlocal received
        received += 1
        if received == n:
            done.set()

    consumer = Consumer(consumer_bus, "bench", router, runtime.seen)
    await consumer.start()
    # Write the aggregates with the relay not running: their events wait in the outboxes.
    write_started = time.perf_counter()
    ids = [str(uuid.uuid4()) for _ in range(n)]
    sem = asyncio.Semaphore(32)

    async def write(uid: str) -> None:
        async with sem:
            await repo.insert(uid, Change({"name": f"enhed {uid[:8]}", "note": "ø" * 120}, "benchitem.created"))

    await asyncio.gather(*(write(u) for u in ids))
    writes_per_s = n / (time.perf_counter() - write_started)
    print(f"  (wrote {n} aggregates with their events: {writes_per_s:,.0f} writes/s)")
    started = time.perf_counter()
    runtime.relay.start()
    await asyncio.wait_for(done.wait(), 600)
    elapsed = time.perf_counter() - started
    await runtime.relay.stop()
    await consumer.stop()
    await consumer_bus.close()
    await runtime.bus.close()
    await runtime.mongo.drop_database(settings.database_name)
    await runtime.mongo.close()
    return n / elapsed, writes_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=3000)
    args = parser.parse_args()
    base = run_dir() / f"bench-bus-{os.getpid()}"
    servers = ServerSet.for_dir(base, rabbit_name=f"benchbus{os.getpid()}")
    print("bench-bus: starting servers" if not servers.external else "bench-bus: using given servers")
    servers.start()
    try:
        raw = asyncio.run(raw_baseline(servers.amqp_url, args.events))
        ours, _ = asyncio.run(orgdir_path(servers.amqp_url, servers.mongodb_url, args.events))
    finally:
        servers.stop()
        shutil.rmtree(base, ignore_errors=True)
    print(f"\nbench-bus ({args.events} events, 2 cores, RabbitMQ quorum queues, mongo-java-server)")
    print(f"  raw aio-pika publish(confirm)+consume(ack): {raw:8,.0f} msg/s")
    print(f"  orgdir relay → broker → consumer:           {ours:8,.0f} events/s")
    print(f"  ratio orgdir/raw:                           {ours / raw:8.2f}")


if __name__ == "__main__":
    main()
