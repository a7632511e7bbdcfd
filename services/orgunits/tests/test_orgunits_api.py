"""The orgunits API against real RabbitMQ and a MongoDB-wire server: vocabulary, rules, as-of reads, events."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx

from orgdir.bus import Bus
from orgdir.clock import ManualClock
from orgdir.contracts.registry import EngagementSlice, EngagementState
from orgdir.events import new_event
from orgdir.validity import Validity
from orgdir_tools.testkit import READER, SECRET_READER, WRITER, EventCollector, RunningApp
from orgunits.app import create_app
from orgunits.service import OrgUnits
from orgunits.settings import OrgunitsSettings
from orgunits.vocabulary import CLASSES, FACETS, class_uuid, facet_uuid, kle_rows, kle_uuid

TODAY = date(2026, 3, 2)
EAN_OK = "5798000000001"


def d(days: int) -> str:
    return (TODAY + timedelta(days=days)).isoformat()


def problem(r: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body: dict[str, Any] = r.json()
    assert body["type"] == f"urn:orgdir:problem:{kind}", body
    return body


async def put_unit(http: httpx.AsyncClient, uid: str, **body: Any) -> dict[str, Any]:
    r = await http.put(f"/api/v1/orgunits/{uid}", json=body)
    assert r.status_code in (200, 201), r.text
    out: dict[str, Any] = r.json()
    return out


def new_id() -> str:
    return str(uuid.uuid4())


def service(app: RunningApp) -> OrgUnits:
    s: OrgUnits = app.app.state.orgunits
    return s


async def test_vocabulary_is_seeded_once_with_deterministic_uuids(
    settings: OrgunitsSettings, clock: ManualClock, events: EventCollector
) -> None:
    async with RunningApp(create_app(settings, clock)) as app:
        r = await app.http.get("/api/v1/facets", headers=READER)
        facets = {f["user_key"]: f for f in r.json()["items"]}
        assert set(facets) == set(FACETS)
        assert facets["job_function"]["uuid"] == facet_uuid("job_function")
        r = await app.http.get("/api/v1/classes", params={"facet": "address_type", "limit": 100})
        scopes = {c["user_key"]: c["scope"] for c in r.json()["items"]}
        assert scopes["email"] == "email" and scopes["ean"] == "ean" and scopes["pnummer"] == "pnumber"
        assert {"phone", "postal", "www"} <= set(scopes.values())
        r = await app.http.get(f"/api/v1/classes/{class_uuid('job_function', 'paedagog')}")
        assert r.json()["name"] == "Pædagog" and r.json()["facet"] == "job_function"
        # Pagination over every class.
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 7} | ({"cursor": cursor} if cursor else {})
            page = (await app.http.get("/api/v1/classes", params=params)).json()
            seen += [c["uuid"] for c in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert len(seen) == len(set(seen)) == sum(len(rows) for rows in CLASSES.values()) + len(kle_rows())
        # KLE is a tree of classes: a topic's parent is its group, a group's its main group.
        topic = (await app.http.get(f"/api/v1/classes/{kle_uuid('27.24.00')}")).json()
        group = (await app.http.get(f"/api/v1/classes/{topic['parent']}")).json()
        main = (await app.http.get(f"/api/v1/classes/{group['parent']}")).json()
        assert (topic["facet"], group["user_key"], main["user_key"], main["parent"]) == ("kle", "27.24", "27", None)
        assert main["name"] == "Social service"
        await app.settle()
    total = sum(len(rows) for rows in CLASSES.values()) + len(kle_rows())
    await events.wait_type("class.created", total)
    await events.wait_type("facet.created", len(FACETS))

    # A second start (or a second replica) seeds nothing new.
    async with RunningApp(create_app(settings, clock)) as app:
        r = await app.http.get(f"/api/v1/classes/{class_uuid('address_type', 'ean')}")
        assert r.json()["version"] == 1
        assert await service(app).seed() == 0

        # Admins add classes; writers may not.
        body = {"facet": "job_function", "user_key": "tandplejer", "name": "Tandplejer"}
        problem(await app.http.post("/api/v1/classes", json=body, headers=WRITER), 403, "forbidden")
        r = await app.http.post("/api/v1/classes", json=body)
        assert r.status_code == 201, r.text
        cid = r.json()["uuid"]
        problem(await app.http.post("/api/v1/classes", json=body), 409, "user-key-taken")
        problem(
            await app.http.post("/api/v1/classes", json={"facet": "address_type", "user_key": "fax", "name": "Fax"}),
            422, "scope-required",
        )
        problem(
            await app.http.post("/api/v1/classes", json={"facet": "nope", "user_key": "x", "name": "X"}),
            422, "unknown-facet",
        )
        r = await app.http.patch(
            f"/api/v1/classes/{cid}", json={"name": "Tandplejer (klinik)"}, headers={"If-Match": '"1"'}
        )
        assert r.status_code == 200 and r.json()["version"] == 2, r.text
        problem(
            await app.http.patch(f"/api/v1/classes/{cid}", json={"name": "X"}, headers={"If-Match": '"1"'}),
            412, "version-mismatch",
        )
        # Terminate: {"to": first day it no longer holds}; the old {"date": …} is refused.
        term = f"/api/v1/classes/{cid}/terminate"
        problem(await app.http.post(term, json={"date": d(30)}), 422, "validation-error")
        problem(await app.http.post(term, json={"to": d(0)}), 422, "terminate-before-start")
        r = await app.http.post(term, json={"to": d(30)}, headers={"If-Match": '"2"'})
        assert r.status_code == 200 and r.json()["timeline"][-1]["validity"]["to"] == d(30), r.text
        r = await app.http.get(f"/api/v1/classes/{cid}", params={"at": d(30)})
        assert r.json()["active"] is False and r.headers["etag"] == '"3"'
        await events.wait_type("class.terminated", 1, subject=cid)
        r = await app.http.post("/api/v1/facets", json={"user_key": "skoleform", "description": "Skoleform"})
        assert r.status_code == 201, r.text
        fid = r.json()["uuid"]
        r = await app.http.patch(f"/api/v1/facets/{fid}", json={"description": "Skoleform (folkeskole, privat)"})
        assert r.status_code == 200 and r.json()["version"] == 2, r.text
        problem(await app.http.patch(f"/api/v1/facets/{fid}", json={"description": "x"}, headers=WRITER),
                403, "forbidden")
        await events.wait_type("facet.updated", 1, subject=fid)
        await events.wait_type("facet.created", len(FACETS) + 1)
        await events.wait_type("class.updated", 1, subject=cid)
    assert len(events.of_type("class.created")) == total + 1


async def test_a_replica_starts_while_a_dead_replica_still_holds_the_tree_section(
    settings: OrgunitsSettings, clock: ManualClock
) -> None:
    """A replica SIGKILLed during a write leaves the section leased; its restart must not wait that out.

    The chaos test hit this: the restart's seeding waited for the section, gave up
    after ``Section.wait`` and the process exited.
    """
    async with RunningApp(create_app(settings, clock)) as app:  # seeds the vocabulary
        name = service(app).section.name
        until = datetime.now(UTC) + timedelta(seconds=60)  # longer than Section.wait; a start may wait it out
        held = {"$set": {"holder": "a-dead-replica", "until": until}}
        await service(app).runtime.db["_sections"].update_one({"_id": name}, held)
    async with RunningApp(create_app(settings, clock)) as app:
        assert (await app.http.get("/readyz")).status_code == 200
        r = await app.http.get(f"/api/v1/classes/{class_uuid('job_function', 'paedagog')}", headers=READER)
        assert r.status_code == 200 and r.json()["version"] == 1, r.text
        doc = await service(app).runtime.db["_sections"].find_one({"_id": name})
        assert doc is not None and doc["holder"] == "a-dead-replica"  # nothing was seeded, so not taken


async def test_every_unit_rule_is_refused_with_problem_json(svc: RunningApp) -> None:
    http = svc.http
    root, child, other = new_id(), new_id(), new_id()
    await put_unit(http, root, user_key="KK", name="Kolding Kommune", unit_type="forvaltning",
                   validity={"from": d(-30)})
    await put_unit(http, child, user_key="BU", name="Børn og Uddannelse", parent=root, validity={"from": d(-30)})
    await put_unit(http, other, user_key="TMP", name="Midlertidig", validity={"from": d(-30), "to": d(60)})
    before = (await http.get("/api/v1/tree")).content

    base = {"user_key": "NEW", "name": "Ny enhed"}
    problem(await http.post("/api/v1/orgunits", json=base | {"parent": new_id()}), 422, "parent-not-found")
    # A child may not start before its parent exists.
    r = await http.post("/api/v1/orgunits", json=base | {"parent": root, "validity": {"from": d(-60)}})
    body = problem(r, 422, "parent-not-active")
    assert body["uncovered"] == [{"from": d(-60), "to": d(-30)}]
    # Nor outlive a parent that ends.
    problem(await http.post("/api/v1/orgunits", json=base | {"parent": other}), 422, "parent-not-active")
    # Cycles: the root under its own child, now or from a future date.
    problem(await http.post(f"/api/v1/orgunits/{root}/move", json={"parent": child}), 422, "cycle")
    problem(
        await http.post(f"/api/v1/orgunits/{root}/move", json={"parent": child, "validity": {"from": d(40)}}),
        422, "cycle",
    )
    problem(await http.post(f"/api/v1/orgunits/{root}/move", json={"parent": root}), 422, "cycle")
    # Terminating a unit with active children lists them.
    body = problem(await http.post(f"/api/v1/orgunits/{root}/terminate", json={"to": d(10)}), 422, "active-children")
    assert [c["uuid"] for c in body["children"]] == [child]
    # Classes: unknown, and of the wrong facet.
    problem(await http.post("/api/v1/orgunits", json=base | {"unit_type": new_id()}), 422, "unknown-class")
    r = await http.post("/api/v1/orgunits", json=base | {"unit_type": class_uuid("job_function", "paedagog")})
    assert problem(r, 422, "wrong-facet")["actual_facet"] == "job_function"
    r = await http.post("/api/v1/orgunits", json=base | {"unit_level": "skole"})
    problem(r, 422, "unknown-class")
    # Addresses.
    for atype, value in (("email", "post@kolding"), ("ean", "5798000000002"), ("ean", "57980"),
                         ("pnummer", "12345"), ("telefon", "12"), ("www", "ftp://x.dk")):
        addr = {"address_type": class_uuid("address_type", atype), "value": value}
        problem(await http.post("/api/v1/orgunits", json=base | {"addresses": [addr]}), 422, "invalid-address")
    addr = {"address_type": class_uuid("unit_type", "skole"), "value": "x"}
    problem(await http.post("/api/v1/orgunits", json=base | {"addresses": [addr]}), 422, "wrong-facet")
    addr = {"address_type": "email", "value": "a@b.dk", "scope": "phone"}
    problem(await http.post("/api/v1/orgunits", json=base | {"addresses": [addr]}), 422, "address-scope-mismatch")
    # Validity.
    r = await http.post("/api/v1/orgunits", json=base | {"validity": {"from": d(5), "to": d(1)}})
    problem(r, 422, "invalid-validity")
    r = await http.patch(f"/api/v1/orgunits/{child}", json={"name": "X", "validity": {"from": d(5), "to": d(5)}})
    assert problem(r, 422, "invalid-validity")["field"] == "validity"
    # user_key unique among units active on the same day (case-insensitively) ...
    problem(await http.post("/api/v1/orgunits", json={"user_key": "kk", "name": "Dublet"}), 409, "user-key-taken")
    # ... but free again once its holder has ended.
    r = await http.post("/api/v1/orgunits", json={"user_key": "TMP", "name": "Efterfølger",
                                                  "validity": {"from": d(60)}})
    assert r.status_code == 201, r.text
    # Concurrency: a stale If-Match.
    r = await http.patch(f"/api/v1/orgunits/{child}", json={"name": "B&U"}, headers={"If-Match": '"7"'})
    assert problem(r, 412, "version-mismatch")["current_version"] == 1
    # Authorisation and bad input.
    problem(await http.post("/api/v1/orgunits", json=base, headers=READER), 403, "forbidden")
    problem(await http.post("/api/v1/orgunits", json={"name": "no user_key"}), 422, "validation-error")
    problem(await http.get(f"/api/v1/orgunits/{new_id()}"), 404, "not-found")
    problem(await http.get(f"/api/v1/orgunits/{root}", params={"at": d(-31)}), 404, "not-active")
    problem(await http.get("/api/v1/tree", params={"at": "2026-13-01"}), 400, "invalid-date")

    # Nothing of the refused writes was stored.
    r = await http.get(f"/api/v1/orgunits/{child}")
    assert r.json()["version"] == 1 and r.json()["name"] == "Børn og Uddannelse"
    after = (await http.get("/api/v1/tree")).json()
    assert after == httpx.Response(200, content=before).json()
    assert (await http.get(f"/api/v1/orgunits/{root}")).json()["version"] == 1


async def test_as_of_reads_across_a_rename_and_a_future_move(
    svc: RunningApp, clock: ManualClock, events: EventCollector
) -> None:
    http = svc.http
    a, b, c = new_id(), new_id(), new_id()
    await put_unit(http, a, user_key="A", name="Social og Sundhed")
    await put_unit(http, b, user_key="B", name="Teknik og Miljø")
    created = await put_unit(http, c, user_key="C", name="Hjemmeplejen",
                             addresses=[{"address_type": "email", "value": "hjemmepleje@kolding.dk"}],
                             parent=a)
    assert created["version"] == 1
    # The same PUT again stores nothing and emits nothing.
    again = await put_unit(http, c, user_key="C", name="Hjemmeplejen",
                           addresses=[{"address_type": "email", "value": "hjemmepleje@kolding.dk"}], parent=a)
    assert again["version"] == 1

    r = await http.patch(f"/api/v1/orgunits/{c}", json={"name": "Hjemmepleje Nord", "validity": {"from": d(10)}},
                         headers={"If-Match": '"1"'})
    assert r.status_code == 200 and r.headers["etag"] == '"2"', r.text
    r = await http.post(f"/api/v1/orgunits/{c}/move", json={"parent": b, "validity": {"from": d(20)}},
                        headers={"If-Match": '"2"'})
    assert r.status_code == 200, r.text

    async def at(day: str | None) -> dict[str, Any]:
        r = await http.get(f"/api/v1/orgunits/{c}", params={"at": day} if day else {})
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out

    today = await at(None)
    assert (today["name"], today["parent"]) == ("Hjemmeplejen", a)
    assert today["validity"] == {"from": TODAY.isoformat(), "to": d(10)}
    assert today["addresses"][0]["scope"] == "email"
    assert ((await at(d(10)))["name"], (await at(d(10)))["parent"]) == ("Hjemmepleje Nord", a)
    assert ((await at(d(20)))["name"], (await at(d(20)))["parent"]) == ("Hjemmepleje Nord", b)
    # The children and ancestors follow the date.
    kids = (await http.get(f"/api/v1/orgunits/{a}/children")).json()["items"]
    assert [k["uuid"] for k in kids] == [c]
    assert (await http.get(f"/api/v1/orgunits/{a}/children", params={"at": d(20)})).json()["items"] == []
    anc = (await http.get(f"/api/v1/orgunits/{c}/ancestors", params={"at": d(25)})).json()["items"]
    assert [x["uuid"] for x in anc] == [b]

    hist = (await http.get(f"/api/v1/orgunits/{c}/history")).json()
    assert [s["validity"] for s in hist["timeline"]] == [
        {"from": TODAY.isoformat(), "to": d(10)}, {"from": d(10), "to": d(20)}, {"from": d(20), "to": None},
    ]
    assert (hist["uuid"], hist["version"]) == (c, 3)
    regs = hist["registrations"]
    assert [r["event_type"] for r in regs] == ["orgunit.created", "orgunit.updated", "orgunit.moved"]
    assert set(regs[0]) == {"version", "registered_at", "registered_by", "event_type", "note", "timeline"}
    assert regs[2]["note"] == f"moved from {d(20)}"
    problem(await http.get(f"/api/v1/orgunits/{new_id()}/history"), 404, "not-found")
    assert {r["registered_by"] for r in regs} == {"static:admin"}
    assert len(regs[0]["timeline"]) == 1

    await events.wait_type("orgunit.moved", 1, subject=c)
    assert [e.type for e in events.of_type(subject=c)] == ["orgunit.created", "orgunit.updated", "orgunit.moved"]
    moved = events.of_type("orgunit.moved", subject=c)[0]
    assert moved.sequence == 3 and len(moved.data["timeline"]) == 3
    assert moved.data["timeline"][2]["validity"]["from"] == d(20)

    # The clock passes the first date: the scheduler emits orgunit.effective, once.
    s = service(svc)
    assert await s.scheduler.run_due() == 0
    clock.set_day(TODAY + timedelta(days=10))
    assert await s.scheduler.run_due() == 1
    assert await s.scheduler.run_due() == 0
    eff = await events.wait_type("orgunit.effective", 1, subject=c)
    assert eff[0].sequence == 4
    r = await http.get(f"/api/v1/orgunits/{c}")
    assert r.json()["name"] == "Hjemmepleje Nord" and r.headers["etag"] == '"4"'
    clock.set_day(TODAY + timedelta(days=20))
    assert await s.scheduler.run_due() == 1
    await events.wait_type("orgunit.effective", 2, subject=c)
    assert (await http.get(f"/api/v1/orgunits/{c}")).json()["parent"] == b


async def test_tree_subtree_children_and_search(svc: RunningApp) -> None:
    http = svc.http
    root, bu, skole, aa, ss = new_id(), new_id(), new_id(), new_id(), new_id()
    await put_unit(http, root, user_key="KOLDING", name="Kolding Kommune")
    await put_unit(http, bu, user_key="BU", name="Børn og Uddannelse", parent=root)
    await put_unit(http, ss, user_key="SS", name="Social og Sundhed", parent=root)
    await put_unit(http, skole, user_key="MUNKEVÆNGET", name="Munkevængets Skole", parent=bu)
    await put_unit(http, aa, user_key="AABO", name="Åboulevarden Dagtilbud", parent=bu,
                   validity={"from": d(5)})

    tree = (await http.get("/api/v1/tree")).json()
    assert tree["count"] == 4 and [r["uuid"] for r in tree["roots"]] == [root]
    assert [c["name"] for c in tree["roots"][0]["children"]] == ["Børn og Uddannelse", "Social og Sundhed"]
    future = (await http.get("/api/v1/tree", params={"at": d(5)})).json()
    assert future["count"] == 5

    sub = (await http.get(f"/api/v1/orgunits/{root}/subtree", params={"depth": 1})).json()
    assert [c["uuid"] for c in sub["children"]] == [bu, ss]
    assert "children" not in sub["children"][0] and sub["children"][0]["child_count"] == 1
    sub = (await http.get(f"/api/v1/orgunits/{root}/subtree")).json()
    assert sub["children"][0]["children"][0]["uuid"] == skole

    anc = (await http.get(f"/api/v1/orgunits/{skole}/ancestors")).json()["items"]
    assert [x["uuid"] for x in anc] == [bu, root]

    async def search(q: str, **params: Any) -> list[str]:
        r = await http.get("/api/v1/orgunits", params={"q": q} | params)
        assert r.status_code == 200, r.text
        return [u["uuid"] for u in r.json()["items"]]

    assert await search("børn") == [bu]
    assert await search("BØRN OG") == [bu]
    assert await search("boern") == [bu]
    assert await search("munkevænget") == [skole]  # user_key or name
    assert await search("aaboulevarden", at=d(5)) == [aa]
    assert await search("åboulevarden", at=d(5)) == [aa]
    assert await search("åboulevarden") == []  # not yet
    # Pagination, ordered by name.
    r = (await http.get("/api/v1/orgunits", params={"limit": 2})).json()
    assert [u["name"] for u in r["items"]] == ["Børn og Uddannelse", "Kolding Kommune"]
    r2 = (await http.get("/api/v1/orgunits", params={"limit": 2, "cursor": r["next_cursor"]})).json()
    assert [u["name"] for u in r2["items"]] == ["Munkevængets Skole", "Social og Sundhed"]
    assert r2["next_cursor"] is None
    r = (await http.get("/api/v1/orgunits", params={"parent": bu})).json()
    assert [u["uuid"] for u in r["items"]] == [skole]


async def test_termination_needs_children_and_engagements_gone(
    svc: RunningApp, settings: OrgunitsSettings, events: EventCollector
) -> None:
    http = svc.http
    root, unit = new_id(), new_id()
    await put_unit(http, root, user_key="R", name="Rod", validity={"from": d(-100)})
    await put_unit(http, unit, user_key="U", name="Lønkontoret", parent=root, validity={"from": d(-100)})

    engagement = new_id()
    person = new_id()

    def state(version: int, to: date | None) -> dict[str, Any]:
        s = EngagementSlice(
            validity=Validity(from_=TODAY - timedelta(days=50), to=to), person=person, unit=unit,
            job_function=class_uuid("job_function", "fuldmaegtig"),
            engagement_type=class_uuid("engagement_type", "ansat"),
        )
        return EngagementState(uuid=engagement, version=version, person=person, unit=unit, timeline=[s]).model_dump(
            mode="json", by_alias=True
        )

    bus = Bus(settings)
    await bus.connect()
    try:
        await bus.publish(new_event(service="registry", type="engagement.created", subject=engagement,
                                    sequence=1, data=state(1, None)))
        s = service(svc)

        async def projected(version: int) -> None:
            for _ in range(200):
                doc = await s.engagements.get(engagement)
                if doc and doc["sequence"] >= version:
                    return
                await asyncio.sleep(0.05)
            raise AssertionError("engagement not projected")

        await projected(1)
        r = await http.post(f"/api/v1/orgunits/{unit}/terminate", json={"date": d(30)})
        problem(r, 422, "validation-error")  # the old body
        r = await http.post(f"/api/v1/orgunits/{unit}/terminate", json={"to": d(30)})
        assert problem(r, 422, "active-engagements")["engagements"] == 1
        # Its parent cannot go first either.
        body = problem(await http.post(f"/api/v1/orgunits/{root}/terminate", json={"to": d(30)}),
                       422, "active-children")
        assert body["children"][0]["uuid"] == unit

        # The registry ends the engagement on the same day: now the unit may end.
        await bus.publish(new_event(service="registry", type="engagement.terminated", subject=engagement,
                                    sequence=2, data=state(2, TODAY + timedelta(days=30))))
        await projected(2)
    finally:
        await bus.close()
    r = await http.post(f"/api/v1/orgunits/{unit}/terminate", json={"to": d(30)})
    assert r.status_code == 200, r.text
    assert r.json()["timeline"][-1]["validity"]["to"] == d(30)
    r = await http.post(f"/api/v1/orgunits/{root}/terminate", json={"to": d(30)})
    assert r.status_code == 200, r.text
    assert (await http.get(f"/api/v1/orgunits/{unit}", params={"at": d(29)})).status_code == 200
    assert (await http.get(f"/api/v1/orgunits/{unit}", params={"at": d(30)})).status_code == 404
    await events.wait_type("orgunit.terminated", 1, subject=unit)
    term = events.of_type("orgunit.terminated", subject=unit)[0]
    assert term.data["timeline"][-1]["validity"]["to"] == d(30)


async def test_demo_municipality_loads_idempotently(svc: RunningApp, events: EventCollector) -> None:
    from orgdir_tools.demo import orgunits as demo

    await demo.load(svc.http)
    await demo.load(svc.http)  # the second load stores nothing
    root = demo.UNITS["Kolding Kommune"]
    r = await svc.http.get(f"/api/v1/orgunits/{root}")
    assert r.status_code == 200 and r.json()["version"] == 1
    assert {a["scope"] for a in r.json()["addresses"]} >= {"email", "postal", "ean", "pnumber", "www", "phone"}
    tree = (await svc.http.get("/api/v1/tree")).json()
    assert tree["count"] == len(demo.UNITS) and [u["uuid"] for u in tree["roots"]] == [root]
    anc = (await svc.http.get(f"/api/v1/orgunits/{demo.UNITS['Munkevængets Skole']}/ancestors")).json()
    assert [a["name"] for a in anc["items"]] == ["Skoleområdet", "Børn og Uddannelse", "Kolding Kommune"]
    # The MED committees are a hierarchy of their own; KLE numbers on units; a related pair.
    med = (await svc.http.get("/api/v1/tree", params={"hierarchy": "med"})).json()
    assert med["count"] == len(demo.MED_UNITS) and [u["name"] for u in med["roots"]] == ["Hovedudvalget"]
    soc = (await svc.http.get(f"/api/v1/orgunits/{demo.UNITS['Socialafdelingen']}")).json()
    assert {"kle": kle_uuid("27.24"), "aspects": ["udførende", "ansvarlig"]} in soc["kle"]
    nord = (await svc.http.get(f"/api/v1/orgunits/{demo.UNITS['Hjemmepleje Nord']}")).json()
    assert [r["unit"] for r in nord["related_units"]] == [demo.UNITS["Hjemmepleje Syd"]]
    # The shelter's street address is secret: only a reader with orgdir:read:secret sees it.
    shelter = f"/api/v1/orgunits/{demo.UNITS['Krisecenter Kolding']}"
    street = demo.SECRET_STREETS["Krisecenter Kolding"]
    assert street not in (await svc.http.get(shelter, headers=READER)).text
    assert street in {a["value"] for a in (await svc.http.get(shelter, headers=SECRET_READER)).json()["addresses"]}
    await svc.settle()
    total = len(demo.UNITS) + len(demo.MED_UNITS)
    await events.wait_type("orgunit.created", total)
    assert len(events.of_type("orgunit.created")) == total
    assert events.of_type("orgunit.updated", "orgunit.moved", "related_unit.updated") == []
    assert len(events.of_type("related_unit.created")) == len(demo.RELATED)


async def test_request_metrics_are_labelled_by_route_template(svc: RunningApp) -> None:
    """Routes come from an included router; the label must be the template, not the path or 'unmatched'."""
    unit = str(uuid.uuid4())
    assert (await svc.http.get(f"/api/v1/orgunits/{unit}")).status_code == 404
    scrape = (await svc.http.get("/metrics")).text
    assert 'route="/api/v1/orgunits/{uid}"' in scrape
    assert unit not in scrape


async def test_openapi_documents_every_answer(settings: OrgunitsSettings, clock: ManualClock) -> None:
    """The raw-bytes tree, pages, the shared terminate and history shapes are all in the document."""
    doc = create_app(settings, clock).openapi()
    paths = doc["paths"]

    def ok_schema(path: str, method: str = "get", status: str = "200") -> Any:
        return paths[path][method]["responses"][status]["content"]["application/json"]["schema"]

    assert ok_schema("/api/v1/tree") == {"$ref": "#/components/schemas/Tree"}
    assert ok_schema("/api/v1/orgunits/{uid}/history") == {"$ref": "#/components/schemas/History"}
    assert ok_schema("/api/v1/orgunits") == {"$ref": "#/components/schemas/Page_UnitOut_"}
    for path in ("/api/v1/orgunits/{uid}/terminate", "/api/v1/classes/{uid}/terminate"):
        body = paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": "#/components/schemas/TerminateIn"}
    limit = next(p for p in paths["/api/v1/classes"]["get"]["parameters"] if p["name"] == "limit")
    assert (limit["schema"]["default"], limit["schema"]["maximum"]) == (100, 1000)
    assert "404" in paths["/api/v1/classes"]["get"]["responses"]  # an unknown ?facet=
    for item in paths.values():
        for op in item.values():
            assert any(s.startswith("2") and "content" in r for s, r in op["responses"].items()), op
