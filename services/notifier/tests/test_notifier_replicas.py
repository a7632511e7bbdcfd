"""Two notifier replicas on one database and one broker: each event delivered once, in order.

``notifier.all`` is single-active (one replica records deliveries, another
takes over when it goes); every replica runs delivery workers, and a
delivery is sent only under a lease taken by a conditional write.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import time
import uuid
from collections import Counter
from typing import Any

import aio_pika

from notifier.app import create_app
from notifier.service import Notifier
from orgdir_tools.testkit import RunningApp, eventually


def secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def uid() -> str:
    return str(uuid.uuid4())


def core(app: RunningApp) -> Notifier:
    c: Notifier = app.app.state.notifier
    return c


async def subscribe(app: RunningApp, url: str, s: str, **kw: Any) -> str:
    body = {"name": "target", "url": url, "secret": s, "event_types": ["person.*"], **kw}
    r = await app.http.post("/api/v1/subscriptions", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["uuid"])


async def person(pub: Any, pid: str, i: int) -> Any:
    timeline = [{"validity": {"from": "2020-01-01", "to": None}, "given_name": f"v{i}", "surname": "J"}]
    kind = "person.updated" if f"person:{pid}" in pub.versions else "person.created"
    return await pub.publish(kind, pid, {"timeline": timeline})


async def dead_letters(amqp_url: str, queue: str) -> int:
    conn = await aio_pika.connect(amqp_url)
    try:
        channel = await conn.channel()
        q = await channel.declare_queue(f"{queue}.dead", passive=True)
        return int(q.declaration_result.message_count or 0)
    finally:
        await conn.close()


async def active(apps: list[RunningApp]) -> RunningApp:
    """The replica that handles ``notifier.all`` now (it recorded the holder in the database)."""
    doc = await apps[0].runtime.db["_holders"].find_one({"_id": apps[0].runtime.settings.queue("all")})
    assert doc is not None
    return next(a for a in apps if a.runtime.replica == doc["replica"])


async def first_of_two(stack: contextlib.AsyncExitStack, settings: Any) -> tuple[Any, RunningApp, RunningApp]:
    """Two replicas, ``a`` started first (so RabbitMQ makes it the active consumer); ``stop_a()``
    stops it (gracefully) mid-test, once."""
    a = await stack.enter_async_context(Once(RunningApp(create_app(settings))))
    b = await stack.enter_async_context(RunningApp(create_app(settings)))
    return a.close, a.app, b


class Once:
    """An app context that may be left early, and is left exactly once."""

    def __init__(self, app: RunningApp) -> None:
        self.app = app
        self.open = False

    async def __aenter__(self) -> Once:
        await self.app.__aenter__()
        self.open = True
        return self

    async def close(self) -> None:
        if self.open:
            self.open = False
            await self.app.__aexit__(None, None, None)

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def assert_in_order(rcv: Any, subjects: list[str], versions: int) -> None:
    for p in subjects:
        assert [e["sequence"] for e in rcv.of_subject(p)] == list(range(1, versions + 1)), p


async def test_two_replicas_every_event_once_in_order(make_settings, receiver, publisher) -> None:
    """(a) A subscription created through the replica that does not handle the queue; events
    recorded by the other one; each arrives exactly once, in order per subject."""
    s = secret()
    rcv = receiver(s)
    settings = make_settings()
    async with RunningApp(create_app(settings)) as b, RunningApp(create_app(settings)) as a:
        # b subscribed to notifier.all first: RabbitMQ made it the active consumer.
        started = time.monotonic()
        sid = await subscribe(a, rcv.url, s)
        await eventually(
            lambda: sid in core(b).subs and sid in core(b).dispatcher.workers, within=2, interval=0.01
        )
        seen_by_b = time.monotonic() - started
        assert seen_by_b < 1.0
        r = await b.http.get(f"/api/v1/subscriptions/{sid}")  # any replica reads it
        assert r.status_code == 200 and r.json()["version"] == 1

        subjects = [uid() for _ in range(8)]
        versions = 12
        sent = []
        for i in range(versions):
            for p in subjects:
                sent.append(await person(publisher, p, i))
        await eventually(lambda: len(rcv.got) >= len(sent), within=30)
        await asyncio.sleep(0.5)
        assert await active([a, b]) is b
        ids = rcv.ids()
        assert len(set(ids)) == len(sent) and sorted(set(ids)) == sorted(e.id for e in sent)
        twice = [i for i, n in Counter(ids).items() if n > 1]
        assert twice == [], f"{len(twice)} webhook ids arrived more than once"
        assert rcv.bad_signatures == 0, rcv.refusals
        assert_in_order(rcv, subjects, versions)
        for app in (a, b):
            r = await app.http.get("/api/v1/deliveries", params={"status": "pending"})
            assert r.json()["items"] == []
            r = await app.http.get(f"/api/v1/subscriptions/{sid}")
            assert r.json()["status"]["backlog"] == 0

        # A PATCH through one replica reaches the other's worker within moments.
        r = await b.http.patch(f"/api/v1/subscriptions/{sid}", json={"active": False})
        assert r.status_code == 200
        await eventually(lambda: core(a).dispatcher.workers[sid].sub["active"] is False, within=2)

        # The lease: of two replicas claiming one pending delivery at once, exactly one gets it.
        deliveries = core(a).deliveries
        did = f"{sid}:{sent[0].id}"
        await deliveries.col.update_one(
            {"_id": did}, {"$set": {"status": "pending", "owner": None, "lease_until": None}}
        )
        for _ in range(5):
            won = await asyncio.gather(
                deliveries.claim(did, core(a).replica, 30), deliveries.claim(did, core(b).replica, 30)
            )
            assert sum(w is not None for w in won) == 1
            await deliveries.col.update_one({"_id": did}, {"$set": {"owner": None, "lease_until": None}})
        await deliveries.col.update_one({"_id": did}, {"$set": {"status": "delivered"}})
        print(f"\nsubscription created through a, matched by b after {seen_by_b * 1000:.0f} ms")
    assert await dead_letters(settings.amqp_url, settings.queue("all")) == 0


async def test_replica_stops_mid_stream_other_takes_over(
    make_settings, receiver, publisher, amqp_url
) -> None:
    """(b) The replica handling the queue stops while events flow; the other takes over: every
    event arrives, in order per subject, none twice; nothing pending, nothing dead-lettered."""
    s = secret()
    rcv = receiver(s)
    settings = make_settings()
    subjects = [uid() for _ in range(6)]
    versions = 40
    sent: list[Any] = []
    async with contextlib.AsyncExitStack() as stack:
        stop_a, a, b = await first_of_two(stack, settings)
        sid = await subscribe(b, rcv.url, s)
        await eventually(lambda: sid in core(a).subs, within=2)

        async def flow() -> None:
            for i in range(versions):
                for p in subjects:
                    sent.append(await person(publisher, p, i))
                await asyncio.sleep(0.05)

        flowing = asyncio.create_task(flow())
        await eventually(lambda: len(rcv.got) >= 40, within=20)
        assert await active([a, b]) is a
        # the target stumbles: a holds pending deliveries (retrying) when it stops
        rcv.mode = "fail"
        await asyncio.sleep(0.4)
        held = await core(a).deliveries.col.count_documents(
            {"owner": a.runtime.replica, "status": "pending"}
        )
        assert held > 0
        # a stops (graceful) while events are still being published
        in_flight_at_stop = len(sent)
        a_stop = time.monotonic()
        await stop_a()
        stopped_in = time.monotonic() - a_stop
        rcv.mode = "ok"
        assert in_flight_at_stop < len(subjects) * versions, "the stream ended before the stop"
        await flowing
        try:
            await eventually(lambda: len(set(rcv.ids())) >= len(sent), within=30)
        except AssertionError:
            got = set(rcv.ids())
            missing = [(e.subject[:8], e.sequence) for e in sent if e.id not in got]
            raise AssertionError(f"{len(missing)} events never arrived: {missing[:20]}") from None
        await asyncio.sleep(0.5)
        assert await active([b]) is b
        ids = rcv.ids()
        assert sorted(set(ids)) == sorted(e.id for e in sent)
        assert len(ids) == len(set(ids)), Counter(ids).most_common(3)
        assert_in_order(rcv, subjects, versions)

        async def nothing_pending() -> bool:
            r = await b.http.get("/api/v1/deliveries", params={"status": "pending"})
            return r.json()["items"] == []

        await eventually(nothing_pending)
        r = await b.http.get("/api/v1/deliveries", params={"status": "failed"})
        assert r.json()["items"] == []
        print(f"\n{held} pending held by a at its stop (took {stopped_in:.2f} s); {len(sent)} events, "
              f"{len(ids)} webhooks")
    assert await dead_letters(amqp_url, settings.queue("all")) == 0


async def test_crashed_replica_deliveries_taken_over_after_lease(
    make_settings, receiver, publisher, amqp_url
) -> None:
    """A replica that dies holding leases (simulated: it never hands them back) has its
    deliveries sent by the other once the leases run out, each stream still in order."""
    s = secret()
    rcv = receiver(s)
    rcv.mode = "fail"
    settings = make_settings(
        delivery_timeout_seconds=1.0, delivery_lease_seconds=1.0, delivery_sweep_seconds=1.0
    )
    assert settings.lease_seconds == 6.0
    subjects = [uid() for _ in range(4)]
    versions = 5
    sent: list[Any] = []
    async with contextlib.AsyncExitStack() as stack:
        stop_a, a, b = await first_of_two(stack, settings)
        sid = await subscribe(a, rcv.url, s)
        await eventually(lambda: sid in core(b).subs, within=2)
        for i in range(versions):
            for p in subjects:
                sent.append(await person(publisher, p, i))

        async def all_recorded() -> bool:
            return await core(a).deliveries.col.count_documents({"subscription": sid}) == len(sent)

        await eventually(all_recorded)
        await eventually(lambda: len(rcv.seen) >= 4)  # a is failing and retrying, holding leases

        async def crash(owner: str) -> int:
            return 0

        core(a).deliveries.release = crash  # type: ignore[method-assign]  # dies holding leases
        held = await core(a).deliveries.col.count_documents({"owner": a.runtime.replica})
        assert held == len(sent)
        await stop_a()
        crashed = time.monotonic()
        rcv.mode = "ok"
        await eventually(lambda: len(set(rcv.ids())) >= len(sent), within=30)
        took = time.monotonic() - crashed
        assert took >= 2.0  # not before the leases ran out
        await asyncio.sleep(0.3)
        ids = rcv.ids()
        assert sorted(set(ids)) == sorted(e.id for e in sent)
        assert len(ids) == len(set(ids))
        assert_in_order(rcv, subjects, versions)
        owners = await core(b).deliveries.col.distinct("owner", {"subscription": sid})
        assert owners == [None]
        statuses = await core(b).deliveries.col.distinct("status", {"subscription": sid})
        assert statuses == ["delivered"]
        print(f"\ntaken over and delivered {took:.1f} s after the crash")
    assert await dead_letters(amqp_url, settings.queue("all")) == 0
