"""Refresh for one consumer (``POST /api/v1/refresh``), on the toy service and real servers.

The current state of every matching aggregate goes to the named queue only,
as its normal full-state event, then ``refresh.completed``; progress is a job
any replica answers; a job whose replica went away is resumed by another.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import pytest

from orgdir.bus import declare_exchanges
from orgdir.events import CloudEvent, parse, typed_data
from orgdir.refresh import JOBS
from orgdir.store import Change
from orgdir_tools.testkit import WRITER, EventCollector, RunningApp, eventually
from tests.platform import toy
from tests.platform.test_platform import toy_settings


@pytest.fixture
async def channel(amqp_url: str) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    conn = await aio_pika.connect(amqp_url)
    yield await conn.channel()
    await conn.close()


async def declare(channel: aio_pika.abc.AbstractChannel, exchange: str, name: str, *patterns: str) -> None:
    await declare_exchanges(channel, exchange)
    queue = await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
    for p in patterns:
        await queue.bind(exchange, routing_key=p)


async def drain(channel: aio_pika.abc.AbstractChannel, name: str) -> list[CloudEvent]:
    queue = await channel.declare_queue(name, passive=True)
    out = []
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        event = parse(message.body)
        typed_data(event)  # every event validates against its catalogue model
        out.append(event)
    return out


async def finished(running: RunningApp, location: str) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        r = await running.http.get(location)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body if body["state"] != "running" else None

    result: dict[str, Any] = await eventually(done)
    return result


async def widgets(running: RunningApp, count: int) -> list[str]:
    repo = running.runtime.repositories["widgets"]
    uids = [str(uuid.uuid4()) for _ in range(count)]
    await asyncio.gather(*(repo.insert(u, Change({"name": f"w{i}"}, "widget.created")) for i, u in enumerate(uids)))
    await running.settle()
    return uids


async def test_refresh_sends_current_state_to_one_queue_only_then_a_marker(
    ns: str, amqp_url: str, mongodb_url: str, channel: aio_pika.abc.AbstractChannel
) -> None:
    settings = toy_settings(ns, amqp_url, mongodb_url)
    async with RunningApp(toy.create(settings)) as running:
        uids = [(await running.http.post("/api/v1/widgets", json={"name": f"w{i}"})).json()["uuid"] for i in range(3)]
        await running.http.patch(f"/api/v1/widgets/{uids[0]}", json={"name": "renamed"})
        await running.settle()
        mine, other = f"{ns}.vendor.mine", f"{ns}.vendor.other"
        await declare(channel, settings.exchange, mine, "widget.*")
        await declare(channel, settings.exchange, other, "#")
        async with EventCollector(amqp_url, settings.exchange) as everyone:
            r = await running.http.post("/api/v1/refresh", json={"queue": mine})
            assert r.status_code == 202, r.text
            assert r.headers["location"] == f"/api/v1/refresh/{r.json()['id']}"
            job = await finished(running, r.headers["location"])
            assert job["state"] == "completed" and job["error"] is None
            assert (job["total"], job["done"], job["published"]) == (3, 3, 3)
            assert job["finished_at"] is not None and job["requested_by"]

            got = await drain(channel, mine)
            assert [e.type for e in got][-1] == "refresh.completed"
            marker = got[-1]
            assert marker.data == {"refresh_id": job["id"], "service": "toy", "count": 3}
            assert marker.subject == job["id"] and marker.sequence == 1
            state = {e.subject: e for e in got[:-1]}
            assert set(state) == set(uids) and len(got) == 4
            assert state[uids[0]].type == "widget.updated" and state[uids[0]].sequence == 2
            assert state[uids[0]].data["name"] == "renamed" and state[uids[0]].source == "/orgdir/toy"
            assert state[uids[1]].type == "widget.created" and state[uids[1]].sequence == 1
            # Nobody else: not the other consumer's queue, not a queue bound to everything.
            await asyncio.sleep(0.3)
            assert await drain(channel, other) == []
            assert everyone.events == []


async def test_refresh_filters_by_type_and_since_and_refuses_bad_requests(
    ns: str, amqp_url: str, mongodb_url: str, channel: aio_pika.abc.AbstractChannel
) -> None:
    settings = toy_settings(ns, amqp_url, mongodb_url)
    async with RunningApp(toy.create(settings)) as running:
        uids = [(await running.http.post("/api/v1/widgets", json={"name": f"w{i}"})).json()["uuid"] for i in range(4)]
        await asyncio.sleep(0.05)
        since = datetime.now(UTC)
        await running.http.patch(f"/api/v1/widgets/{uids[2]}", json={"name": "changed"})
        await running.settle()
        queue = f"{ns}.vendor"
        await declare(channel, settings.exchange, queue)

        r = await running.http.post("/api/v1/refresh", json={"queue": queue, "event_types": ["widget.updated"]})
        assert r.status_code == 202, r.text
        job = await finished(running, r.headers["location"])
        assert job["published"] == 1 and job["event_types"] == ["widget.updated"]
        assert [(e.type, e.subject) for e in await drain(channel, queue)] == [
            ("widget.updated", uids[2]), ("refresh.completed", job["id"])
        ]

        r = await running.http.post("/api/v1/refresh", json={"queue": queue, "since": since.isoformat()})
        job = await finished(running, r.headers["location"])
        assert (job["total"], job["published"]) == (1, 1)
        assert [e.subject for e in await drain(channel, queue)] == [uids[2], job["id"]]

        # Patterns of another service's events: nothing of ours matches; the marker still closes it.
        r = await running.http.post("/api/v1/refresh", json={"queue": queue, "event_types": ["person.*"]})
        job = await finished(running, r.headers["location"])
        assert (job["total"], job["published"]) == (0, 0)
        assert [e.type for e in await drain(channel, queue)] == ["refresh.completed"]

        async def problem(body: dict[str, Any], status: int, kind: str, **kw: Any) -> None:
            r = await running.http.post("/api/v1/refresh", json=body, **kw)
            assert r.status_code == status, r.text
            assert r.json()["type"] == f"urn:orgdir:problem:{kind}"

        await problem({"queue": f"{ns}.nobody"}, 404, "unknown-queue")
        await problem({"queue": queue, "event_types": ["Person.*"]}, 422, "invalid-event-pattern")
        await problem({"queue": queue, "event_types": ["nothing.such"]}, 422, "unknown-event-type")
        await problem({"queue": queue, "since": "2024-01-01T00:00:00"}, 422, "validation-error")  # no zone
        await problem({"queue": "a b"}, 422, "validation-error")
        await problem({"queue": queue}, 403, "forbidden", headers=WRITER)
        r = await running.http.get(f"/api/v1/refresh/{uuid.uuid4()}")
        assert r.status_code == 404
        assert await drain(channel, queue) == []  # refused requests sent nothing
        assert await running.runtime.db[JOBS].count_documents({}) == 3


async def test_any_replica_answers_and_a_job_left_by_a_dead_replica_is_resumed(
    ns: str, amqp_url: str, mongodb_url: str, channel: aio_pika.abc.AbstractChannel
) -> None:
    settings = toy_settings(ns, amqp_url, mongodb_url, refresh_lease_seconds=1.5, refresh_batch=50)
    async with RunningApp(toy.create(settings)) as a, RunningApp(toy.create(settings)) as b:
        uids = sorted(await widgets(a, 220))  # five batches
        queue = f"{ns}.vendor"
        await declare(channel, settings.exchange, queue)

        r = await a.http.post("/api/v1/refresh", json={"queue": queue})
        job = await finished(b, r.headers["location"])  # the other replica reads the same job
        assert (job["state"], job["total"], job["done"], job["published"]) == ("completed", 220, 220, 220)
        got = await drain(channel, queue)
        assert sorted(e.subject for e in got[:-1]) == uids and got[-1].data["count"] == 220

        # A replica died mid-job: its lease ran out, its checkpoint is after the 150th aggregate.
        jobs = a.runtime.db[JOBS]
        dead = str(uuid.uuid4())
        await jobs.insert_one({
            **{k: v for k, v in (await jobs.find_one({"_id": job["id"]})).items() if k != "_id"},
            "_id": dead, "state": "running", "owner": "gone", "finished_at": None, "done": 150, "published": 150,
            "lease_until": datetime.now(UTC) - timedelta(seconds=1), "takeovers": 0,
            "checkpoint": {"collection": "widgets", "last_id": uids[149]},
        })
        resumed = await finished(b, f"/api/v1/refresh/{dead}")  # the timed sweep of a or b takes it over
        assert (resumed["state"], resumed["done"], resumed["published"]) == ("completed", 220, 220)
        got = await drain(channel, queue)
        assert sorted(e.subject for e in got[:-1]) == uids[150:]
        assert got[-1].type == "refresh.completed" and got[-1].data["count"] == 220
        assert (await jobs.find_one({"_id": dead}))["takeovers"] == 1


async def test_a_stopping_replica_hands_its_refresh_to_another(
    ns: str, amqp_url: str, mongodb_url: str, channel: aio_pika.abc.AbstractChannel
) -> None:
    settings = toy_settings(ns, amqp_url, mongodb_url, refresh_lease_seconds=1.5, refresh_batch=20)
    async with RunningApp(toy.create(settings)) as b:
        uids = await widgets(b, 300)
        queue = f"{ns}.vendor"
        await declare(channel, settings.exchange, queue)
        async with RunningApp(toy.create(settings)) as a:
            r = await a.http.post("/api/v1/refresh", json={"queue": queue})
            location = r.headers["location"]
        # a stopped at once (mid-job, or just after); b resumes or finds it done.
        job = await finished(b, location)
        assert (job["state"], job["done"]) == ("completed", 300)
        subjects = {e.subject for e in await drain(channel, queue) if e.type == "widget.created"}
        assert subjects == set(uids)  # each at least once (a batch may go out twice; consumers skip it)


async def test_republish_and_refresh_resend_person_rights_as_access_current(mongodb_url: str) -> None:
    """Access-rights' change events carry one right; its documents re-send as the whole set."""
    from orgdir.clock import SystemClock
    from orgdir.store import Repository, connect

    client = connect(mongodb_url)
    repo = Repository(client["unused"], "person_rights", service="access-rights", clock=SystemClock(),
                      current_type="access.current")
    doc = {"_id": "p1", "version": 3, "state": {"person": "p1", "rights": []},
           "registrations": [{"event_type": "access.revoked"}]}
    event = repo.current_event(doc)
    assert event is not None and event.type == "access.current" and event.sequence == 3
    typed_data(CloudEvent.model_validate(json.loads(event.body())))  # a valid RightsState
    assert repo.current_event({**doc, "version": 0}) is None  # never published: nothing to re-send
    await client.close()
