"""KLE numbers on units, several hierarchies and related units, through the API on real servers."""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Any

import httpx

from orgdir_tools.testkit import EventCollector, RunningApp
from orgunits.vocabulary import class_uuid, kle_uuid

TODAY = date(2026, 3, 2)
LINE, MED = class_uuid("unit_hierarchy", "linje"), class_uuid("unit_hierarchy", "med")


def d(days: int) -> str:
    return (TODAY + timedelta(days=days)).isoformat()


def new_id() -> str:
    return str(uuid.uuid4())


def problem(r: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert body["type"] == f"urn:orgdir:problem:{kind}", body
    return body


async def put(http: httpx.AsyncClient, uid: str, **body: Any) -> dict[str, Any]:
    r = await http.put(f"/api/v1/orgunits/{uid}", json={"validity": {"from": d(-30)}} | body)
    assert r.status_code in (200, 201), r.text
    out: dict[str, Any] = r.json()
    return out


async def test_kle_numbers_on_a_unit_over_time(svc: RunningApp, events: EventCollector) -> None:
    http = svc.http
    unit = new_id()
    kle = [{"kle": "27.24", "aspects": ["indsigt", "udførende"]}, {"kle": kle_uuid("00.01"), "aspects": ["ansvarlig"]}]
    state = await put(http, unit, user_key="SOC", name="Socialafdelingen", kle=kle)
    # Stored by class UUID, aspects in their fixed order; the event carries them (full state).
    assert state["timeline"][0]["kle"] == [
        {"kle": kle_uuid("27.24"), "aspects": ["udførende", "indsigt"]},
        {"kle": kle_uuid("00.01"), "aspects": ["ansvarlig"]},
    ]
    created = await events.wait_type("orgunit.created", 1, subject=unit)
    assert created[0].data["timeline"][0]["kle"] == state["timeline"][0]["kle"]
    # Part of the timeline: from day 10 only 27.24, for indsigt.
    r = await http.patch(f"/api/v1/orgunits/{unit}", json={
        "kle": [{"kle": "27.24", "aspects": ["indsigt"]}], "validity": {"from": d(10)},
    })
    assert r.status_code == 200, r.text
    now = (await http.get(f"/api/v1/orgunits/{unit}")).json()
    later = (await http.get(f"/api/v1/orgunits/{unit}", params={"at": d(10)})).json()
    assert len(now["kle"]) == 2 and later["kle"] == [{"kle": kle_uuid("27.24"), "aspects": ["indsigt"]}]
    before = (await http.get(f"/api/v1/orgunits/{unit}")).json()["version"]

    # Refused with a problem naming the field, and nothing stored.
    for body, kind, field in (
        ([{"kle": "99.99", "aspects": ["udførende"]}], "unknown-class", "kle.0.kle"),
        ([{"kle": class_uuid("unit_type", "skole"), "aspects": ["udførende"]}], "wrong-facet", "kle.0.kle"),
        ([{"kle": "27.24", "aspects": ["udførende"]}, {"kle": "27.24", "aspects": ["indsigt"]}],
         "duplicate-kle", "kle.1.kle"),
        ([{"kle": "27.24", "aspects": ["indsigt", "indsigt"]}], "duplicate-aspect", "kle.0.aspects"),
    ):
        r = await http.patch(f"/api/v1/orgunits/{unit}", json={"kle": body})
        assert problem(r, 422, kind)["field"] == field
    r = await http.patch(f"/api/v1/orgunits/{unit}", json={"kle": [{"kle": "27.24", "aspects": ["læsende"]}]})
    assert problem(r, 422, "validation-error")["errors"][0]["field"] == "kle.0.aspects.0"
    r = await http.patch(f"/api/v1/orgunits/{unit}", json={"kle": [{"kle": "27.24", "aspects": []}]})
    assert problem(r, 422, "validation-error")["errors"][0]["field"] == "kle.0.aspects"
    assert (await http.get(f"/api/v1/orgunits/{unit}")).json()["version"] == before


async def test_hierarchies_filter_the_tree_and_keep_parents_in_their_own(svc: RunningApp) -> None:
    http = svc.http
    kommune, bu, hoved, bu_med = new_id(), new_id(), new_id(), new_id()
    await put(http, kommune, user_key="KK", name="Kommune")
    await put(http, bu, user_key="BU", name="Børn og Unge", parent=kommune)
    await put(http, hoved, user_key="HMU", name="Hovedudvalget", hierarchy="med")
    await put(http, bu_med, user_key="BU-MED", name="BU MED-udvalg", parent=hoved, hierarchy=MED)
    got = (await http.get(f"/api/v1/orgunits/{bu}")).json()
    assert got["hierarchy"] == LINE and (await http.get(f"/api/v1/orgunits/{bu_med}")).json()["hierarchy"] == MED

    # The tree, lists and search show the line organisation by default; ?hierarchy= another; * all.
    tree = (await http.get("/api/v1/tree")).json()
    assert tree["count"] == 2 and [r["uuid"] for r in tree["roots"]] == [kommune]
    med = (await http.get("/api/v1/tree", params={"hierarchy": "med"})).json()
    assert med["count"] == 2 and [r["uuid"] for r in med["roots"]] == [hoved]
    assert [c["uuid"] for c in med["roots"][0]["children"]] == [bu_med]
    assert (await http.get("/api/v1/tree", params={"hierarchy": "*"})).json()["count"] == 4
    names = [u["name"] for u in (await http.get("/api/v1/orgunits", params={"q": "unge"})).json()["items"]]
    assert names == ["Børn og Unge"]
    r = await http.get("/api/v1/orgunits", params={"q": "udvalg", "hierarchy": MED})
    assert [u["name"] for u in r.json()["items"]] == ["BU MED-udvalg", "Hovedudvalget"]
    # Where a unit is named, its own hierarchy is the default; naming another is 404.
    r = await http.get("/api/v1/orgunits", params={"parent": hoved})
    assert [u["uuid"] for u in r.json()["items"]] == [bu_med]
    assert [c["uuid"] for c in (await http.get(f"/api/v1/orgunits/{hoved}/children")).json()["items"]] == [bu_med]
    assert (await http.get(f"/api/v1/orgunits/{hoved}/subtree", params={"hierarchy": "med"})).json()["child_count"] == 1
    body = problem(await http.get(f"/api/v1/orgunits/{hoved}/subtree", params={"hierarchy": "linje"}),
                   404, "not-in-hierarchy")
    assert body["field"] == "hierarchy" and body["hierarchy"] == MED
    problem(await http.get(f"/api/v1/orgunits/{hoved}/children", params={"hierarchy": LINE}), 404, "not-in-hierarchy")
    assert problem(await http.get("/api/v1/tree", params={"hierarchy": "nope"}), 422, "unknown-hierarchy")[
        "field"] == "hierarchy"

    # A parent is in the unit's own hierarchy: refused both ways, naming the field.
    r = await http.post("/api/v1/orgunits", json={"user_key": "X", "name": "X", "parent": kommune, "hierarchy": "med"})
    assert problem(r, 422, "parent-other-hierarchy")["field"] == "parent"
    r = await http.post(f"/api/v1/orgunits/{bu_med}/move", json={"parent": kommune, "validity": {"from": d(5)}})
    assert problem(r, 422, "parent-other-hierarchy")["field"] == "parent"
    r = await http.patch(f"/api/v1/orgunits/{hoved}", json={"hierarchy": "linje"})
    body = problem(r, 422, "children-other-hierarchy")
    assert body["field"] == "hierarchy" and [c["uuid"] for c in body["children"]] == [bu_med]
    r = await http.patch(f"/api/v1/orgunits/{bu}", json={"hierarchy": "ukendt"})
    assert problem(r, 422, "unknown-class")["field"] == "hierarchy"
    # A leaf may change hierarchy (by becoming a root of the other one).
    r = await http.patch(f"/api/v1/orgunits/{bu}", json={"hierarchy": "projekt", "parent": None})
    assert r.status_code == 200, r.text
    assert (await http.get("/api/v1/tree", params={"hierarchy": "projekt"})).json()["roots"][0]["uuid"] == bu


async def test_tree_problems_name_the_field(svc: RunningApp) -> None:
    http = svc.http
    root, child = new_id(), new_id()
    await put(http, root, user_key="R", name="Rod")
    await put(http, child, user_key="C", name="Barn", parent=root)
    r = await http.post("/api/v1/orgunits", json={"user_key": "N", "name": "Ny", "parent": new_id()})
    assert problem(r, 422, "parent-not-found")["field"] == "parent"
    assert problem(await http.post(f"/api/v1/orgunits/{root}/move", json={"parent": child}), 422, "cycle")[
        "field"] == "parent"
    assert problem(await http.post(f"/api/v1/orgunits/{root}/move", json={"parent": root}), 422, "cycle")[
        "field"] == "parent"
    r = await http.post("/api/v1/orgunits", json={"user_key": "r", "name": "Dublet"})
    assert problem(r, 409, "user-key-taken")["field"] == "user_key"
    r = await http.post("/api/v1/classes", json={"facet": "unit_type", "user_key": "skole", "name": "Skole 2"})
    assert problem(r, 409, "user-key-taken")["field"] == "user_key"


async def test_related_units_are_shown_on_both_units_and_end(svc: RunningApp, events: EventCollector) -> None:
    http = svc.http
    a, b, late = new_id(), new_id(), new_id()
    await put(http, a, user_key="A", name="Ældreplejen")
    await put(http, b, user_key="B", name="Hjemmeplejen")
    await put(http, late, user_key="L", name="Ny enhed", validity={"from": d(20)})
    r = await http.post("/api/v1/related-units", json={"units": [b, a], "validity": {"from": d(0)}})
    assert r.status_code == 201, r.text
    rel = r.json()
    assert rel["units"] == sorted([a, b]) and rel["version"] == 1 and rel["timeline"][0]["validity"]["from"] == d(0)
    created = await events.wait_type("related_unit.created", 1, subject=rel["uuid"])
    assert created[0].data["units"] == sorted([a, b]) and created[0].data["timeline"] == rel["timeline"]
    for unit, other in ((a, b), (b, a)):
        got = (await http.get(f"/api/v1/orgunits/{unit}")).json()["related_units"]
        assert got == [{"uuid": rel["uuid"], "unit": other, "validity": {"from": d(0), "to": None}}]
    assert (await http.get(f"/api/v1/orgunits/{a}", params={"at": d(-1)})).json()["related_units"] == []
    listed = (await http.get("/api/v1/related-units", params={"unit": a})).json()["items"]
    assert [x["uuid"] for x in listed] == [rel["uuid"]]

    # Refused: the same pair again, a unit with itself, a unit not active over the period, an unknown unit.
    body = problem(await http.post("/api/v1/related-units", json={"units": [a, b]}), 409, "relation-exists")
    assert body["field"] == "units" and body["holder"] == rel["uuid"]
    problem(await http.post("/api/v1/related-units", json={"units": [a, a]}), 422, "same-unit")
    body = problem(await http.post("/api/v1/related-units", json={"units": [a, late]}), 422, "unit-not-active")
    assert body["field"] == "units" and body["unit"] == late
    problem(await http.post("/api/v1/related-units", json={"units": [a, new_id()]}), 422, "unknown-unit")
    r = await http.put(f"/api/v1/related-units/{rel['uuid']}", json={"units": [a, late]})
    assert problem(r, 422, "units-fixed")["field"] == "units"

    # End it: from day 30 neither unit shows it; the event carries the ended timeline.
    r = await http.post(f"/api/v1/related-units/{rel['uuid']}/terminate", json={"to": d(30)})
    assert r.status_code == 200 and r.json()["timeline"][-1]["validity"]["to"] == d(30), r.text
    ended = await events.wait_type("related_unit.terminated", 1, subject=rel["uuid"])
    assert ended[0].data["timeline"][-1]["validity"]["to"] == d(30) and ended[0].sequence == 2
    assert (await http.get(f"/api/v1/orgunits/{b}", params={"at": d(30)})).json()["related_units"] == []
    assert len((await http.get(f"/api/v1/orgunits/{b}", params={"at": d(29)})).json()["related_units"]) == 1
    history = (await http.get(f"/api/v1/related-units/{rel['uuid']}/history")).json()
    assert [h["event_type"] for h in history["registrations"]] == ["related_unit.created", "related_unit.terminated"]
    # After the end, the pair may be related again.
    r = await http.post("/api/v1/related-units", json={"units": [a, b], "validity": {"from": d(30)}})
    assert r.status_code == 201, r.text
