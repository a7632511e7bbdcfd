"""bench-access: moving a subtree with 2,000 engaged people publishes exactly the changed rights.

Runs the access-rights app under uvicorn in this process on a free port, feeds
it orgunits/registry contract events over RabbitMQ (as those services would),
gives the subtree a role through its parent, then moves the subtree under
another parent that carries another role. Prints the time from the move event
to the last resulting access event, events/s, and the revocation latency
(p50/p99, exact from the events and from the exported histogram).

Usage: ``python benchmarks/bench_access.py [--people N] [--units N]``; the default is the
issue's 2,000 people (about a minute in all on mongo-java-server, 2 cores). Uses
AMQP_URL / MONGODB_URL when set, else starts private servers under .run/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import aio_pika
import httpx
import uvicorn

from access_rights.app import create_app
from access_rights.settings import AccessRightsSettings
from orgdir import metrics
from orgdir.bus import Bus, declare_exchanges
from orgdir.clock import SystemClock
from orgdir.events import CloudEvent, is_current, new_event
from orgdir_tools.localservers import ServerSet, free_port, run_dir

HEADERS = {"Authorization": "Bearer dev-admin"}


class Recorder:
    """Every event on the exchange with its arrival time."""

    def __init__(self, amqp_url: str, exchange: str) -> None:
        self.amqp_url, self.exchange = amqp_url, exchange
        self.events: list[tuple[float, CloudEvent]] = []

    async def start(self) -> None:
        self.conn = await aio_pika.connect(self.amqp_url)
        ch = await self.conn.channel()
        await ch.set_qos(prefetch_count=1000)
        await declare_exchanges(ch, self.exchange)
        q = await ch.declare_queue(exclusive=True, auto_delete=True)
        for key in ("access.*", "account.*"):
            await q.bind(self.exchange, routing_key=key)
        await q.consume(self.on_message, no_ack=True)

    async def on_message(self, m: aio_pika.abc.AbstractIncomingMessage) -> None:
        event = CloudEvent.model_validate(json.loads(m.body))
        if is_current(event):  # not the previous dataversion's copy of the same change (events.side_by_side)
            self.events.append((time.time(), event))

    async def wait(self, count: int, wait_s: float) -> None:
        """Until ``count`` events have arrived; progress every 10 s."""
        deadline = time.monotonic() + wait_s
        report = time.monotonic() + 10
        while len(self.events) < count:
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError(f"saw {len(self.events)} of {count} events")
            if now > report:
                print(f"  … {len(self.events):,}/{count:,} access/account events", flush=True)
                report = now + 10
            await asyncio.sleep(0.02)


def quantile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def histogram_quantile(q: float) -> float:
    """Estimate a quantile from the exported histogram's buckets (upper bound)."""
    buckets: list[tuple[float, float]] = []
    count = 0.0
    for metric in metrics.REVOCATION_LATENCY.collect():
        for s in metric.samples:
            if s.name.endswith("_bucket"):
                buckets.append((float(s.labels["le"]), s.value))
            elif s.name.endswith("_count"):
                count = s.value
    for le, cum in sorted(buckets):
        if count and cum >= q * count:
            return le
    return float("nan")


async def run(amqp_url: str, mongodb_url: str, people: int, units: int) -> None:
    ns = f"bench{uuid.uuid4().hex[:6]}"
    settings = AccessRightsSettings.model_validate(
        {
            "mongodb_url": mongodb_url,
            "amqp_url": amqp_url,
            "database": f"{ns}_access",
            "exchange": f"{ns}.events",
            "queue_prefix": f"{ns}.",
            "relay_sweep_seconds": 30.0,
            "mass_revoke_threshold": people * 2,
            "log_level": "WARNING",
            # the dev tokens, explicitly (as orgdir_tools.testkit.settings_for gives the tests)
            "auth_mode": "static",
            "allow_static_tokens": True,
        }
    )
    port = free_port()
    app = create_app(settings, SystemClock(settings.timezone))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    await app.state.runtime.consumers_ready(60)  # queues bound before the first event
    rec = Recorder(amqp_url, settings.exchange)
    await rec.start()
    bus = Bus(settings)
    await bus.connect()
    today = SystemClock().today()
    seq: dict[str, int] = {}

    async def emit(kind: str, uid: str, state: dict[str, Any], verb: str = "created") -> CloudEvent:
        seq[uid] = seq.get(uid, 0) + 1
        event = new_event(
            service="bench",
            type=f"{kind}.{verb}",
            subject=uid,
            sequence=seq[uid],
            data={**state, "uuid": uid, "version": seq[uid]},
        )
        await bus.publish(event)
        return event

    def unit(
        name: str,
        parent: str | None,
        start: str = "2000-01-01",
        end: str | None = None,
    ) -> dict[str, Any]:
        return {
            "validity": {"from": start, "to": end},
            "user_key": name,
            "name": name,
            "parent": parent,
        }

    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=HEADERS, timeout=600)
    try:
        print(f"setting up: {units} units, {people} engaged people in the subtree (+100 outside) …")
        t = time.perf_counter()
        await emit(
            "class",
            "jf",
            {
                "facet": "job_function",
                "facet_uuid": "f",
                "timeline": [
                    {"validity": {"from": "2000-01-01"}, "user_key": "jf", "name": "Medarbejder"}
                ],
            },
        )
        for name, parent in (("root", None), ("A", "root"), ("B", "root"), ("S", "A")):
            await emit("orgunit", name, {"timeline": [unit(name, parent)]})
        leaves = [f"S-{i}" for i in range(units)]
        for leaf in leaves:
            await emit("orgunit", leaf, {"timeline": [unit(leaf, "S")]})
        everyone = [(f"p{i:05d}", leaves[i % units]) for i in range(people)] + [
            (f"q{i:05d}", "B") for i in range(100)
        ]
        for i, (p, u) in enumerate(everyone):
            await emit(
                "person",
                p,
                {
                    "timeline": [
                        {
                            "validity": {"from": "1970-01-01"},
                            "given_name": f"Navn{i}",
                            "surname": "Jensen",
                        }
                    ]
                },
            )
            await emit(
                "engagement",
                f"e-{p}",
                {
                    "person": p,
                    "unit": u,
                    "timeline": [
                        {
                            "validity": {"from": "2020-01-01"},
                            "person": p,
                            "unit": u,
                            "job_function": "jf",
                            "engagement_type": "et",
                        }
                    ],
                },
            )
        service = app.state.access
        report = time.monotonic() + 10
        while len(service.org.engagements) < len(everyone) or len(service.org.units) < units + 4:
            if time.monotonic() > report:
                print(f"  … {len(service.org.engagements):,}/{len(everyone):,} engagements projected", flush=True)
                report = time.monotonic() + 10
            await asyncio.sleep(0.1)
        for body in (
            (
                "PUT",
                "/api/v1/it-systems/ad",
                {
                    "validity": {"from": "2000-01-01"},
                    "user_key": "AD",
                    "name": "AD",
                    "grace_days": 30,
                },
            ),
            (
                "PUT",
                "/api/v1/roles/role-a",
                {"validity": {"from": "2000-01-01"}, "it_system": "ad", "name": "A-drev"},
            ),
            (
                "PUT",
                "/api/v1/roles/role-b",
                {"validity": {"from": "2000-01-01"}, "it_system": "ad", "name": "B-drev"},
            ),
            (
                "PUT",
                "/api/v1/assignments/as-a",
                {
                    "validity": {"from": "2000-01-01"},
                    "role": "role-a",
                    "unit": "A",
                    "inherit": True,
                },
            ),
            (
                "PUT",
                "/api/v1/assignments/as-b",
                {
                    "validity": {"from": "2000-01-01"},
                    "role": "role-b",
                    "unit": "B",
                    "inherit": True,
                },
            ),
        ):
            r = await client.request(body[0], body[1], json=body[2])
            assert r.status_code in (200, 201), r.text
        setup_events = 2 * (people + 100)  # one grant and one account request each
        await rec.wait(setup_events, wait_s=600)
        print(f"  setup done in {time.perf_counter() - t:.1f}s ({len(rec.events)} events)")

        before = len(rec.events)
        state = {
            "timeline": [
                unit("S", "A", end=today.isoformat()),
                unit("S", "B", start=today.isoformat()),
            ]
        }
        believed = datetime.now(UTC).isoformat()  # for the transaction-time reads below
        t0 = time.time()
        move = await emit("orgunit", "S", state, verb="moved")
        expected = 2 * people
        await rec.wait(before + expected, wait_s=600)
        await asyncio.sleep(2.0)  # anything extra would show up here
        got = rec.events[before:]
        last = max(at for at, _ in got)
        granted = [e for _, e in got if e.type == "access.granted"]
        revoked = [e for _, e in got if e.type == "access.revoked"]
        others = [e for _, e in got if e.type not in ("access.granted", "access.revoked")]
        exact = (
            len(granted) == people
            and len(revoked) == people
            and not others
            and {e.data["role"] for e in granted} == {"role-b"}
            and {e.data["role"] for e in revoked} == {"role-a"}
            and all(e.subject.startswith("p") for _, e in got)
        )
        latencies = [
            at - datetime.fromisoformat(e.data["effective_at"]).timestamp()
            for at, e in got
            if e.type == "access.revoked"
        ]
        elapsed = last - t0
        print(f"move of a subtree with {people} engaged people ({units} units):")
        print(
            f"  events: {len(granted)} access.granted, {len(revoked)} access.revoked, "
            f"{len(others)} other; exactly the changed rights: {'yes' if exact else 'NO'}"
        )
        print(f"  move event → last resulting event: {elapsed:.2f}s")
        print(f"  throughput: {len(got) / elapsed:.0f} events/s")
        print(f"  revocation latency (effective instant = move write {move.time:%H:%M:%S}):")
        print(
            f"    from events:   p50 {quantile(latencies, 0.5):.2f}s"
            f"  p99 {quantile(latencies, 0.99):.2f}s"
            f"  max {max(latencies):.2f}s"
        )
        print(
            "    histogram orgdir_access_revocation_latency_seconds:"
            f" p50 ≤ {histogram_quantile(0.5)}s"
            f"  p99 ≤ {histogram_quantile(0.99)}s"
        )
        # ?registered_at=: each read rebuilds the read model from the arrival logs and registrations.
        person = everyone[0][0]
        for path in (f"/api/v1/persons/{person}/rights", "/api/v1/roles/role-a/holders"):
            timings = []
            for _ in range(3):
                started = time.perf_counter()
                r = await client.get(path, params={"registered_at": believed, "limit": 1000})
                timings.append(time.perf_counter() - started)
                assert r.status_code == 200, r.text
            best = min(timings) * 1000
            print(f"  {path.rsplit('/', 1)[-1]} as registered before the move: {best:.0f} ms (best of 3)")
        print(f"  (measured at {datetime.now(UTC):%Y-%m-%d %H:%M} UTC)")
    finally:
        await client.aclose()
        await bus.close()
        await rec.conn.close()
        server.should_exit = True
        await serving
        client2 = __import__("pymongo").MongoClient(mongodb_url)
        client2.drop_database(f"{ns}_access")
        client2.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--people", type=int, default=2000)
    parser.add_argument("--units", type=int, default=20)
    args = parser.parse_args()
    if os.environ.get("AMQP_URL") and os.environ.get("MONGODB_URL"):
        asyncio.run(run(os.environ["AMQP_URL"], os.environ["MONGODB_URL"], args.people, args.units))
        return
    base = run_dir() / f"bench-access-{os.getpid()}"
    servers = ServerSet.for_dir(base, rabbit_name=f"benchacc{os.getpid()}")
    servers.start()
    try:
        asyncio.run(run(servers.amqp_url, servers.mongodb_url, args.people, args.units))
    finally:
        servers.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
