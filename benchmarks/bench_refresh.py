"""bench-refresh: events/s of ``POST /api/v1/refresh``'s job for N persons to one queue.

N person aggregates (registry's document shape: a timeline slice with
addresses, one registration) are stored directly; then the platform's
``Refresher`` streams them (cursor by ``_id``), publishes each one's
``person.created`` state event through the default exchange to one quorum
queue with publisher confirms a batch at a time, checkpoints after every
batch, and sends ``refresh.completed``. The figure is N / (job start → job
completed); the queue's depth is checked afterwards (N + 1).

Usage: ``python benchmarks/bench_refresh.py [--persons N] [--batch B]``. Uses
AMQP_URL / MONGODB_URL when set, else starts private servers under .run/.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import time
import uuid
from datetime import UTC, datetime

import aio_pika

import orgdir.contracts  # noqa: F401  (registers person.created and refresh.completed)
from orgdir.refresh import RefreshIn
from orgdir.service import Runtime
from orgdir.settings import Settings
from orgdir_tools.localservers import ServerSet, run_dir


def person(i: int) -> dict[str, object]:
    uid = str(uuid.UUID(int=i + 1))
    now = datetime.now(UTC)
    state = {
        "timeline": [{
            "validity": {"from": "2015-01-01", "to": None},
            "given_name": f"Person{i}", "surname": "Østergård-Jensen", "nickname": None, "user_key": f"P{i:06d}",
            "addresses": [{"scope": "email", "value": f"p{i}@kommune.dk", "address_type": None},
                          {"scope": "phone", "value": f"+45 {10000000 + i}", "address_type": None}],
        }],
        "has_cpr": True,
        "cpr_hash": "ab" * 32,
    }
    registration = {"version": 1, "registered_at": now, "registered_by": "bench", "event_type": "person.created",
                    "note": None, "state": state}
    return {"_id": uid, "version": 1, "state": state, "next_transition_at": None, "created_at": now,
            "updated_at": now, "outbox": [], "registrations": [registration]}


async def run(amqp_url: str, mongodb_url: str, n: int, batch: int) -> float:
    ns = f"bench{uuid.uuid4().hex[:6]}"
    settings = Settings.model_validate({
        "service_name": "registry", "amqp_url": amqp_url, "mongodb_url": mongodb_url, "database": f"{ns}_registry",
        "exchange": f"{ns}.events", "queue_prefix": f"{ns}.", "declare_topology": False, "refresh_batch": batch,
    })
    runtime = Runtime(settings)
    repo = runtime.repository("persons")
    await runtime.bus.connect()
    for i in range(0, n, 2000):
        await repo.col.insert_many([person(j) for j in range(i, min(i + 2000, n))])
    conn = await aio_pika.connect(amqp_url)
    channel = await conn.channel()
    queue = await channel.declare_queue(f"{ns}.vendor", durable=True, arguments={"x-queue-type": "quorum"})
    try:
        started = time.perf_counter()
        job = await runtime.refresher.submit(RefreshIn(queue=queue.name), "bench")
        await runtime.refresher.wait(job.id)
        elapsed = time.perf_counter() - started
        status = await runtime.refresher.status(job.id)
        depth = (await channel.declare_queue(queue.name, passive=True)).declaration_result.message_count
        assert status.state == "completed" and status.published == n, status
        assert depth == n + 1, f"queue holds {depth}, expected {n + 1}"
        return n / elapsed
    finally:
        await queue.delete(if_unused=False, if_empty=False)
        await conn.close()
        await runtime.bus.close()
        await runtime.mongo.drop_database(settings.database_name)
        await runtime.mongo.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--persons", type=int, default=30000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    base = run_dir() / f"bench-refresh-{os.getpid()}"
    servers = ServerSet.for_dir(base, rabbit_name=f"benchrefresh{os.getpid()}")
    print("bench-refresh: starting servers" if not servers.external else "bench-refresh: using given servers")
    servers.start()
    try:
        rate = asyncio.run(run(servers.amqp_url, servers.mongodb_url, args.persons, args.batch))
    finally:
        servers.stop()
        shutil.rmtree(base, ignore_errors=True)
    print(f"\nbench-refresh ({args.persons} persons to one quorum queue, batch {args.batch}, 2 cores, "
          "mongo-java-server)")
    print(f"  refresh job (stream, publish with confirms, checkpoints, marker): {rate:8,.0f} events/s")


if __name__ == "__main__":
    main()
