"""Platform acceptance: outbox, relay, consumers, dead-lettering, outages — on real servers."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
from pymongo.errors import ConnectionFailure

from orgdir.bus import Bus, Consumer, Handler, Router, Routes
from orgdir.events import CloudEvent, new_event
from orgdir.settings import Settings
from orgdir.store import OUTBOX_SINCE, Change, connect
from orgdir_tools.localservers import free_port
from orgdir_tools.testkit import EventCollector, RunningApp, eventually, settings_for
from tests.platform import toy

ROOT = Path(__file__).resolve().parents[2]


def toy_settings(ns: str, amqp_url: str, mongodb_url: str, **kw: Any) -> Settings:
    return settings_for(Settings, ns=ns, service="toy", amqp_url=amqp_url, mongodb_url=mongodb_url, **kw)


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


class ConsumerProcess:
    """The toy consumer in its own OS process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = free_port()
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> ConsumerProcess:
        env = {
            **os.environ,
            "ORGDIR_SERVICE_NAME": "toyconsumer",
            "ORGDIR_AMQP_URL": self.settings.amqp_url,
            "ORGDIR_MONGODB_URL": self.settings.mongodb_url,
            "ORGDIR_DATABASE": self.settings.database_name + "_consumer",
            "ORGDIR_EXCHANGE": self.settings.exchange,
            "ORGDIR_QUEUE_PREFIX": self.settings.queue_prefix,
            "TOY_METRICS_PORT": str(self.port),
            "PYTHONPATH": str(ROOT),
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.platform.toy", "consume"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert "consumer ready" in line, line
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(10)

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.port}/metrics").text


@pytest.fixture
async def consumer_db(ns: str, mongodb_url: str) -> AsyncIterator[Any]:
    client = connect(mongodb_url)
    yield client[f"{ns}_toy_consumer"]
    await client.close()


async def test_write_is_atomic_consumed_once_and_republish_is_skipped_as_stale(
    ns: str, amqp_url: str, mongodb_url: str, consumer_db: Any
) -> None:
    settings = toy_settings(ns, amqp_url, mongodb_url)
    with ConsumerProcess(settings) as consumer:
        app = toy.create(settings)
        async with RunningApp(app) as running:
            # Stop the relay so we can look at the stored document before anything is published.
            await running.runtime.relay.stop()
            r = await running.http.post("/api/v1/widgets", json={"name": "Økonomi"})
            assert r.status_code == 201, r.text
            uid = r.json()["uuid"]
            doc = await running.runtime.db.widgets.find_one({"_id": uid})
            assert doc["state"] == {"name": "Økonomi"} and doc["version"] == 1
            assert [e["type"] for e in doc["outbox"]] == ["widget.created"]
            assert doc["outbox"][0]["sequence"] == 1 and doc["outbox"][0]["subject"] == uid

            # A relay that died between publish and removal: the event went out, the outbox kept it.
            await running.runtime.bus.publish(CloudEvent.model_validate(doc["outbox"][0]))
            event_id = doc["outbox"][0]["id"]
            await eventually(lambda: consumer_db.applied.find_one({"_id": event_id}))

            # The next relay publishes it again, then removes it.
            running.runtime.relay.start()
            await running.settle()
            assert (await running.runtime.db.widgets.find_one({"_id": uid}))["outbox"] == []

            def stale() -> float:
                return metric(
                    consumer.metrics(), "orgdir_events_consumed_total", outcome="stale", type="widget.created"
                )

            async def stale_seen() -> bool:
                return await asyncio.to_thread(stale) == 1

            await eventually(stale_seen)
            applied = await consumer_db.applied.find_one({"_id": event_id})
            assert applied["count"] == 1, "the redelivered event had an effect twice"
            assert metric(consumer.metrics(), "orgdir_events_consumed_total", outcome="ok", type="widget.created") == 1

            # A later change reaches the consumer once, in order.
            r = await running.http.patch(f"/api/v1/widgets/{uid}", json={"name": "Økonomi og Løn"})
            assert r.json()["version"] == 2
            await eventually(lambda: consumer_db.names.find_one({"_id": uid, "seq": 2}))
            assert (await consumer_db.names.find_one({"_id": uid}))["name"] == "Økonomi og Løn"


async def test_writes_succeed_while_broker_is_down_and_all_events_arrive_after(
    ns: str, mongodb_url: str, private_rabbit: Any, consumer_db: Any
) -> None:
    node = private_rabbit()
    # No sweep during the test: the backlog a scrape shows is counted for that scrape.
    settings = toy_settings(ns, node.url, mongodb_url, relay_sweep_seconds=3600)
    with ConsumerProcess(settings) as consumer:
        async with RunningApp(toy.create(settings)) as running:
            await asyncio.to_thread(node.stop)
            uids = []
            for i in range(20):
                r = await running.http.post("/api/v1/widgets", json={"name": f"unit {i}"})
                assert r.status_code == 201, r.text
                uids.append(r.json()["uuid"])
            scrape = (await running.http.get("/metrics")).text
            assert metric(scrape, "orgdir_outbox_backlog", service="toy") == 20

            async def broker_not_ready() -> bool:
                ready = await running.http.get("/readyz")
                return ready.status_code == 503 and ready.json()["checks"]["broker"] is False

            await eventually(broker_not_ready, within=10)

            await asyncio.to_thread(node.restart)

            async def all_applied() -> bool:
                return await consumer_db.names.count_documents({}) == 20

            await eventually(all_applied, within=60)

            async def unmarked() -> bool:  # before any sweep (``settle`` sweeps): the pulls alone
                return await running.runtime.db["widgets"].count_documents({OUTBOX_SINCE: {"$exists": True}}) == 0

            # The pull that emptied each outbox cleared its mark too: no sweep has to write it again.
            await eventually(unmarked, within=30)
            await running.settle(20)
            counts = [d["count"] async for d in consumer_db.applied.find({})]
            assert len(counts) == 20 and set(counts) == {1}

            async def backlog_scraped(n: float) -> bool:
                await asyncio.sleep(1.1)  # past the recount throttle
                return metric((await running.http.get("/metrics")).text, "orgdir_outbox_backlog", service="toy") == n

            await eventually(lambda: backlog_scraped(0), within=30)  # the last pulls are asynchronous
        assert consumer.proc is not None


async def test_database_outage_gives_503_problem_and_recovers(ns: str, amqp_url: str, private_mongo: Any) -> None:
    server = private_mongo(backend="h2")  # an outage, not a wipe: the data is back after the restart
    settings = toy_settings(ns, amqp_url, server.url, mongo_timeout_ms=800)
    async with RunningApp(toy.create(settings)) as running:
        assert (await running.http.get("/readyz")).status_code == 200
        await asyncio.to_thread(server.stop)
        ready = await running.http.get("/readyz")
        assert ready.status_code == 503
        assert ready.headers["content-type"].startswith("application/problem+json")
        assert ready.json()["checks"]["database"] is False
        r = await running.http.post("/api/v1/widgets", json={"name": "x"})
        assert r.status_code == 503
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["type"] == "urn:orgdir:problem:service-unavailable"
        await asyncio.to_thread(server.restart)

        async def works() -> bool:
            return (await running.http.post("/api/v1/widgets", json={"name": "y"})).status_code == 201

        await eventually(works, within=30, interval=0.5)
        assert (await running.http.get("/readyz")).status_code == 200


async def _dead_messages(amqp_url: str, queue: str, count: int, timeout: float = 20) -> list[Any]:
    conn = await aio_pika.connect(amqp_url)
    try:
        channel = await conn.channel()
        q = await channel.declare_queue(queue, passive=True)
        got: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            msg = await q.get(no_ack=True, fail=False)
            if msg is None:
                await asyncio.sleep(0.1)
            else:
                got.append(msg)
        return got
    finally:
        await conn.close()


async def publish_widgets(bus: Bus, prefix: str, names: list[str]) -> None:
    """One ``widget.created`` per name, subjects ``<prefix>0``, ``<prefix>1`` …"""
    for i, name in enumerate(names):
        subject = f"{prefix}{i}"
        data = {"uuid": subject, "version": 1, "name": name}
        await bus.publish(new_event(service="toy", type="widget.created", subject=subject, sequence=1, data=data))


async def test_failing_handler_dead_letters_after_limit_and_queue_keeps_flowing(ns: str, amqp_url: str) -> None:
    settings = toy_settings(ns, amqp_url, "mongodb://unused/", delivery_limit=3)
    bus = Bus(settings)
    await bus.connect()
    attempts: dict[str, int] = {}
    handled: list[str] = []
    router = Router()

    @router.on("widget.*")
    async def handle(event: CloudEvent, data: toy.WidgetState) -> None:
        attempts[data.name] = attempts.get(data.name, 0) + 1
        if data.name == "poison":
            raise ValueError("cannot handle poison widgets")
        handled.append(data.name)

    consumer = Consumer(bus, "flaky", router)
    await consumer.start()
    try:
        await publish_widgets(bus, "s", ["poison", "good-1", "good-2"])
        dead = await _dead_messages(amqp_url, f"{ns}.toy.flaky.dead", 1)
        assert len(dead) == 1
        assert json.loads(dead[0].body)["data"]["name"] == "poison"
        assert "cannot handle poison widgets" in dead[0].headers["x-orgdir-error"]
        assert "failed 3 times" in dead[0].headers["x-orgdir-error"]
        assert attempts["poison"] == 3
        await eventually(lambda: asyncio.sleep(0, result=sorted(handled) == ["good-1", "good-2"]))
    finally:
        await consumer.stop()
        await bus.close()


async def test_database_outage_holds_messages_instead_of_dead_lettering_them(ns: str, amqp_url: str) -> None:
    """Seen in the chaos test: a 10 s database outage used up a message's attempts and left a dead letter."""
    settings = toy_settings(ns, amqp_url, "mongodb://unused/", delivery_limit=3, retry_delay_seconds=0.02)
    bus = Bus(settings)
    await bus.connect()
    calls: list[tuple[str, int]] = []
    router = Router()

    @router.on("widget.*")
    async def handle(event: CloudEvent, data: toy.WidgetState) -> None:
        calls.append((data.name, len(calls)))
        if data.name == "during-outage" and sum(1 for n, _ in calls if n == data.name) <= 6:
            raise ConnectionFailure("database not reachable")  # twice the delivery limit
        if data.name == "broken":
            raise ValueError("a real bug")

    consumer = Consumer(bus, "outage", router)
    await consumer.start()
    try:
        await publish_widgets(bus, "o", ["during-outage", "broken"])
        dead = await _dead_messages(amqp_url, f"{ns}.toy.outage.dead", 1)
        assert [json.loads(m.body)["data"]["name"] for m in dead] == ["broken"]  # a real failure still ends there
        await eventually(lambda: asyncio.sleep(0, result=[n for n, _ in calls].count("during-outage") == 7))
        assert await _dead_messages(amqp_url, f"{ns}.toy.outage.dead", 1, timeout=1) == []
    finally:
        await consumer.stop()
        await bus.close()


class CountingTakeover:
    """A holder record kept in the test: ``taken_by_other`` makes the next check find another replica."""

    def __init__(self) -> None:
        self.checks = 0
        self.taken_by_other = False

    async def claim(self) -> bool:
        self.checks += 1
        await asyncio.sleep(0.02)  # a database round trip, slow enough for messages to arrive meanwhile
        other, self.taken_by_other = self.taken_by_other, False
        return other


async def test_a_single_active_consumer_checks_its_hold_once_per_channel_and_reloads_on_takeover(
    ns: str, amqp_url: str
) -> None:
    """Two replicas on one single-active queue. The active one checks its hold once for everything its
    channel brings (RabbitMQ moves the queue only when that channel's consumer goes away); the other,
    handed the queue when the first stops, checks before its first message and reloads first."""
    settings = toy_settings(ns, amqp_url, "mongodb://unused/")
    logs: dict[str, list[str]] = {"a": [], "b": []}
    takeovers = {"a": CountingTakeover(), "b": CountingTakeover()}
    buses, consumers = {}, {}
    for replica in ("a", "b"):  # a starts first: the broker makes it the active consumer
        router = Router()
        log = logs[replica]

        async def handle(event: CloudEvent, data: toy.WidgetState, log: list[str] = log) -> None:
            log.append(data.name)

        async def reload(log: list[str] = log) -> None:
            log.append("reload")

        router.on("widget.*")(handle)
        buses[replica] = Bus(settings)
        await buses[replica].connect()
        consumers[replica] = Consumer(
            buses[replica], "single", router, takeover=takeovers[replica], on_takeover=reload
        )
        await consumers[replica].start()
    try:
        for burst in range(4):  # bursts apart: before, each burst made reads of its own
            await publish_widgets(buses["a"], f"b{burst}", [f"w{burst}.{i}" for i in range(50)])
            await eventually(lambda burst=burst: asyncio.sleep(0, result=len(logs["a"]) == 50 * (burst + 1)))
        assert logs["b"] == [] and takeovers["a"].checks == 1 and takeovers["b"].checks == 0

        takeovers["b"].taken_by_other = True  # a's record: b finds another replica held the queue
        await consumers["a"].stop()
        await publish_widgets(buses["a"], "c", ["after-takeover", *(f"x{i}" for i in range(20))])
        await eventually(lambda: asyncio.sleep(0, result=len(logs["b"]) == 22))
        assert logs["b"][:2] == ["reload", "after-takeover"]
        assert takeovers["b"].checks == 1
    finally:
        for replica in ("a", "b"):
            await consumers[replica].stop()
            await buses[replica].close()


async def test_a_takeover_whose_reload_fails_reloads_before_the_next_message(ns: str, amqp_url: str) -> None:
    """The claim already names this replica when the reload fails; the message is retried, and the
    reload is still owed: the next check runs it although the claim finds nothing new."""
    settings = toy_settings(ns, amqp_url, "mongodb://unused/", retry_delay_seconds=0.05)
    takeover = CountingTakeover()
    takeover.taken_by_other = True
    log: list[str] = []

    async def handle(event: CloudEvent, data: toy.WidgetState) -> None:
        log.append(data.name)

    async def reload() -> None:
        if "reload failed" not in log:
            log.append("reload failed")
            raise RuntimeError("the database went away during the reload")
        log.append("reload")

    async with consuming(settings, "owed", handle, takeover=takeover, on_takeover=reload) as bus:
        await publish_widgets(bus, "o", ["first"])
        await eventually(lambda: asyncio.sleep(0, result="first" in log))
        assert log == ["reload failed", "reload", "first"]
        assert takeover.checks == 2


@contextlib.asynccontextmanager
async def consuming(settings: Settings, name: str, handle: Handler, **options: Any) -> AsyncIterator[Bus]:
    """A connected bus with a started consumer ``name`` of ``widget.*``; both closed after."""
    bus = Bus(settings)
    await bus.connect()
    router = Router()
    router.on("widget.*")(handle)
    consumer = Consumer(bus, name, router, **options)
    await consumer.start()
    try:
        yield bus
    finally:
        await consumer.stop()
        await bus.close()


async def test_an_ordered_queue_never_lets_a_later_event_overtake_one_held_through_an_outage(
    ns: str, amqp_url: str
) -> None:
    """Seen in the chaos test: the notifier held a grant through the database outage, the revocation
    behind it went first, and the grant, now stale, was never delivered. With ``in_order`` a stream's
    later event waits for the held one; other streams go on meanwhile."""
    settings = toy_settings(ns, amqp_url, "mongodb://unused/", retry_delay_seconds=0.02)
    handled: list[str] = []

    async def handle(event: CloudEvent, data: toy.WidgetState) -> None:
        name = f"{event.subject}v{event.sequence}"
        if name == "sv1" and "tv1" not in handled:  # the database is away until the other stream went on
            raise ConnectionFailure("database not reachable")
        handled.append(name)

    ordered = {"takeover": CountingTakeover(), "on_takeover": lambda: asyncio.sleep(0), "in_order": lambda e: e.subject}
    async with consuming(settings, "ordered", handle, **ordered) as bus:
        for subject, sequence in [("s", 1), ("s", 2), ("t", 1)]:
            data = {"uuid": subject, "version": sequence, "name": f"{subject}{sequence}"}
            await bus.publish(new_event(service="toy", type="widget.updated", subject=subject, sequence=sequence,
                                        data=data))
        await eventually(lambda: asyncio.sleep(0, result=len(handled) == 3))
        assert handled == ["tv1", "sv1", "sv2"]


def test_only_a_single_active_queue_can_be_handled_in_order() -> None:
    with pytest.raises(ValueError, match="single-active"):
        Routes("toy", "competing", in_order=lambda e: e.subject)


async def test_malformed_messages_are_dead_lettered_with_a_reason(ns: str, amqp_url: str) -> None:
    settings = toy_settings(ns, amqp_url, "mongodb://unused/")
    handled: list[str] = []

    async def handle(event: CloudEvent, data: toy.WidgetState) -> None:
        handled.append(data.name)

    async with consuming(settings, "strict", handle):
        conn = await aio_pika.connect(amqp_url)
        channel = await conn.channel()
        exchange = await channel.get_exchange(settings.exchange)
        good = new_event(
            service="toy",
            type="widget.created",
            subject="ok",
            sequence=1,
            data={"uuid": "ok", "version": 1, "name": "fine"},
        )
        wrong_data = good.model_copy(update={"id": "x2", "data": {"uuid": "ok", "name": 3}})
        await exchange.publish(aio_pika.Message(b"{not json"), routing_key="widget.created")
        await exchange.publish(aio_pika.Message(b'{"specversion": "1.0"}'), routing_key="widget.updated")
        await exchange.publish(aio_pika.Message(wrong_data.body()), routing_key="widget.created")
        unknown = json.loads(good.body())
        unknown["type"] = "widget.exploded"
        await exchange.publish(aio_pika.Message(json.dumps(unknown).encode()), routing_key="widget.exploded")
        await exchange.publish(aio_pika.Message(good.body()), routing_key="widget.created")
        await conn.close()

        dead = await _dead_messages(amqp_url, f"{ns}.toy.strict.dead", 4)
        reasons = sorted(m.headers["x-orgdir-error"] for m in dead)
        assert len(reasons) == 4, reasons
        assert any("not JSON" in r for r in reasons)
        assert any("not an Orgdir CloudEvent" in r for r in reasons)
        assert any("data does not match widget.created" in r for r in reasons)
        assert any("unknown event type 'widget.exploded'" in r for r in reasons)
        await eventually(lambda: asyncio.sleep(0, result=handled == ["fine"]))


async def test_write_conflicts_and_change_model(ns: str, amqp_url: str, mongodb_url: str) -> None:
    settings = toy_settings(ns, amqp_url, mongodb_url)
    async with RunningApp(toy.create(settings)) as running:
        repo = running.runtime.repositories["widgets"]
        await repo.insert("w1", Change({"name": "a"}, "widget.created"))
        await repo.update("w1", 1, Change({"name": "b"}, "widget.updated"))
        from orgdir.store import StaleVersion

        with pytest.raises(StaleVersion):
            await repo.update("w1", 1, Change({"name": "c"}, "widget.updated"))
        history = await repo.history("w1")
        assert [h["version"] for h in history] == [1, 2]
        assert history[1]["state"] == {"name": "b"}
        await running.settle()  # versions 1 and 2 are out before the collector listens
        async with EventCollector(amqp_url, settings.exchange) as events:
            await repo.update("w1", 2, Change({"name": "d"}, "widget.updated"))
            got = await events.wait_type("widget.updated")
            assert got[0].sequence == 3 and got[0].data["name"] == "d"


async def test_topology_declared_up_front_and_republish_catches_up_a_late_consumer(
    ns: str, amqp_url: str, mongodb_url: str
) -> None:
    settings = toy_settings(ns, amqp_url, mongodb_url, declare_topology=True)
    async with RunningApp(toy.create(settings)) as running:
        # The queues of every Orgdir consumer exist before any of those services ran.
        conn = await aio_pika.connect(amqp_url)
        channel = await conn.channel()
        for name in ("registry.orgunits", "orgunits.registry", "access-rights.org", "notifier.all"):
            q = await channel.declare_queue(f"{ns}.{name}", passive=True)
            assert q.name == f"{ns}.{name}"
        await conn.close()
        uids = [(await running.http.post("/api/v1/widgets", json={"name": f"w{i}"})).json()["uuid"] for i in range(3)]
        await running.http.patch(f"/api/v1/widgets/{uids[0]}", json={"name": "renamed"})
        await running.settle()
        async with EventCollector(amqp_url, settings.exchange, "widget.*") as late:
            r = await running.http.post("/api/v1/republish")
            assert r.status_code == 200 and r.json() == {"published": 3}
            got = await late.wait_for(lambda evs: len(evs) >= 3)
            by_subject = {e.subject: e for e in got}
            assert by_subject[uids[0]].sequence == 2 and by_subject[uids[0]].type == "widget.updated"
            assert by_subject[uids[0]].data["name"] == "renamed"
            assert by_subject[uids[1]].type == "widget.created"
        r = await running.http.post("/api/v1/republish", headers={"Authorization": "Bearer dev-writer"})
        assert r.status_code == 403


async def test_two_replicas_sweeping_one_outbox_publish_each_event_once(
    ns: str, amqp_url: str, mongodb_url: str
) -> None:
    """The sweep's lease is a conditional write: of two replicas claiming a document, one publishes it."""
    settings = toy_settings(ns, amqp_url, mongodb_url)
    async with EventCollector(amqp_url, settings.exchange, "widget.*") as events:
        async with RunningApp(toy.create(settings)) as a, RunningApp(toy.create(settings)) as b:
            for running in (a, b):
                await running.runtime.relay.stop()  # only the sweeps below publish
            uids = []
            for i in range(40):
                r = await a.http.post("/api/v1/widgets", json={"name": f"w{i}"})
                assert r.status_code == 201, r.text
                uids.append(r.json()["uuid"])
            widgets = a.runtime.db.widgets
            assert await widgets.count_documents({"outbox_since": {"$exists": True}}) == 40  # what the sweep finds
            # Half as a version before ``outbox_since`` left them: a new process marks them once.
            await widgets.update_many({"_id": {"$in": uids[:20]}}, {"$unset": {"outbox_since": ""}})
            for relay in (a.runtime.relay, b.runtime.relay):
                relay._pending.clear()  # forget the fast path: as if the writer had died
                relay._marked.clear()  # a new process
            await asyncio.gather(
                a.runtime.relay.sweep(min_age=timedelta(0)), b.runtime.relay.sweep(min_age=timedelta(0))
            )
            await events.wait_type("widget.created", 40)
            await asyncio.sleep(1)  # a second publication would arrive within this
            ids = [e.id for e in events.of_type("widget.created")]
            assert len(ids) == len(set(ids)) == 40
            assert a.runtime.relay.published + b.runtime.relay.published == 40
            left = await a.runtime.db.widgets.count_documents({"outbox.0": {"$exists": True}})
            assert left == 0
            await a.runtime.relay.sweep(min_age=timedelta(0))
            assert await widgets.count_documents({"outbox_since": {"$exists": True}}) == 0  # the index holds none


async def test_a_load_the_database_cuts_off_is_run_again(ns: str, amqp_url: str, mongodb_url: str) -> None:
    """A replica restarted while the database recovers finds it too busy to answer: its start waits
    and loads again rather than exit (the chaos run lost a notifier replica that way)."""
    from pymongo.errors import NetworkTimeout

    from orgdir.service import Runtime

    runtime = Runtime(toy_settings(ns, amqp_url, mongodb_url))
    calls: list[int] = []

    async def load() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise NetworkTimeout("127.0.0.1: timed out")

    runtime.loaders.append(load)
    try:
        await asyncio.wait_for(runtime.prepare(), 30)
    finally:
        await runtime.stop()
    assert calls == [0, 1]


async def test_garbage_collections_are_timed_for_operators(ns: str, amqp_url: str, mongodb_url: str) -> None:
    """A full collection stops the event loop for as long as it walks the read model: a scrape
    shows each one, so a slow read can be told from a pause."""
    settings = toy_settings(ns, amqp_url, mongodb_url, gc_young_threshold=20_000)
    async with RunningApp(toy.create(settings)) as running:
        assert gc.get_threshold()[0] == 20_000  # a page of rows is not collected, and promoted, mid-way

        async def full_collections() -> float:
            scrape = (await running.http.get("/metrics")).text
            return metric(scrape, "orgdir_gc_pause_seconds_count", service="toy", generation="2")

        before = await full_collections()
        gc.collect()
        assert await full_collections() >= before + 1
