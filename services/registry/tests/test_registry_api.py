"""Registry CRUD, rules and reads against the real RabbitMQ and MongoDB-wire server."""

from __future__ import annotations

from orgdir.http import Page
from orgdir_tools.registry_support import World, problem_type, uid
from orgdir_tools.testkit import READER, as_documented
from registry.schemas import UnitPerson


async def test_person_put_is_idempotent_patch_from_date_and_history(world: World) -> None:
    http = world.http
    p = uid("person:Søren Kierkegaard")
    body = world.person_body("Søren", "Kierkegaard", addresses=[{"scope": "email", "value": "sk@aarhus.dk"}])
    r1 = await http.put(f"/api/v1/persons/{p}", json=body)
    assert r1.status_code == 201, r1.text
    r2 = await http.put(f"/api/v1/persons/{p}", json=body)
    assert r2.status_code == 200 and r2.json()["version"] == 1 and r2.headers["etag"] == '"1"'

    r = await http.patch(f"/api/v1/persons/{p}", json={"nickname": "SK", "validity": {"from": "2026-04-01"}})
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2
    today = (await http.get(f"/api/v1/persons/{p}")).json()
    later = (await http.get(f"/api/v1/persons/{p}", params={"at": "2026-04-01"})).json()
    assert today["nickname"] is None and later["nickname"] == "SK"

    stale = await http.patch(f"/api/v1/persons/{p}", json={"nickname": "X"}, headers={"If-Match": '"1"'})
    assert stale.status_code == 412 and problem_type(stale) == "version-mismatch"

    hist = (await http.get(f"/api/v1/persons/{p}/history")).json()
    assert [r["event_type"] for r in hist["registrations"]] == ["person.created", "person.updated"]
    assert hist["registrations"][0]["registered_by"] == "static:admin"
    assert len(hist["timeline"]) == 2
    assert len(hist["registrations"][0]["timeline"]) == 1 and len(hist["registrations"][1]["timeline"]) == 2
    assert hist["has_cpr"] is False and hist["cpr"] is None

    old_shape = await http.post(f"/api/v1/persons/{p}/terminate", json={"from": "2027-01-01"})
    assert old_shape.status_code == 422 and problem_type(old_shape) == "validation-error"
    r = await http.post(f"/api/v1/persons/{p}/terminate", json={"to": "2027-01-01"})
    assert r.status_code == 200 and r.json()["timeline"][-1]["validity"]["to"] == "2027-01-01"
    gone = await http.get(f"/api/v1/persons/{p}", params={"at": "2027-01-01"})
    assert gone.status_code == 404 and problem_type(gone) == "not-in-force"


async def test_lists_filter_and_paginate(world: World) -> None:
    http = world.http
    persons = [await world.person(f"Person Nr{i}") for i in range(5)]
    for p in persons:
        await world.engagement(p, world.u["team"] if p != persons[0] else world.u["afd"])
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await http.get("/api/v1/persons", params=params)).json()
        seen += [i["uuid"] for i in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted(persons) and len(seen) == 5
    team = (await http.get("/api/v1/engagements", params={"unit": world.u["team"]})).json()
    assert len(team["items"]) == 4
    mine = (await http.get("/api/v1/engagements", params={"person": persons[0]})).json()
    assert [i["unit"] for i in mine["items"]] == [world.u["afd"]]
    bad = await http.get("/api/v1/persons", params={"unit": world.u["team"]})
    assert bad.status_code == 400 and problem_type(bad) == "invalid-filter"
    too_many = await http.get("/api/v1/engagements", params={"limit": 1001})
    assert too_many.status_code == 422 and problem_type(too_many) == "validation-error"
    nowhere = await http.get(f"/api/v1/orgunits/{uid('nowhere')}/people")
    assert nowhere.status_code == 404 and problem_type(nowhere) == "unknown-unit"
    bad_id = await http.put("/api/v1/persons/not-a-uuid", json=world.person_body("A", "B"))
    assert bad_id.status_code == 400 and problem_type(bad_id) == "invalid-uuid"

    people = (await http.get(f"/api/v1/orgunits/{world.u['forv']}/people", params={"subtree": "true"})).json()
    assert len(people["items"]) == 5
    assert {i["job_function"]["name"] for i in people["items"]} == {"Konsulent"}
    as_documented(people, Page[UnitPerson])
    only = (await http.get(f"/api/v1/orgunits/{world.u['afd']}/people")).json()
    assert [i["person"]["uuid"] for i in only["items"]] == [persons[0]]
    as_documented(only, Page[UnitPerson])


async def test_each_rule_is_refused_with_a_problem_and_nothing_is_stored(world: World) -> None:
    http = world.http
    p = await world.person("Anna Jensen")

    async def refused(method: str, url: str, body: dict, kind: str, status: int = 422) -> None:
        r = await http.request(method, url, json=body)
        assert r.status_code == status, r.text
        assert problem_type(r) == kind, r.text
        assert r.json()["detail"]

    pb = world.person_body
    await refused("POST", "/api/v1/persons", pb("A", "B", cpr="12345"), "invalid-cpr")
    await refused("POST", "/api/v1/persons", pb("A", "B", cpr="310290-1234"), "invalid-cpr")  # 31 Feb
    await refused("POST", "/api/v1/persons", pb("A", "B", cpr="290200-1234"), "invalid-cpr")  # 1900 no leap
    ok = await http.post("/api/v1/persons", json=pb("Leap", "Baby", cpr="290200-4234"))  # 2000 leap year
    assert ok.status_code == 201, ok.text
    await refused("POST", "/api/v1/persons", pb("Same", "Cpr", cpr="2902004234"), "cpr-in-use", 409)
    await refused(
        "POST",
        "/api/v1/persons",
        pb("A", "B", addresses=[{"scope": "email", "value": "nope"}]),
        "invalid-email",
    )
    await refused(
        "POST",
        "/api/v1/persons",
        pb("A", "B", validity={"from": "2020-01-01", "to": "2019-01-01"}),
        "invalid-validity",
    )

    eb = world.engagement_body
    await refused("POST", "/api/v1/engagements", eb(p, uid("nowhere")), "unknown-unit")
    await refused("POST", "/api/v1/engagements", eb(p, world.u["closing"]), "unit-not-active")
    await refused(
        "POST",
        "/api/v1/engagements",
        eb(p, world.u["team"], validity={"from": "1999-01-01"}),
        "unit-not-active",
    )
    await refused(
        "POST",
        "/api/v1/engagements",
        eb(p, world.u["team"], job_function=world.c["afdeling"]),
        "class-wrong-facet",
    )
    await refused(
        "POST",
        "/api/v1/engagements",
        eb(p, world.u["team"], engagement_type=uid("x")),
        "unknown-class",
    )
    await refused("POST", "/api/v1/engagements", eb(uid("ghost"), world.u["team"]), "unknown-person")
    await refused(
        "POST",
        "/api/v1/engagements",
        eb(p, world.u["team"], validity={"from": "2019-01-01"}),
        "person-not-active",
    )
    ok = await http.post(
        "/api/v1/engagements",
        json=eb(p, world.u["closing"], validity={"from": "2021-01-01", "to": "2026-06-01"}),
    )
    assert ok.status_code == 201, ok.text

    e1 = await world.engagement(p, world.u["team"], primary=True)
    await refused(
        "POST",
        "/api/v1/engagements",
        eb(p, world.u["afd"], primary=True, validity={"from": "2025-01-01"}),
        "single-primary-engagement",
    )
    await world.engagement(p, world.u["afd"], primary=False)  # a second, non-primary engagement is fine
    await refused(
        "PATCH",
        f"/api/v1/engagements/{e1}",
        {"person": uid("person:other"), "validity": {"from": "2026-01-01"}},
        "person-immutable",
    )

    await refused(
        "POST",
        "/api/v1/managers",
        {
            "unit": world.u["team"],
            "manager_type": world.c["niveau1"],
            "manager_level": world.c["niveau1"],
        },
        "class-wrong-facet",
    )
    await refused(
        "POST",
        "/api/v1/associations",
        {"person": p, "unit": world.u["team"], "association_type": world.c["barsel"]},
        "class-wrong-facet",
    )

    lb = {"person": p, "engagement": e1, "leave_type": world.c["barsel"]}
    await refused(
        "POST",
        "/api/v1/leaves",
        {**lb, "validity": {"from": "2020-06-01", "to": "2021-06-01"}},
        "leave-outside-engagement",
    )
    await refused("POST", "/api/v1/leaves", {**lb, "engagement": uid("none")}, "unknown-engagement")
    other = await world.person("Bo Olsen")
    await refused("POST", "/api/v1/leaves", {**lb, "person": other}, "leave-person-mismatch")
    leave = await http.post("/api/v1/leaves", json={**lb, "validity": {"from": "2026-05-01", "to": "2026-08-01"}})
    assert leave.status_code == 201, leave.text

    await refused(
        "POST",
        f"/api/v1/engagements/{e1}/terminate",
        {"to": "2026-06-01"},
        "engagement-has-leaves",
        409,
    )
    await refused(
        "POST",
        f"/api/v1/persons/{p}/terminate",
        {"to": "2026-06-01"},
        "person-has-active-relations",
        409,
    )
    await refused("POST", f"/api/v1/persons/{p}/terminate", {"to": "2010-01-01"}, "terminate-before-start")
    await refused(
        "PATCH",
        f"/api/v1/persons/{p}",
        {"nickname": "x", "validity": {"from": "2001-01-01", "to": "2002-01-01"}},
        "not-active-in-period",
    )

    engagements = (await http.get("/api/v1/engagements", params={"person": p})).json()["items"]
    assert len(engagements) == 3  # the refused ones left nothing behind
    assert (await http.get("/api/v1/persons", headers=READER)).status_code == 200
    w = await http.post("/api/v1/persons", json=pb("No", "Write"), headers=READER)
    assert w.status_code == 403 and problem_type(w) == "forbidden"


async def test_prefer_return_minimal_answers_without_a_body_and_reveals_nothing(world: World) -> None:
    """The importer's writes: 201/204 with the ETag, the state stored as usual, and no CPR number
    revealed, so nothing to audit (a full answer to an admin reveals it and is audited)."""
    http = world.http
    minimal = {"Prefer": "respond-async, return=minimal; x=1"}  # RFC 7240: a list, with parameters
    p = uid("person:Inger Christensen")
    body = {**world.person_body("Inger", "Christensen"), "cpr": "160135-1236"}
    created = await http.put(f"/api/v1/persons/{p}", json=body, headers=minimal)
    assert created.status_code == 201 and created.content == b"", created.text
    assert created.headers["etag"] == '"1"' and created.headers["preference-applied"] == "return=minimal"
    same = await http.put(f"/api/v1/persons/{p}", json=body, headers=minimal)
    assert same.status_code == 204 and same.headers["etag"] == '"1"'
    changed = await http.put(f"/api/v1/persons/{p}", json={**body, "nickname": "IC"}, headers=minimal)
    assert changed.status_code == 204 and changed.headers["etag"] == '"2"'
    stored = (await http.get(f"/api/v1/persons/{p}", headers=READER)).json()
    assert stored["nickname"] == "IC" and stored["version"] == 2 and stored["has_cpr"] is True
    assert (await http.get("/api/v1/audit", params={"person": p})).json()["items"] == []

    full = await http.put(f"/api/v1/persons/{p}", json=body)  # without the preference: the whole state
    assert full.status_code == 200 and full.json()["cpr"] == "160135-1236" and full.json()["version"] == 3
    audit = (await http.get("/api/v1/audit", params={"person": p})).json()["items"]
    assert [a["endpoint"] for a in audit] == ["PUT /api/v1/persons/{uuid}"]


async def test_a_batch_answers_each_put_as_if_sent_alone_and_writes_every_good_one(world: World) -> None:
    http = world.http
    p, q, e = uid("person:Bente Batch"), uid("person:Carl Batch"), uid("engagement:Bente Batch")
    first = {
        "operations": [
            {"path": f"/api/v1/persons/{p}", "body": world.person_body("Bente", "Batch")},
            {"path": f"/persons/{q}", "body": world.person_body("Carl", "Batch")},  # /api/v1 may be left out
            {"path": f"/persons/{uid('person:No Name')}", "body": {"validity": {"from": "2020-01-01"}}},
            {"path": f"/persons/{uid('person:Bad CPR')}", "body": world.person_body("Bad", "Cpr", cpr="3213701234")},
            {"path": f"/units/{uid('unit:x')}", "body": {}},
            {"path": "/persons/not-a-uuid", "body": world.person_body("Not", "Uuid")},
        ]
    }
    r = await http.post("/api/v1/batch", json=first)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["status"] for x in results] == [201, 201, 422, 422, 404, 400]
    assert results[0]["version"] == 1 and results[0]["problem"] is None
    missing_name = results[2]["problem"]
    assert (
        missing_name["type"].endswith("validation-error") and missing_name["instance"] == first["operations"][2]["path"]
    )
    assert {f["field"] for f in missing_name["errors"]} == {"given_name", "surname"}
    assert problem_type_of(results[3]) == "invalid-cpr", results[3]
    assert problem_type_of(results[5]) == "invalid-uuid"
    for person, name in ((p, "Bente"), (q, "Carl")):
        assert (await http.get(f"/api/v1/persons/{person}")).json()["given_name"] == name
    assert (await http.get(f"/api/v1/persons/{uid('person:No Name')}")).status_code == 404

    # Again with one change and a dependent write: unchanged is 200 at the same version.
    second = {
        "operations": [
            {"path": f"/persons/{p}", "body": world.person_body("Bente", "Batch")},
            {"path": f"/persons/{q}", "body": world.person_body("Carl", "Batchesen")},
            {"path": f"/engagements/{e}", "body": world.engagement_body(p, world.u["team"])},
            {"path": f"/engagements/{uid('engagement:nowhere')}", "body": world.engagement_body(p, uid("unit:nope"))},
            {"path": f"/persons/{q}", "body": world.person_body("Carl", "Batch"), "if_match": 1},
        ]
    }
    results = (await http.post("/api/v1/batch", json=second)).json()["results"]
    assert [(x["status"], x["version"]) for x in results[:3]] == [(200, 1), (200, 2), (201, 1)]
    assert results[3]["status"] == 422 and problem_type_of(results[3]) == "unknown-unit"
    assert results[4]["status"] in (200, 412)  # raced the rename of the same person in this batch

    # The envelope itself: a reader may not write, an empty or oversized batch is refused whole.
    r = await http.post("/api/v1/batch", json=first, headers=READER)
    assert r.status_code == 403 and problem_type(r) == "forbidden"
    for operations in ([], [{"path": f"/persons/{p}", "body": {}}] * 101):
        r = await http.post("/api/v1/batch", json={"operations": operations})
        assert r.status_code == 422 and problem_type(r) == "validation-error"
    assert (await http.get(f"/api/v1/persons/{p}/history")).json()["version"] == 1


def problem_type_of(result: dict[str, object]) -> str:
    problem = result["problem"]
    assert isinstance(problem, dict)
    return str(problem["type"]).rsplit(":", 1)[-1]
