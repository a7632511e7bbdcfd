"""Two replicas of the registry on one database and one broker answer like one.

Both apps are built from the same settings (same database, exchange and
queues), as two pods of one deployment would be; writes are spread over both.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import httpx
import pytest

from orgdir.events import CloudEvent
from orgdir_tools.registry_support import World, problem_type, uid
from orgdir_tools.testkit import EventCollector, RunningApp, eventually
from registry.app import create_app
from registry.domain import ENGAGEMENT, cpr_hash, normalize_cpr
from registry.service import Registry


def reg(app: RunningApp) -> Registry:
    registry: Registry = app.app.state.registry
    return registry


@pytest.fixture
async def replicas(world: World) -> AsyncIterator[tuple[RunningApp, RunningApp]]:
    await world.feed.wait(world.registry)  # the projection, which a starting replica loads, included
    async with RunningApp(create_app(world.settings, world.clock)) as b:
        await world.feed.wait(reg(b))
        yield world.app, b


async def test_a_replica_is_not_ready_before_it_has_loaded(world: World) -> None:
    app = create_app(world.settings, world.clock)  # lifespan not entered: nothing loaded, no view bound
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        r = await client.get("/readyz")
        assert r.status_code == 503
        assert r.json()["checks"]["loaded"] is False and r.json()["checks"]["views"] is False
    await app.state.registry.runtime.mongo.close()
    assert (await world.http.get("/readyz")).status_code == 200


async def test_writes_through_one_replica_are_read_through_the_other_within_a_second(
    world: World, replicas: tuple[RunningApp, RunningApp]
) -> None:
    a, b = replicas
    assert (await b.http.get("/readyz")).json()["checks"]["loaded"] is True
    p = uid("person:Rikke Replika")
    body = world.person_body("Rikke", "Replika", addresses=[{"scope": "email", "value": "rikke@aarhus.dk"}])
    created = await a.http.put(f"/api/v1/persons/{p}", json=body)
    assert created.status_code == 201, created.text
    version = created.json()["version"]

    async def person_on(app: RunningApp, expect: dict[str, Any]) -> bool:
        r = await app.http.get(f"/api/v1/persons/{p}")
        return r.status_code == 200 and all(r.json().get(k) == v for k, v in expect.items())

    async def found_on(app: RunningApp, q: str, expect: list[str]) -> bool:
        r = await app.http.get("/api/v1/search", params={"q": q})
        return [i["uuid"] for i in r.json()["items"]] == expect

    await eventually(lambda: person_on(b, {"version": version}), within=1.0)
    await eventually(lambda: found_on(b, "replika", [p]), within=1.0)

    # A second write through B, with the version A returned.
    patched = await b.http.patch(f"/api/v1/persons/{p}", json={"nickname": "Rik"}, headers={"If-Match": f'"{version}"'})
    assert patched.status_code == 200, patched.text
    assert patched.json()["version"] == version + 1
    await eventually(lambda: person_on(a, {"version": version + 1, "nickname": "Rik"}), within=1.0)
    stale = await a.http.patch(f"/api/v1/persons/{p}", json={"nickname": "X"}, headers={"If-Match": f'"{version}"'})
    assert stale.status_code == 412 and problem_type(stale) == "version-mismatch"

    # An engagement through A for a person B created a moment ago: the reference is read by _id.
    q = uid("person:Bo Bagved")
    assert (await b.http.put(f"/api/v1/persons/{q}", json=world.person_body("Bo", "Bagved"))).status_code == 201
    e = await a.http.post("/api/v1/engagements", json=world.engagement_body(q, world.u["team"]))
    assert e.status_code == 201, e.text

    async def people_on(app: RunningApp) -> bool:
        r = await app.http.get(f"/api/v1/orgunits/{world.u['team']}/people")
        return [i["person"]["uuid"] for i in r.json()["items"]] == [q]

    await eventually(lambda: people_on(b), within=1.0)
    await eventually(lambda: found_on(b, "bagved orsted", [q]), within=1.0)  # the unit's name, from memory

    # A unit renamed in orgunits: whichever replica consumes it, both follow (the other through its view).
    renamed = {
        "validity": {"from": "2000-01-01", "to": None},
        "user_key": "team",
        "name": "Team Dokk",
        "parent": world.u["afd"],
    }
    await world.feed.unit("Team Ørsted", timeline=[renamed], verb="updated")
    for app in (a, b):
        await eventually(lambda app=app: found_on(app, "bagved dokk", [q]), within=1.0)


async def test_one_person_per_cpr_number_when_two_replicas_race(
    world: World, replicas: tuple[RunningApp, RunningApp]
) -> None:
    a, b = replicas
    hashes = []
    for i in range(10):
        cpr = f"0101{70 + i:02d}-1234"
        hashes.append(cpr_hash(normalize_cpr(cpr), world.settings.cpr_hash_key))
        p1, p2 = uid(f"person:cpr-race-{i}-a"), uid(f"person:cpr-race-{i}-b")
        first, second = (a, b) if i % 2 == 0 else (b, a)
        r1, r2 = await asyncio.gather(
            first.http.put(f"/api/v1/persons/{p1}", json=world.person_body("Anna", f"Race{i}", cpr=cpr)),
            second.http.put(f"/api/v1/persons/{p2}", json=world.person_body("Bent", f"Race{i}", cpr=cpr)),
        )
        assert sorted([r1.status_code, r2.status_code]) == [201, 409], (r1.text, r2.text)
        loser = r1 if r1.status_code == 409 else r2
        assert problem_type(loser) == "cpr-in-use"

    persons = world.registry.repos["person"].col
    for h in hashes:
        assert await persons.count_documents({"state.cpr_hash": h}) == 1
    claims = world.registry.claims.col
    for h in hashes:
        claim = await claims.find_one({"_id": h})
        owner = await persons.find_one({"_id": claim["person"]}) if claim else None
        assert owner is not None and owner["state"]["cpr_hash"] == h

    # A changed number is released at once: another person may take the old one, through the other replica.
    p = (
        uid("person:cpr-race-0-a")
        if await persons.find_one({"_id": uid("person:cpr-race-0-a")})
        else uid("person:cpr-race-0-b")
    )
    changed = await b.http.patch(f"/api/v1/persons/{p}", json={"cpr": "020290-1234"})
    assert changed.status_code == 200, changed.text
    other = uid("person:cpr-taker")
    took = await a.http.put(f"/api/v1/persons/{other}", json=world.person_body("Carl", "Taker", cpr="010170-1234"))
    assert took.status_code == 201, took.text
    back = await a.http.patch(f"/api/v1/persons/{p}", json={"cpr": "010170-1234"})
    assert back.status_code == 409 and problem_type(back) == "cpr-in-use"


async def test_terminating_a_person_races_an_engagement_through_the_other_replica(
    world: World, replicas: tuple[RunningApp, RunningApp]
) -> None:
    a, b = replicas
    end = date(2026, 6, 1)
    outcomes = set()
    for i in range(8):
        p = await world.person(f"Terminal Person{i}")
        term, eng = (a, b) if i % 2 == 0 else (b, a)
        t, e = await asyncio.gather(
            term.http.post(f"/api/v1/persons/{p}/terminate", json={"to": end.isoformat()}),
            eng.http.post(
                "/api/v1/engagements", json=world.engagement_body(p, world.u["team"], validity={"from": "2026-01-01"})
            ),
        )
        if t.status_code == 200:
            assert e.status_code == 422 and problem_type(e) == "person-not-active", e.text
            outcomes.add("terminated")
        else:
            assert t.status_code == 409 and problem_type(t) == "person-has-active-relations", t.text
            assert e.status_code == 201, e.text
            outcomes.add("engaged")
        # What is stored: no engagement of the person lasts beyond the person's life.
        person = await world.registry.repos["person"].col.find_one({"_id": p})
        assert person is not None
        person_end = person["state"]["timeline"][-1]["validity"]["to"]
        async for doc in world.registry.repos["engagement"].col.find({"state.person": p}):
            for s in doc["state"]["timeline"]:
                if person_end is not None:
                    assert s["validity"]["to"] is not None and s["validity"]["to"] <= person_end
    assert outcomes  # (which one wins is up to the race)


async def test_two_primary_engagements_race_and_one_wins(world: World, replicas: tuple[RunningApp, RunningApp]) -> None:
    a, b = replicas
    for i in range(5):
        p = await world.person(f"Primary Person{i}")
        r1, r2 = await asyncio.gather(
            a.http.post("/api/v1/engagements", json=world.engagement_body(p, world.u["team"], primary=True)),
            b.http.post("/api/v1/engagements", json=world.engagement_body(p, world.u["afd"], primary=True)),
        )
        assert sorted([r1.status_code, r2.status_code]) == [201, 422], (r1.text, r2.text)
        loser = r1 if r1.status_code == 422 else r2
        assert problem_type(loser) == "single-primary-engagement"


async def test_each_transition_fires_once_across_replicas(
    world: World, replicas: tuple[RunningApp, RunningApp]
) -> None:
    a, b = replicas
    s = world.settings
    async with EventCollector(s.amqp_url, s.exchange, "engagement.*") as events:
        p = await world.person("Frida Fremtid")
        e = await world.engagement(p, world.u["team"], validity={"from": "2026-04-01"})
        world.clock.set_day(date(2026, 4, 1))
        fired = await asyncio.gather(reg(a).run_due(), reg(b).run_due(), reg(a).run_due(), reg(b).run_due())
        assert sum(fired) == 1
        await events.wait_type("engagement.effective", subject=e)
        await asyncio.sleep(0.5)
        assert len(events.of_type("engagement.effective", subject=e)) == 1

    async def current_on(app: RunningApp) -> bool:
        r = await app.http.get(f"/api/v1/persons/{p}/overview")
        held = reg(app).memory.aggs["engagement"][e]
        return [x["uuid"] for x in r.json()["engagements"]] == [e] and held.version == 2

    for app in (a, b):
        await eventually(lambda app=app: current_on(app), within=1.0)


async def test_a_replica_far_behind_a_persons_log_re_reads_everything_about_the_person(
    world: World, replicas: tuple[RunningApp, RunningApp]
) -> None:
    a, b = replicas

    async def deaf(event: CloudEvent) -> None:  # B's view misses what A writes from here on
        return None

    b.runtime.views[0].apply = deaf
    p = await world.person("Lone Langsom")
    e1 = await world.engagement(p, world.u["team"], primary=True)
    manager = {
        "person": p,
        "unit": world.u["team"],
        "manager_type": world.c["direktoer"],
        "manager_level": world.c["niveau1"],
        "validity": {"from": "2021-01-01"},
    }
    m = await a.http.post("/api/v1/managers", json=manager)
    assert m.status_code == 201, m.text
    assert reg(b).memory.get("engagement", e1) is None
    reg(b).sections.get(p).seen = None  # as if the section's log had moved on too far
    second = await b.http.post("/api/v1/engagements", json=world.engagement_body(p, world.u["afd"], primary=True))
    assert second.status_code == 422 and problem_type(second) == "single-primary-engagement", second.text
    assert reg(b).memory.get("engagement", e1) is not None
    assert reg(b).memory.get("manager", m.json()["uuid"]) is not None


async def test_a_put_of_something_this_replica_has_not_seen_yet_is_decided_against_what_is_stored(
    world: World,
) -> None:
    """A replica tries an aggregate unknown to it as new without reading it first; when another replica
    made it meanwhile, the write is decided again against the stored document (same content: nothing
    written; other content: merged into the stored timeline, not put in its place)."""
    registry = world.registry
    p = await world.person("Ulla Ukendt")
    e = uid("engagement:Ulla")
    body = world.engagement_body(p, world.u["team"])
    assert (await world.http.put(f"/api/v1/engagements/{e}", json=body)).status_code == 201

    def forget() -> None:  # as if written by another replica whose event has not arrived here
        agg = registry.memory.aggs["engagement"].pop(e)
        registry.memory._unindex(ENGAGEMENT, agg)

    forget()
    again = await world.http.put(f"/api/v1/engagements/{e}", json=body)
    assert again.status_code == 200, again.text
    assert again.json()["version"] == 1

    forget()
    later = {**body, "fraction": 0.5, "validity": {"from": "2024-01-01"}}
    changed = await world.http.put(f"/api/v1/engagements/{e}", json=later)
    assert changed.status_code == 200, changed.text
    stored = await registry.repos["engagement"].get(e)
    assert stored is not None and stored["version"] == 2
    slices = [(s["validity"]["from"], s.get("fraction")) for s in stored["state"]["timeline"]]
    assert slices == [("2021-01-01", None), ("2024-01-01", 0.5)]
