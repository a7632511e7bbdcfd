"""Scoped administration in the registry: a writer on one subtree (issue #16), on real servers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from orgdir.clock import ManualClock
from orgdir.settings import ALL_ROLES, Settings, StaticToken
from orgdir_tools.registry_support import TODAY, OrgFeed, World, problem_type, registry_settings, uid
from orgdir_tools.testkit import RunningApp, settings_for
from registry.app import create_app

FORV = uid("Borgerservice")  # the seeded tree: Aarhus Kommune > Borgerservice > Afdeling for Løn > Team Ørsted
TOKENS = {
    "admin": StaticToken(token="scope-admin", roles=ALL_ROLES),
    "forv": StaticToken(token="scope-forv", roles=["orgdir:read", f"orgdir:write@{FORV}"]),
    "bound": StaticToken(token="scope-bound", roles=["orgdir:read"]),
}
BINDINGS = {"static:bound": ["orgdir:write@afdeling-for-løn"]}  # by user_key, from the binding list


def as_(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name].token}"}


@pytest.fixture
async def scoped(ns: str, amqp_url: str, mongodb_url: str) -> AsyncIterator[World]:
    settings = registry_settings(ns, amqp_url, mongodb_url, static_tokens=TOKENS, role_bindings=BINDINGS)
    clock = ManualClock()
    clock.set_day(TODAY)
    feed_settings = settings_for(Settings, ns=ns, service="orgunits", amqp_url=amqp_url, mongodb_url=mongodb_url)
    async with RunningApp(create_app(settings, clock), as_("admin")) as app, OrgFeed(feed_settings) as feed:
        w = World(app, clock, feed, settings)
        await w.seed()
        yield w


async def test_a_writer_scoped_to_a_subtree_writes_inside_only(scoped: World) -> None:
    w, http = scoped, scoped.http
    ida = await w.person("Ida Holm")
    inside = await w.engagement(ida, w.u["team"])
    outside = await w.engagement(ida, w.u["closing"], validity={"from": "2021-01-01", "to": "2026-06-01"})

    # inside the subtree: hire, change, put on leave, end
    r = await http.post("/api/v1/engagements", json=w.engagement_body(ida, w.u["afd"]), headers=as_("forv"))
    assert r.status_code == 201, r.text
    r = await http.patch(
        f"/api/v1/engagements/{inside}", json={"fraction": 0.5, "validity": {"from": "2026-04-01"}}, headers=as_("forv")
    )
    assert r.status_code == 200, r.text
    leave = {"person": ida, "engagement": inside, "leave_type": w.c["barsel"], "validity": {"from": "2026-05-01"}}
    assert (await http.post("/api/v1/leaves", json=leave, headers=as_("forv"))).status_code == 201

    # outside: a hire above the scope, a move out of it, ending someone else's engagement, a new person
    before = (await http.get(f"/api/v1/engagements/{inside}/history")).json()["version"]
    r = await http.post("/api/v1/engagements", json=w.engagement_body(ida, w.u["root"]), headers=as_("forv"))
    assert r.status_code == 403 and problem_type(r) == "out-of-scope", r.text
    body = r.json()
    assert body["scope"] == [FORV] and body["units"] == [w.u["root"]] and "Borgerservice" in body["detail"]
    r = await http.patch(
        f"/api/v1/engagements/{inside}",
        json={"unit": w.u["root"], "validity": {"from": "2026-04-01"}},
        headers=as_("forv"),
    )
    assert r.status_code == 403 and problem_type(r) == "out-of-scope", r.text
    assert (await http.get(f"/api/v1/engagements/{inside}/history")).json()["version"] == before  # nothing changed
    r = await http.post(f"/api/v1/engagements/{outside}/terminate", json={"to": "2026-04-01"}, headers=as_("forv"))
    assert r.status_code == 403, r.text
    r = await http.put(f"/api/v1/persons/{uid('person:Ny')}", json=w.person_body("Ny", "Person"), headers=as_("forv"))
    assert r.status_code == 403 and problem_type(r) == "out-of-scope", r.text  # a person has no unit

    # reads are not scoped
    assert (
        await http.get(f"/api/v1/engagements/{outside}", params={"at": "2026-03-10"}, headers=as_("forv"))
    ).status_code == 200


async def test_a_binding_from_the_list_names_the_unit_by_user_key(scoped: World) -> None:
    w, http = scoped, scoped.http
    ida = await w.person("Ida Holm")
    r = await http.post("/api/v1/engagements", json=w.engagement_body(ida, w.u["team"]), headers=as_("bound"))
    assert r.status_code == 201, r.text
    r = await http.post("/api/v1/engagements", json=w.engagement_body(ida, w.u["forv"]), headers=as_("bound"))
    assert r.status_code == 403 and r.json()["units"] == [w.u["forv"]], r.text
