"""Transaction time (``?registered_at=``, issue #17) and rejecting a pending assignment, on real servers."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from orgdir_tools.testkit import APPROVER, WRITER

from .conftest import START
from .test_access_flow import FORV_A, FORV_B, JF, ROOT, TEAM, catalogue, tree, v


def kind(r: Any) -> str:
    return str(r.json().get("type", "")).rsplit(":", 1)[-1]


async def test_rights_read_as_registered_before_and_after_a_move(env: Any) -> None:
    clock, http = env.clock, env.http
    before_anything = clock.now().isoformat()
    clock.advance(timedelta(hours=1))
    await tree(env)
    ids = await catalogue(env)
    await env.feed.person("p-tt", "Tove", "Thomsen")
    await env.feed.engage("e-tt", "p-tt", TEAM, JF, "2025-01-01")
    await env.settled()
    believed = clock.now().isoformat()
    clock.advance(timedelta(hours=1))
    # Team Løn moves from Forvaltning A to B today, and role-a's assignment ends today.
    await env.feed.move(TEAM, FORV_B, START)
    await env.settled()
    await env.ok("POST", f"/api/v1/assignments/{ids['a']}/terminate", json={"to": str(START + timedelta(days=7))})

    async def read(path: str, **params: str) -> Any:
        return await env.ok("GET", path, params={"at": str(START), **params})

    then = await read("/api/v1/persons/p-tt/rights", registered_at=believed)
    assert [(r["role"], [(x["unit"], x["via_unit"]) for x in r["reasons"]]) for r in then["rights"]] == [
        ("role-a", [(FORV_A, TEAM)])
    ]
    assert then["rights"][0]["role_name"] == "Fildrev A"
    now = await read("/api/v1/persons/p-tt/rights")
    assert [(r["role"], r["reasons"][0]["unit"]) for r in now["rights"]] == [("role-b", FORV_B)]
    assert (await read(f"/api/v1/orgunits/{TEAM}/rights", registered_at=believed))["ancestors"] == [FORV_A, ROOT]
    assert (await read(f"/api/v1/orgunits/{TEAM}/rights"))["ancestors"] == [FORV_B, ROOT]
    holders = await read("/api/v1/roles/role-a/holders", registered_at=believed)
    assert [h["person"] for h in holders["items"]] == ["p-tt"]
    assert (await read("/api/v1/roles/role-a/holders"))["items"] == []
    a_then = await read(f"/api/v1/assignments/{ids['a']}", registered_at=believed)
    assert a_then["version"] == 1 and a_then["timeline"][0]["validity"]["to"] is None
    a_now = await read(f"/api/v1/assignments/{ids['a']}")
    assert a_now["version"] == 2 and a_now["timeline"][0]["validity"]["to"] is not None
    listed = await read("/api/v1/assignments", registered_at=believed, unit=FORV_A, limit="1")
    assert [a["uuid"] for a in listed["items"]] == [ids["a"]] and listed["next_cursor"] is None
    everything = await read("/api/v1/assignments", registered_at=believed, limit="1")
    assert len(everything["items"]) == 1 and everything["next_cursor"] is not None
    rest = await read("/api/v1/assignments", registered_at=believed, cursor=everything["next_cursor"])
    assert {a["uuid"] for a in everything["items"] + rest["items"]} == {ids["a"], ids["b"]}

    # before anything was registered: nothing known; a malformed instant is refused
    r = await http.get(f"/api/v1/assignments/{ids['a']}", params={"registered_at": before_anything})
    assert r.status_code == 404
    assert (await read("/api/v1/assignments", registered_at=before_anything))["items"] == []
    r = await http.get("/api/v1/persons/p-tt/rights", params={"registered_at": before_anything})
    assert r.status_code == 404  # the person was not known yet
    r = await http.get("/api/v1/persons/p-tt/rights", params={"registered_at": "last tuesday"})
    assert r.status_code == 400 and kind(r) == "invalid-instant" and r.json()["field"] == "registered_at"


async def test_a_rejected_request_never_grants_and_stays_rejected(env: Any) -> None:
    await tree(env)
    ids = await catalogue(env)
    await env.ok(
        "PUT",
        "/api/v1/roles/role-s",
        201,
        json={"validity": v("2000-01-01"), "it_system": "sys-ad", "name": "CPR-opslag", "sensitive": True},
    )
    await env.feed.person("p-r", "Rikke", "Dahl")
    await env.feed.engage("e-r", "p-r", ROOT, JF, "2025-01-01")
    await env.settled()
    body = {"validity": v("2025-01-01"), "role": "role-s", "person": "p-r"}
    a = await env.ok("POST", "/api/v1/assignments", 201, headers=APPROVER, json=body)
    uid, http = a["uuid"], env.http
    assert a["current"]["status"] == "pending"

    r = await http.post(f"/api/v1/assignments/{uid}/reject", headers=WRITER)
    assert r.status_code == 403 and kind(r) == "forbidden"  # needs orgdir:approve
    r = await http.post(f"/api/v1/assignments/{uid}/reject", headers=APPROVER)
    assert r.status_code == 403 and kind(r) == "self-approval"  # the four-eyes rule
    r = await http.post(f"/api/v1/assignments/{uid}/reject", json={"why": "x"})
    assert r.status_code == 422
    assert (await env.ok("GET", "/api/v1/assignments", params={"status": "pending"}))["items"][0]["uuid"] == uid

    done = await env.ok("POST", f"/api/v1/assignments/{uid}/reject", json={"reason": "Ikke nødvendigt"})
    assert done["rejected_by"] == "static:admin" and done["rejection_reason"] == "Ikke nødvendigt"
    assert done["rejected_at"] is not None and done["approved_by"] is None
    event = (await env.events.wait_type("assignment.rejected", subject=uid))[0]
    assert event.data["rejected_by"] == "static:admin" and event.sequence == 2
    history = await env.ok("GET", f"/api/v1/assignments/{uid}/history")
    assert history["registrations"][-1]["event_type"] == "assignment.rejected"
    assert history["registrations"][-1]["note"] == "Ikke nødvendigt"

    # it can no longer be approved, rejected again or changed; it never grants
    for verb in ("approve", "reject"):
        r = await http.post(f"/api/v1/assignments/{uid}/{verb}")
        assert r.status_code == 409 and kind(r) == "not-pending", r.text
    r = await http.post(f"/api/v1/assignments/{uid}/terminate", json={"to": "2025-06-01"})
    assert r.status_code == 409 and kind(r) == "assignment-rejected", r.text
    assert (await env.ok("PUT", f"/api/v1/assignments/{uid}", json=body))["version"] == 2  # the same body: no change
    assert (await env.ok("GET", "/api/v1/persons/p-r/rights"))["rights"] == []
    assert (await env.ok("GET", "/api/v1/assignments", params={"status": "pending"}))["items"] == []
    assert [
        x["uuid"] for x in (await env.ok("GET", "/api/v1/assignments", params={"status": "rejected"}))["items"]
    ] == [uid]
    await env.settled()
    assert env.events.of_type("access.granted", subject="p-r") == []

    # only a pending request can be rejected
    r = await http.post(f"/api/v1/assignments/{ids['a']}/reject", json={})
    assert r.status_code == 409 and kind(r) == "not-pending", r.text
    r = await http.post("/api/v1/assignments/nope/reject")
    assert r.status_code == 404
