"""KLE numbers as an assignment target: the units carrying a KLE number with an aspect confer a role on
their members, on real RabbitMQ and a MongoDB-wire server (the org events published as orgunits would)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from access_rights import domain
from access_rights.readmodel import OrgView
from orgdir.contracts.orgunits import OrgUnitSlice, OrgUnitState
from orgdir.validity import Validity

from .conftest import START, Env, v

KLE = "k-27-24"  # the kle class 27.24
ROOT, SOC, SOC_TEAM, PPR = "u-root", "u-soc", "u-soc-team", "u-ppr"
JF = "jf-sagsbehandler"
UDF = [{"kle": KLE, "aspects": ["udførende", "ansvarlig"]}]


async def org(env: Env) -> None:
    f = env.feed
    await f.job_function(JF, "Sagsbehandler")
    await f.kle_class(KLE, "27.24", "Særlig støtte til børn og unge")
    await f.unit(ROOT, "Kommune", None)
    await f.unit(SOC, "Socialafdelingen", ROOT, kle=UDF)
    await f.unit(SOC_TEAM, "Familieteam", SOC)  # below a KLE unit, no KLE of its own
    await f.unit(PPR, "PPR", ROOT, kle=[{"kle": KLE, "aspects": ["indsigt"]}])
    for person, unit in (("p-anna", SOC), ("p-bo", SOC_TEAM), ("p-cai", PPR)):
        await f.person(person, person[2:].title(), "Hansen")
        await f.engage(f"e-{person}", person, unit, JF, "2020-01-01")
    await env.ok("PUT", "/api/v1/it-systems/sys-sbsys", 201, json={
        "validity": v("2000-01-01"), "user_key": "SBSYS", "name": "SBSYS", "username_rule": "{given:4}{surname:2}",
    })
    await env.ok("PUT", "/api/v1/roles/role-boern", 201, json={
        "validity": v("2000-01-01"), "it_system": "sys-sbsys", "name": "Børnesager",
    })
    await env.settled()


def granted(env: Env, person: str) -> list[Any]:
    return [e for e in env.events.of_type("access.granted", subject=person)]


async def test_a_kle_assignment_reaches_exactly_the_units_carrying_it_with_the_aspect(env: Env) -> None:
    await org(env)
    ev = env.events
    # Bad input: the aspect is required with a KLE number, the number must be a KLE class, aspects are fixed.
    for body, status, kind, field in (
        ({"kle": "27.24"}, 422, "kle-needs-aspect", "aspect"),
        ({"kle": "99.99", "aspect": "udførende"}, 422, "unknown-kle", "kle"),
        ({"kle": JF, "aspect": "udførende"}, 422, "unknown-kle", "kle"),
        ({"kle": "27.24", "aspect": "udførende", "unit": SOC}, 422, "one-target", None),
    ):
        r = await env.http.post("/api/v1/assignments", json={"validity": v("2020-01-01"), "role": "role-boern", **body})
        assert r.status_code == status and r.json()["type"] == f"urn:orgdir:problem:{kind}", r.text
        assert field is None or r.json()["field"] == field
    r = await env.http.post("/api/v1/assignments", json={"role": "role-boern", "kle": KLE, "aspect": "læsende"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "aspect", r.text
    assert (await env.ok("GET", "/api/v1/assignments"))["items"] == []

    # The assignment names the KLE number (its number works as well as its UUID) and an aspect.
    a = await env.ok("POST", "/api/v1/assignments", 201, json={
        "validity": v("2020-01-01"), "role": "role-boern", "kle": "27.24", "aspect": "udførende",
    })
    assert a["target"] == "kle" and a["timeline"][0]["kle"] == KLE and a["timeline"][0]["aspect"] == "udførende"
    created = await ev.wait_type("assignment.created", subject=a["uuid"])
    assert created[0].dataversion == "2" and created[0].data["target"] == "kle"
    await env.settled()

    # Only Anna: her unit carries 27.24 as udførende; Bo's is below it, Cai's has it for indsigt only.
    got = await ev.wait_type("access.granted", subject="p-anna")
    assert got[0].dataversion == "2"
    assert got[0].data["reasons"] == [{
        "kind": "kle", "assignment": a["uuid"], "unit": SOC, "via_unit": SOC, "kle": KLE, "aspect": "udførende",
        "job_function": None, "role_group": None,
    }]
    assert granted(env, "p-bo") == [] and granted(env, "p-cai") == []
    rights = await env.ok("GET", f"/api/v1/orgunits/{SOC}/rights")
    assert [(r["role"], r["reason"]["kind"], r["applies_to"]) for r in rights["rights"]] == [
        ("role-boern", "kle", {"members": True})
    ]
    assert (await env.ok("GET", f"/api/v1/orgunits/{SOC_TEAM}/rights"))["rights"] == []

    # PPR starts doing 27.24 (udførende) in ten days: Cai's right is known now and granted on the day.
    day = START + timedelta(days=10)
    await env.feed.set_kle(PPR, [{"kle": KLE, "aspects": ["udførende", "indsigt"]}], day)
    # Socialafdelingen stops in five days.
    await env.feed.set_kle(SOC, [], START + timedelta(days=5))
    await env.settled()
    cai = (await env.ok("GET", "/api/v1/persons/p-cai/rights", params={"at": str(day)}))["rights"]
    assert [(r["role"], r["validity"]["from"]) for r in cai] == [("role-boern", str(day))]
    anna = (await env.ok("GET", "/api/v1/persons/p-anna/rights", params={"history": "true"}))["rights"]
    assert [r["validity"]["to"] for r in anna] == [str(START + timedelta(days=5))]
    env.clock.set_day(day)
    await env.service.tick()
    await env.app.settle()
    await ev.wait_type("access.granted", subject="p-cai")
    await ev.wait_type("access.revoked", subject="p-anna")
    assert granted(env, "p-bo") == []
    holders = await env.ok("GET", "/api/v1/roles/role-boern/holders")
    assert [h["person"] for h in holders["items"]] == ["p-cai"]


def _unit(uid: str, *slices: tuple[str, str | None, str | None, list[dict[str, Any]]]) -> OrgUnitState:
    return OrgUnitState(uuid=uid, version=1, timeline=[
        OrgUnitSlice(validity=Validity(from_=date.fromisoformat(a), to=date.fromisoformat(b) if b else None),
                     user_key=uid, name=uid, parent=parent, kle=kle)
        for a, b, parent, kle in slices
    ])


def test_a_unit_change_recomputes_exactly_whom_it_can_reach() -> None:
    org = OrgView()
    org.put(1, _unit("root", ("2020-01-01", None, None, [])))
    org.put(1, _unit("soc", ("2020-01-01", None, "root", UDF)))
    org.put(1, _unit("team", ("2020-01-01", None, "soc", [])))
    old = org.units["soc"]
    renamed = [s.model_copy(update={"name": "Social"}) for s in old]
    assert domain.units_to_recompute("soc", old, renamed, org) == set()  # a name reaches nobody
    new_kle = _unit("soc", ("2020-01-01", "2026-01-01", "root", UDF), ("2026-01-01", None, "root", [])).timeline
    assert domain.units_to_recompute("soc", old, new_kle, org) == {"soc"}  # KLE: its own members only
    moved = _unit("soc", ("2020-01-01", "2026-01-01", "root", UDF), ("2026-01-01", None, None, UDF)).timeline
    assert domain.units_to_recompute("soc", old, moved, org) == {"soc", "team"}  # the subtree
    assert domain.units_to_recompute("soc", None, old, org) == {"soc", "team"}  # first seen (or redelivered)
