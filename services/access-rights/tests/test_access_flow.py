"""Acceptance: org events in, access and account events out, on real RabbitMQ and a MongoDB-wire server."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any

from orgdir_tools.testkit import APPROVER, WRITER

ROOT, FORV_A, FORV_B, TEAM = "u-root", "u-forv-a", "u-forv-b", "u-team"
JF = "jf-sagsbehandler"


def v(start: str | date, end: str | date | None = None) -> dict[str, Any]:
    return {"from": str(start), "to": str(end) if end else None}


async def catalogue(env: Any) -> dict[str, str]:
    """AD with a 5-day grace period, three roles in it, and two subtree assignments."""
    await env.ok(
        "PUT",
        "/api/v1/it-systems/sys-ad",
        201,
        json={
            "validity": v("2000-01-01"),
            "user_key": "AD",
            "name": "Active Directory",
            "username_rule": "{given:3}{surname:3}",
            "offboarding": "disable",
            "grace_days": 5,
        },
    )
    for role, name in (("role-a", "Fildrev A"), ("role-b", "Fildrev B"), ("role-c", "VPN")):
        await env.ok(
            "PUT",
            f"/api/v1/roles/{role}",
            201,
            json={"validity": v("2000-01-01"), "it_system": "sys-ad", "name": name},
        )
    a = await env.ok(
        "POST",
        "/api/v1/assignments",
        201,
        json={"validity": v("2000-01-01"), "role": "role-a", "unit": FORV_A, "inherit": True},
    )
    b = await env.ok(
        "POST",
        "/api/v1/assignments",
        201,
        json={"validity": v("2000-01-01"), "role": "role-b", "unit": FORV_B, "inherit": True},
    )
    return {"a": a["uuid"], "b": b["uuid"]}


async def tree(env: Any) -> None:
    f = env.feed
    await f.job_function(JF, "Sagsbehandler")
    await f.unit(ROOT, "Kommune", None)
    await f.unit(FORV_A, "Forvaltning A", ROOT)
    await f.unit(FORV_B, "Forvaltning B", ROOT)
    await f.unit(TEAM, "Team Løn", FORV_A)
    await env.settled()


def roles_of(events: list[Any], kind: str, subject: str) -> list[str]:
    return sorted(e.data["role"] for e in events if e.type == kind and e.subject == subject)


async def test_hire_move_end_and_offboarding(env: Any) -> None:
    await tree(env)
    ids = await catalogue(env)
    f, ev = env.feed, env.events
    await f.person("p-soeren", "Søren", "Østergaard")
    await f.engage("e-1", "p-soeren", TEAM, JF, "2025-03-01")
    await env.settled()
    await ev.wait_type("access.granted", subject="p-soeren")
    acc = await ev.wait_type("account.requested")
    assert acc[0].data["username"] == "soeoes" and acc[0].data["it_system"] == "sys-ad"
    granted = ev.of_type("access.granted", subject="p-soeren")
    assert [g.data["role"] for g in granted] == ["role-a"]
    reason = granted[0].data["reasons"][0]
    assert reason == {
        "kind": "unit",
        "assignment": ids["a"],
        "unit": FORV_A,
        "via_unit": TEAM,
        "job_function": None,
        "role_group": None,
        "kle": None,
        "aspect": None,
    }
    assert granted[0].sequence == 1

    # A namesake gets the next free username, deterministically.
    await f.person("p-soeren2", "Søren", "Østergaard")
    await f.engage("e-2", "p-soeren2", FORV_B, JF, "2025-01-01")
    await env.settled()
    accs = await ev.wait_type("account.requested", count=2)
    assert sorted(a.data["username"] for a in accs) == ["soeoes", "soeoes2"]

    # Direct right, then move the team under B: B granted, A revoked, C kept.
    await env.ok(
        "POST",
        "/api/v1/assignments",
        201,
        json={"validity": v("2025-01-01"), "role": "role-c", "person": "p-soeren"},
    )
    await env.settled()
    await ev.wait_for(lambda _: roles_of(ev.events, "access.granted", "p-soeren") == ["role-a", "role-c"])
    await f.move(TEAM, FORV_B, date(2025, 3, 3))
    await env.settled()
    await ev.wait_for(lambda _: "role-b" in roles_of(ev.events, "access.granted", "p-soeren"))
    await ev.wait_type("access.revoked", subject="p-soeren")
    assert roles_of(ev.events, "access.revoked", "p-soeren") == ["role-a"]
    rights = await env.ok("GET", "/api/v1/persons/p-soeren/rights")
    assert sorted(r["role"] for r in rights["rights"]) == ["role-b", "role-c"]
    b = next(r for r in rights["rights"] if r["role"] == "role-b")
    assert b["reasons"][0]["unit"] == FORV_B and b["reasons"][0]["via_unit"] == TEAM
    # nothing else was said about the namesake: their rights did not change
    assert roles_of(ev.events, "access.revoked", "p-soeren2") == []
    holders = await env.ok("GET", "/api/v1/roles/role-b/holders")
    assert sorted(h["person"] for h in holders["items"]) == ["p-soeren", "p-soeren2"]
    unit = await env.ok("GET", f"/api/v1/orgunits/{TEAM}/rights")
    assert unit["ancestors"] == [FORV_B, ROOT] and [r["role"] for r in unit["rights"]] == ["role-b"]
    assert unit["members"] == ["p-soeren"]

    # End on the 10th: nothing yet; on the day B goes; 5 days later C and the account.
    await f.end("e-1", date(2025, 3, 10))
    await env.settled()
    assert roles_of(ev.events, "access.revoked", "p-soeren") == ["role-a"]
    env.clock.set_day(date(2025, 3, 10))
    await env.service.tick()
    await env.app.settle()
    await ev.wait_for(lambda _: roles_of(ev.events, "access.revoked", "p-soeren") == ["role-a", "role-b"])
    assert not ev.of_type("account.disabled")
    env.clock.set_day(date(2025, 3, 15))
    await env.service.tick()
    await env.app.settle()
    disabled = await ev.wait_type("account.disabled")
    assert disabled[0].data["person"] == "p-soeren" and disabled[0].data["status"] == "disabled"
    await ev.wait_for(lambda _: roles_of(ev.events, "access.revoked", "p-soeren") == ["role-a", "role-b", "role-c"])
    revoked_c = next(e for e in ev.of_type("access.revoked", subject="p-soeren") if e.data["role"] == "role-c")
    assert revoked_c.data["validity"]["to"] == "2025-03-15" and revoked_c.data["rights"] == []
    seqs = [e.sequence for e in ev.events if e.subject == "p-soeren" and e.type.startswith("access.")]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    accounts = await env.ok("GET", "/api/v1/accounts", params={"person": "p-soeren"})
    assert [a["status"] for a in accounts["items"]] == ["disabled"]
    scrape = (await env.http.get("/metrics")).text
    assert "orgdir_access_revocation_latency_seconds_count" in scrape


async def test_future_engagement_grants_on_its_first_day(env: Any) -> None:
    await tree(env)
    await catalogue(env)
    f, ev = env.feed, env.events
    await f.person("p-anne", "Anne", "Ærø")
    await f.engage("e-9", "p-anne", FORV_A, JF, "2025-04-01")
    await env.settled()
    assert not ev.of_type("access.granted")
    rights = await env.ok("GET", "/api/v1/persons/p-anne/rights", params={"at": "2025-04-01"})
    assert [r["role"] for r in rights["rights"]] == ["role-a"]
    env.clock.set_day(date(2025, 3, 31))
    await env.service.tick()
    await env.app.settle()
    assert not ev.of_type("access.granted")
    env.clock.set_day(date(2025, 4, 1))
    await env.service.tick()
    granted = await ev.wait_type("access.granted")
    assert granted[0].data["validity"] == {"from": "2025-04-01", "to": None}
    acc = await ev.wait_type("account.requested")
    assert acc[0].data["username"] == "annaer"


async def test_job_function_assignment_exclusion_and_role_group(env: Any) -> None:
    await tree(env)
    await catalogue(env)
    await env.ok(
        "PUT",
        "/api/v1/roles/role-d",
        201,
        json={"validity": v("2000-01-01"), "it_system": "sys-ad", "name": "ESDH"},
    )
    r = await env.http.put(
        "/api/v1/role-groups/g-1",
        json={"validity": v("2000-01-01"), "name": "Sag", "roles": ["role-c", "role-d", "role-c"]},
    )
    assert r.status_code == 422 and r.json()["type"] == "urn:orgdir:problem:duplicate-role"
    assert (await env.http.get("/api/v1/role-groups/g-1")).status_code == 404
    await env.ok(
        "PUT",
        "/api/v1/role-groups/g-1",
        201,
        json={"validity": v("2000-01-01"), "name": "Sag", "roles": ["role-c", "role-d"]},
    )
    f, ev = env.feed, env.events
    for p in ("p-1", "p-2"):
        await f.person(p, "Ida", "Holm")
        await f.engage(f"e-{p}", p, TEAM, JF, "2025-01-01")
    await env.settled()
    a = await env.ok(
        "POST",
        "/api/v1/assignments",
        201,
        json={"validity": v("2025-01-01"), "role_group": "g-1", "job_function": JF, "unit": FORV_A},
    )
    await env.settled()
    await ev.wait_for(lambda _: roles_of(ev.events, "access.granted", "p-2") == ["role-a", "role-c", "role-d"])
    rights = await env.ok("GET", "/api/v1/persons/p-1/rights")
    d = next(r for r in rights["rights"] if r["role"] == "role-d")
    assert d["reasons"][0]["kind"] == "job_function" and d["reasons"][0]["role_group"] == "g-1"
    await env.ok(
        "POST",
        f"/api/v1/assignments/{a['uuid']}/exclusions",
        json={"person": "p-2", "reason": "Orlov"},
    )
    await ev.wait_for(lambda _: roles_of(ev.events, "access.revoked", "p-2") == ["role-c", "role-d"])
    assert roles_of(ev.events, "access.revoked", "p-1") == []


async def test_assignment_rules_store_nothing(env: Any) -> None:
    await tree(env)
    await catalogue(env)
    await env.feed.person("p-x", "Bo", "Bøg")
    await env.settled()
    bad = [
        ({"validity": v("2025-01-01"), "role": "nope", "unit": FORV_A}, "unknown-role"),
        ({"validity": v("2025-01-01"), "role": "role-a", "unit": "nope"}, "unknown-unit"),
        ({"validity": v("2025-01-01"), "role": "role-a", "person": "nope"}, "unknown-person"),
        (
            {"validity": v("2025-01-01"), "role": "role-a", "job_function": "nope"},
            "unknown-job-function",
        ),
        ({"validity": v("1990-01-01"), "role": "role-a", "unit": FORV_A}, "outside-validity"),
        (
            {"validity": v("2025-01-01"), "role": "role-a", "role_group": "x", "unit": FORV_A},
            "role-or-role-group",
        ),
        (
            {"validity": v("2025-01-01"), "role": "role-a", "person": "p-x", "inherit": True},
            "inherit-needs-unit",
        ),
    ]
    before = await env.ok("GET", "/api/v1/assignments")
    for body, kind in bad:
        r = await env.http.post("/api/v1/assignments", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["type"] == f"urn:orgdir:problem:{kind}", r.text
    r = await env.http.put("/api/v1/roles/role-z", json={"validity": v("2000-01-01"), "it_system": "nope", "name": "Z"})
    assert r.status_code == 422 and r.json()["type"] == "urn:orgdir:problem:unknown-it-system"
    r = await env.http.put(
        "/api/v1/roles/role-z",
        json={"validity": v("1990-01-01"), "it_system": "sys-ad", "name": "Z"},
    )
    assert r.status_code == 422 and r.json()["type"] == "urn:orgdir:problem:outside-validity"
    after = await env.ok("GET", "/api/v1/assignments")
    assert after["items"] == before["items"]
    assert (await env.http.get("/api/v1/roles/role-z")).status_code == 404


async def test_catalogue_crud_validity_history_and_idempotency(env: Any) -> None:
    body = {
        "validity": v("2024-01-01"),
        "user_key": "OPUS",
        "name": "OPUS Løn",
        "username_rule": "{initials}{surname:4}",
        "offboarding": "delete",
        "grace_days": 0,
    }
    first = await env.ok("PUT", "/api/v1/it-systems/sys-opus", 201, json=body)
    again = await env.ok("PUT", "/api/v1/it-systems/sys-opus", json=body)
    assert first["version"] == again["version"] == 1
    r = await env.http.put("/api/v1/it-systems/sys-x", json={**body, "username_rule": "{shoe}"})
    assert r.json()["type"] == "urn:orgdir:problem:invalid-username-rule"
    patched = await env.ok(
        "PATCH",
        "/api/v1/it-systems/sys-opus",
        json={"validity": {"from": "2025-06-01"}, "grace_days": 14},
        headers={"If-Match": '"1"'},
    )
    assert patched["version"] == 2 and patched["current"]["grace_days"] == 0
    later = await env.ok("GET", "/api/v1/it-systems/sys-opus", params={"at": "2025-07-01"})
    assert later["current"]["grace_days"] == 14 and len(later["timeline"]) == 2
    r = await env.http.patch("/api/v1/it-systems/sys-opus", json={"grace_days": 1}, headers={"If-Match": '"1"'})
    assert r.status_code == 412
    done = await env.ok("POST", "/api/v1/it-systems/sys-opus/terminate", json={"to": "2026-01-01"})
    assert done["timeline"][-1]["validity"]["to"] == "2026-01-01"
    history = await env.ok("GET", "/api/v1/it-systems/sys-opus/history")
    assert history["uuid"] == "sys-opus" and history["version"] == 3
    assert [h["event_type"] for h in history["registrations"]] == [
        "it_system.created",
        "it_system.updated",
        "it_system.terminated",
    ]
    assert history["registrations"][0]["timeline"][0]["grace_days"] == 0
    assert history["timeline"] == done["timeline"]
    # The shared input shapes: a period that is not one, an unknown field, a missing thing.
    r = await env.http.patch(
        "/api/v1/it-systems/sys-opus", json={"validity": {"from": "2025-06-01", "to": "2025-05-01"}, "grace_days": 1}
    )
    assert r.status_code == 422 and r.json()["type"] == "urn:orgdir:problem:invalid-validity", r.text
    r = await env.http.patch("/api/v1/it-systems/sys-opus", json={"colour": "blue"})
    assert r.status_code == 422 and r.json()["type"] == "urn:orgdir:problem:validation-error", r.text
    r = await env.http.post("/api/v1/it-systems/nope/terminate", json={"to": "2026-01-01"})
    assert r.status_code == 404
    r = await env.http.post("/api/v1/it-systems/sys-opus/terminate", json={"to": "2024-01-01"})
    assert r.status_code == 422 and r.json()["type"] == "urn:orgdir:problem:terminate-before-start", r.text
    # from defaults to today
    made = await env.ok("POST", "/api/v1/it-systems", 201, json={"user_key": "NEW", "name": "New"})
    assert made["timeline"][0]["validity"] == {"from": "2025-03-03", "to": None}
    page = await env.ok("GET", "/api/v1/it-systems", params={"limit": 1})
    assert len(page["items"]) == 1
    r = await env.http.get("/api/v1/it-systems", headers=WRITER | {"Authorization": "Bearer nope"})
    assert r.status_code == 401


async def test_sensitive_assignment_needs_another_approver(env: Any) -> None:
    await tree(env)
    await catalogue(env)
    await env.ok(
        "PUT",
        "/api/v1/roles/role-s",
        201,
        json={
            "validity": v("2000-01-01"),
            "it_system": "sys-ad",
            "name": "CPR-opslag",
            "sensitive": True,
        },
    )
    await env.feed.person("p-s", "Mads", "Lund")
    await env.feed.engage("e-s", "p-s", ROOT, JF, "2025-01-01")
    await env.settled()
    a = await env.ok(
        "POST",
        "/api/v1/assignments",
        201,
        headers=APPROVER,
        json={"validity": v("2025-01-01"), "role": "role-s", "person": "p-s"},
    )
    assert a["current"]["status"] == "pending" and a["requested_by"] == "static:approver"
    rights = await env.ok("GET", "/api/v1/persons/p-s/rights")
    assert rights["rights"] == []
    r = await env.http.post(f"/api/v1/assignments/{a['uuid']}/approve", headers=WRITER)
    assert r.status_code == 403 and r.json()["type"] == "urn:orgdir:problem:forbidden"
    r = await env.http.post(f"/api/v1/assignments/{a['uuid']}/approve", headers=APPROVER)
    assert r.status_code == 403 and r.json()["type"] == "urn:orgdir:problem:self-approval"
    ok = await env.ok("POST", f"/api/v1/assignments/{a['uuid']}/approve")
    assert ok["current"]["status"] == "approved" and ok["approved_by"] == "static:admin"
    granted = await env.events.wait_type("access.granted", subject="p-s")
    assert granted[0].data["role"] == "role-s"
    r = await env.http.post(f"/api/v1/assignments/{a['uuid']}/approve")
    assert r.status_code == 409


async def test_a_request_queued_behind_events_in_the_section_goes_first(env: Any) -> None:
    """Jobs queue for the ``rights`` section: a request (someone waits on it) runs before events and
    timers queued earlier, which keep their order among themselves, as requests keep theirs."""
    service = env.service
    ran: list[str] = []

    def job(name: str) -> Any:
        async def run(ticket: Any) -> str:
            ran.append(name)
            return name

        return run

    jobs = [service.in_section(job(f"event {i}"), patient=True) for i in range(5)]
    jobs += [service.in_section(job("request 1")), service.in_section(job("event 5"), patient=True)]
    jobs += [service.in_section(job("request 2"))]
    assert await asyncio.gather(*jobs) == [*(f"event {i}" for i in range(5)), "request 1", "event 5", "request 2"]
    assert ran == ["request 1", "request 2", *(f"event {i}" for i in range(6))]
