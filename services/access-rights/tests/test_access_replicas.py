"""Two replicas of access-rights on one database and one broker answer and decide like one.

Replica A starts first, so RabbitMQ gives it the single-active org queue; B
waits on it. Org events are published to the shared exchange as orgunits and
registry would; catalogue writes go through either replica's API.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from pymongo.errors import ConnectionFailure

from orgdir import metrics
from orgdir.store import Change
from orgdir_tools.testkit import RunningApp, eventually

START = date(2025, 3, 3)  # the fixtures' today
ROOT, U1, U2, U3 = "u-root", "u-1", "u-2", "u-3"
JF = "jf-1"


def v(start: str | date, end: str | date | None = None) -> dict[str, Any]:
    return {"from": str(start), "to": str(end) if end else None}


async def ok(app: RunningApp, method: str, url: str, status: int | tuple[int, ...] = (200, 201), **kw: Any) -> Any:
    r = await app.http.request(method, url, **kw)
    expected = (status,) if isinstance(status, int) else status
    assert r.status_code in expected, r.text
    return r.json()


def service(app: RunningApp) -> Any:
    return app.app.state.access


async def catalogue(app: RunningApp, units: dict[str, str]) -> None:
    """AD, one role per unit and a subtree assignment of it to the unit (fixed ids)."""
    await ok(
        app,
        "PUT",
        "/api/v1/it-systems/sys-ad",
        json={"validity": v("2000-01-01"), "user_key": "AD", "name": "AD", "grace_days": 0},
    )
    for unit, role in units.items():
        await ok(
            app, "PUT", f"/api/v1/roles/{role}", json={"validity": v("2000-01-01"), "it_system": "sys-ad", "name": role}
        )
        await ok(
            app,
            "PUT",
            f"/api/v1/assignments/as-{role}",
            json={"validity": v("2000-01-01"), "role": role, "unit": unit, "inherit": True},
        )


async def tree(feed: Any, *units: str) -> None:
    await feed.job_function(JF, "Sagsbehandler")
    await feed.unit(ROOT, "Kommune", None)
    for u in units:
        await feed.unit(u, u, ROOT)


async def hire(feed: Any, people: dict[str, str]) -> None:
    for i, (p, unit) in enumerate(sorted(people.items())):
        await feed.person(p, ["Karen", "Jens", "Ole"][i % 3], ["Nielsen", "Hansen"][i % 2])
        await feed.engage(f"e-{p}", p, unit, JF, "2025-01-01")


async def rights(app: RunningApp, person: str, **params: Any) -> list[dict[str, Any]]:
    body = await ok(app, "GET", f"/api/v1/persons/{person}/rights", 200, params=params)
    return list(body["rights"])


def roles(items: list[dict[str, Any]]) -> list[str]:
    return sorted(r["role"] for r in items)


async def accounts(app: RunningApp) -> list[tuple[str, str, str]]:
    items: list[tuple[str, str, str]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        page = await ok(app, "GET", "/api/v1/accounts", 200, params=params)
        items += [(a["person"], a["username"], a["status"]) for a in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            return sorted(items)


async def published(app: RunningApp) -> dict[str, list[str]]:
    return {
        d["_id"]: sorted(r["role"] for r in d["state"]["rights"])
        async for d in app.runtime.db["person_rights"].find({})
    }


def granted_once(pair: Any) -> None:
    """Every right was granted once, and each person's access events carry distinct, rising sequences."""
    seen: dict[tuple[str, str], int] = {}
    for e in pair.events.of_type("access.granted"):
        key = (e.subject, e.data["role"])
        seen[key] = seen.get(key, 0) + 1
    assert all(n == 1 for n in seen.values()), {k: n for k, n in seen.items() if n > 1}
    for subject in {e.subject for e in pair.events.events if e.type.startswith("access.")}:
        seqs = [e.sequence for e in pair.events.events if e.subject == subject and e.type.startswith("access.")]
        assert len(set(seqs)) == len(seqs), (subject, seqs)


async def dead_letters(pair: Any) -> int:
    assert pair.feed.bus.connection is not None
    channel = await pair.feed.bus.connection.channel()
    try:
        queue = await channel.declare_queue(f"{pair.settings.queue('org')}.dead", passive=True)
        return int(queue.declaration_result.message_count or 0)
    finally:
        await channel.close()


async def test_org_events_are_handled_once_and_both_replicas_answer_alike(pair: Any) -> None:
    await tree(pair.feed, U1, U2)
    await pair.settled(pair.a)
    await catalogue(pair.a, {U1: "r-1"})
    await catalogue(pair.b, {U2: "r-2"})  # the catalogue is written through either replica
    people = {f"p-{i:02d}": (U1 if i % 2 else U2) for i in range(10)}
    await hire(pair.feed, people)
    await pair.settled(pair.a)
    await pair.a.settle()
    await pair.b.settle()

    # One replica handled the org queue, each event once.
    handled = (service(pair.a).handled, service(pair.b).handled)
    assert handled == (len(pair.feed.published), 0), handled
    await pair.events.wait_type("access.granted", count=len(people))
    await pair.events.wait_type("account.requested", count=len(people))
    granted_once(pair)

    expected = {p: ["r-1" if u == U1 else "r-2"] for p, u in people.items()}
    for p in people:
        ra, rb = await rights(pair.a, p), await rights(pair.b, p)
        assert roles(ra) == expected[p] and ra == rb, (p, ra, rb)
        assert await rights(pair.a, p, history="true") == await rights(pair.b, p, history="true")
    assert await published(pair.a) == expected
    acc_a, acc_b = await accounts(pair.a), await accounts(pair.b)
    assert acc_a == acc_b and len({u for _, u, _ in acc_a}) == len(people)
    for role in ("r-1", "r-2"):
        ha = await ok(pair.a, "GET", f"/api/v1/roles/{role}/holders", 200)
        hb = await ok(pair.b, "GET", f"/api/v1/roles/{role}/holders", 200)
        assert ha == hb and len(ha["items"]) == 5
    ua = await ok(pair.a, "GET", f"/api/v1/orgunits/{U1}/rights", 200)
    assert ua == await ok(pair.b, "GET", f"/api/v1/orgunits/{U1}/rights", 200)
    for r in (pair.a, pair.b):
        assert (await r.http.get("/readyz")).status_code == 200


async def test_a_write_through_one_replica_reads_through_the_other_within_a_second(pair: Any) -> None:
    await tree(pair.feed, U1)
    await hire(pair.feed, {"p-1": U1, "p-2": U1})
    await pair.settled(pair.a)
    await catalogue(pair.a, {U1: "r-1"})
    await ok(pair.a, "PUT", "/api/v1/roles/r-x", json={"validity": v("2000-01-01"), "it_system": "sys-ad", "name": "X"})

    # Through A (the org consumer): A's own read at once, B's within a second.
    made = await ok(
        pair.a, "POST", "/api/v1/assignments", 201, json={"validity": v("2025-01-01"), "role": "r-x", "person": "p-1"}
    )
    assert roles(await rights(pair.a, "p-1")) == ["r-1", "r-x"]
    await eventually(lambda: _has(pair.b, "p-1", "r-x"), within=1.0, interval=0.02)
    assert (await ok(pair.b, "GET", f"/api/v1/assignments/{made['uuid']}", 200))["uuid"] == made["uuid"]
    holders = await ok(pair.b, "GET", "/api/v1/roles/r-x/holders", 200)
    assert [h["person"] for h in holders["items"]] == ["p-1"]

    # Through B (not the consumer): B recomputes in the section; A sees it within a second.
    await ok(
        pair.b, "POST", "/api/v1/assignments", 201, json={"validity": v("2025-01-01"), "role": "r-x", "person": "p-2"}
    )
    assert roles(await rights(pair.b, "p-2")) == ["r-1", "r-x"]
    await eventually(lambda: _has(pair.a, "p-2", "r-x"), within=1.0, interval=0.02)
    await pair.events.wait_for(
        lambda evs: (
            {(e.subject, e.data["role"]) for e in evs if e.type == "access.granted"} >= {("p-1", "r-x"), ("p-2", "r-x")}
        )
    )
    # A rule another replica's write made true holds on the other at once: a role of B's
    # IT system, written through B, is known to A's validation.
    await ok(
        pair.b,
        "PUT",
        "/api/v1/it-systems/sys-b",
        json={"validity": v("2000-01-01"), "user_key": "B", "name": "B", "grace_days": 0},
    )
    await ok(
        pair.a, "PUT", "/api/v1/roles/r-b", 201, json={"validity": v("2000-01-01"), "it_system": "sys-b", "name": "B"}
    )

    # A new engagement handled by A grants what B assigned to the unit.
    await ok(
        pair.b, "PUT", "/api/v1/assignments/as-b", 201, json={"validity": v("2000-01-01"), "role": "r-b", "unit": U1}
    )
    await hire(pair.feed, {"p-3": U1})
    await pair.settled(pair.a)
    await pair.events.wait_for(
        lambda evs: {e.data["role"] for e in evs if e.type == "access.granted" and e.subject == "p-3"} == {"r-1", "r-b"}
    )
    assert roles(await rights(pair.b, "p-3")) == ["r-1", "r-b"]
    granted_once(pair)


async def _has(app: RunningApp, person: str, role: str) -> bool:
    return role in roles(await rights(app, person))


@pytest.mark.parametrize("pair", [{"mass_revoke_threshold": 10}], indirect=True)
async def test_mass_change_guard_counts_each_change_once_across_replicas(pair: Any) -> None:
    """Two removals of 6 (60 % of the threshold) through the two replicas at once, and one of 12.

    Each recomputation counts the revocations of its own cause, as with one
    replica (see ``service``): the two small ones go through, the big one is
    held whole, counted once, and every replica shows the batch.
    """
    await tree(pair.feed, U1, U2, U3)
    people = {f"p-{i:02d}": U1 for i in range(6)}
    people |= {f"q-{i:02d}": U2 for i in range(6)}
    people |= {f"s-{i:02d}": U3 for i in range(12)}
    await hire(pair.feed, people)
    await pair.settled(pair.a)
    await catalogue(pair.a, {U1: "r-1", U2: "r-2", U3: "r-3"})
    await pair.events.wait_type("access.granted", count=len(people))

    today = {"to": START.isoformat()}
    await asyncio.gather(
        ok(pair.a, "POST", "/api/v1/assignments/as-r-1/terminate", 200, json=today),
        ok(pair.b, "POST", "/api/v1/assignments/as-r-2/terminate", 200, json=today),
        ok(pair.b, "POST", "/api/v1/assignments/as-r-3/terminate", 200, json=today),
    )
    await pair.a.settle()
    await pair.b.settle()
    revoked = await pair.events.wait_type("access.revoked", count=12)
    assert sorted(e.data["role"] for e in revoked) == ["r-1"] * 6 + ["r-2"] * 6
    for app in (pair.a, pair.b):
        batches = (await ok(app, "GET", "/api/v1/held-batches", 200))["items"]
        assert len(batches) == 1 and batches[0]["status"] == "held", batches
        assert batches[0]["persons"] == 12 and batches[0]["revocation_count"] == 12
        assert [(c["role"], c["count"]) for c in batches[0]["counts"]] == [("r-3", 12)]
    assert {p: r for p, r in (await published(pair.a)).items() if r} == {p: ["r-3"] for p in people if p[0] == "s"}

    # Recomputations of the held persons on the other replica keep the pins (caught up on entry):
    # a catalogue write through A reaching them, and an org event A handles.
    await ok(pair.a, "PUT", "/api/v1/roles/r-3", json={"validity": v("2000-01-01"), "it_system": "sys-ad", "name": "3"})
    await pair.feed.end("e-s-00", date(2025, 12, 31))
    await pair.settled(pair.a)
    await pair.a.settle()
    await asyncio.sleep(0.3)
    assert len(pair.events.of_type("access.revoked")) == 12
    assert [b["id"] for b in (await ok(pair.a, "GET", "/api/v1/held-batches", 200))["items"]] == [batches[0]["id"]]

    # Released through B: the 12 go, once.
    batch = batches[0]["id"]
    done = await ok(pair.b, "POST", f"/api/v1/held-batches/{batch}/release", 200)
    assert done["status"] == "released"
    r = await pair.a.http.post(f"/api/v1/held-batches/{batch}/release")
    assert r.status_code == 409
    await pair.b.settle()
    revoked = await pair.events.wait_type("access.revoked", count=24)
    assert sorted(e.data["role"] for e in revoked[12:]) == ["r-3"] * 12
    await asyncio.sleep(0.3)
    assert len(pair.events.of_type("access.revoked")) == 24


async def test_stopping_the_consuming_replica_hands_the_queue_over(pair: Any) -> None:
    await tree(pair.feed, U1, U2)
    await pair.settled(pair.a)
    await catalogue(pair.b, {U1: "r-1", U2: "r-2"})
    people = {f"p-{i:02d}": (U1 if i % 3 else U2) for i in range(36)}
    ordered = sorted(people.items())

    async def flow() -> None:
        for p, unit in ordered:
            await hire(pair.feed, {p: unit})
            await asyncio.sleep(0.05)

    publishing = asyncio.create_task(flow())
    await eventually(lambda: service(pair.a).handled >= 20, within=20, interval=0.01)
    await pair.stack.aclose()  # replica A stops while events flow
    await publishing
    # More after the handover: three engagements in U1 end today (rights revoked, accounts
    # disabled), and U2 moves under U1 from today (its people gain r-1 and keep r-2).
    leavers = ["p-01", "p-02", "p-04"]
    for p in leavers:
        await pair.feed.end(f"e-{p}", START)
    await pair.feed.move(U2, U1, START)
    await pair.settled(pair.b, wait_s=40)
    await pair.b.settle()

    print("HANDLED", service(pair.b).handled, len(pair.feed.published))
    assert service(pair.b).handled > 0
    expected = {p: [] if p in leavers else ["r-1"] if u == U1 else ["r-1", "r-2"] for p, u in people.items()}
    for p in people:
        assert roles(await rights(pair.b, p)) == expected[p], p
    assert await published(pair.b) == expected
    revoked = await pair.events.wait_type("access.revoked", count=len(leavers))
    assert sorted((e.subject, e.data["role"]) for e in revoked) == [(p, "r-1") for p in leavers]
    accs = await accounts(pair.b)
    assert sorted(p for p, _, _ in accs) == sorted(people) and len({u for _, u, _ in accs}) == len(people)
    assert {p: s for p, _, s in accs} == {p: "disabled" if p in leavers else "requested" for p in people}
    await asyncio.sleep(0.3)
    granted_once(pair)
    assert len(pair.events.of_type("access.revoked")) == len(leavers)
    assert await dead_letters(pair) == 0


async def test_the_day_boundary_on_both_replicas_fires_once(pair: Any) -> None:
    """Every replica runs the day-boundary job: each transition fires once, each right is granted once."""
    await tree(pair.feed, U1)
    await hire(pair.feed, {"p-1": U1, "p-2": U1})
    await pair.settled(pair.a)
    await catalogue(pair.a, {U1: "r-1"})
    await ok(pair.a, "PUT", "/api/v1/roles/r-x", json={"validity": v("2000-01-01"), "it_system": "sys-ad", "name": "X"})
    for p, app in (("p-1", pair.a), ("p-2", pair.b)):
        await ok(
            app,
            "PUT",
            f"/api/v1/assignments/as-{p}",
            201,
            json={"validity": v("2025-04-01"), "role": "r-x", "person": p},
        )
    await pair.events.wait_type("access.granted", count=2)
    pair.clock.set_day(date(2025, 4, 1))
    await asyncio.gather(service(pair.a).tick(), service(pair.b).tick(), service(pair.b).tick())
    await pair.a.settle()
    await pair.b.settle()
    await pair.events.wait_type("access.granted", count=4)
    await pair.events.wait_type("assignment.effective", count=2)
    await asyncio.sleep(0.3)
    assert sorted(e.subject for e in pair.events.of_type("assignment.effective")) == ["as-p-1", "as-p-2"]
    granted_once(pair)
    for app in (pair.a, pair.b):
        assert roles(await rights(app, "p-1")) == roles(await rights(app, "p-2")) == ["r-1", "r-x"]


async def test_a_replica_that_died_holding_the_section_costs_time_not_events(pair: Any) -> None:
    """A holder that never released (killed): consumed events wait for its lease, requests get 503.

    Its writes were never logged for the others to catch up; the stale
    version a decision then meets makes it re-read that person and plan again.
    """
    await tree(pair.feed, U1)
    await hire(pair.feed, {"p-1": U1, "p-2": U1})
    await pair.settled(pair.a)
    await catalogue(pair.a, {U1: "r-1"})
    await pair.events.wait_type("access.granted", count=2)
    for app in (pair.a, pair.b):
        service(app).section.wait = 1.0  # requests give up after 1 s (10 s in production)
    db = pair.a.runtime.db
    # The dead replica wrote p-1's rights (same rights, a new version) and never logged it.
    await db["person_rights"].update_one({"_id": "p-1"}, {"$inc": {"version": 1}})
    lease_s = 4.0
    until = datetime.now(UTC) + timedelta(seconds=lease_s)
    held = await db["_sections"].update_one(
        {"_id": service(pair.a).section.name}, {"$set": {"holder": "dead-replica", "until": until}}
    )
    assert held.matched_count == 1
    started = asyncio.get_running_loop().time()
    await pair.feed.end("e-p-1", START)  # p-1 leaves today: r-1 is revoked once the lease expires
    r = await pair.b.http.put(
        "/api/v1/roles/r-z", json={"validity": v("2000-01-01"), "it_system": "sys-ad", "name": "Z"}
    )
    assert r.status_code == 503, r.text
    revoked = await pair.events.wait_type("access.revoked", timeout=lease_s + 10)
    assert asyncio.get_running_loop().time() - started >= lease_s - 0.5
    assert [(e.subject, e.data["role"]) for e in revoked] == [("p-1", "r-1")]
    await pair.settled(pair.a)
    assert (await published(pair.a))["p-1"] == []
    await ok(
        pair.b, "PUT", "/api/v1/roles/r-z", 201, json={"validity": v("2000-01-01"), "it_system": "sys-ad", "name": "Z"}
    )
    assert await dead_letters(pair) == 0
    granted_once(pair)


async def two_with_r1_and_an_unassigned_r2(pair: Any) -> None:
    """p-1 and p-2 in U1 hold r-1 (assigned to U1); r-2 exists, assigned to nobody yet."""
    await tree(pair.feed, U1)
    await hire(pair.feed, {"p-1": U1, "p-2": U1})
    await pair.settled(pair.a)
    await catalogue(pair.a, {U1: "r-1"})
    await ok(
        pair.a, "PUT", "/api/v1/roles/r-2", json={"validity": v("2000-01-01"), "it_system": "sys-ad", "name": "r-2"}
    )
    await pair.events.wait_type("access.granted", count=2)


def grants(pair: Any) -> set[tuple[str, str]]:
    return {(e.subject, e.data["role"]) for e in pair.events.of_type("access.granted")}


@pytest.mark.parametrize("pair", [{"scheduler_interval_seconds": 0.5}], indirect=True)
async def test_a_catalogue_write_a_dead_holder_stored_but_never_recomputed_is_reconciled(pair: Any) -> None:
    """The holder stored an assignment and was killed before recomputing anyone; nobody writes
    afterwards. The timer finds the abandoned section, enters it, and the entrant reconciles."""
    await two_with_r1_and_an_unassigned_r2(pair)
    db = pair.a.runtime.db
    # What the dead holder left: the assignment stored (its event in the outbox), no recomputation,
    # and the section still held under a lease that has run out.
    doc = await db["assignments"].find_one({"_id": "as-r-1"})
    state = {**doc["state"], "timeline": [{**s, "role": "r-2"} for s in doc["state"]["timeline"]]}
    await service(pair.a).repos["assignments"].insert("as-r-2", Change(state, "assignment.created"))
    expired = datetime.now(UTC) - timedelta(seconds=1)
    held = await db["_sections"].update_one(
        {"_id": service(pair.a).section.name}, {"$set": {"holder": "dead-replica", "until": expired}}
    )
    assert held.matched_count == 1
    await pair.events.wait_type("access.granted", count=4, timeout=20)
    assert grants(pair) == {("p-1", "r-1"), ("p-2", "r-1"), ("p-1", "r-2"), ("p-2", "r-2")}
    await pair.settled(pair.a)
    granted_once(pair)
    for app in (pair.a, pair.b):
        assert roles(await rights(app, "p-1")) == roles(await rights(app, "p-2")) == ["r-1", "r-2"]
    assert not await service(pair.a).section.abandoned()


async def test_a_recomputation_the_database_cut_off_is_finished_without_a_retry(pair: Any) -> None:
    """The assignment is stored, then the database fails one person's write: the client gets a 503
    and never retries (the same PUT again would change nothing). The replica reconciles by itself."""
    await two_with_r1_and_an_unassigned_r2(pair)
    svc = service(pair.a)
    real = svc._apply_person
    failed: list[str] = []

    async def cut_off(ticket: Any, person: str, *args: Any) -> int:
        if not failed:
            failed.append(person)
            raise ConnectionFailure("connection closed (injected)")
        return int(await real(ticket, person, *args))

    svc._apply_person = cut_off
    try:
        r = await pair.a.http.put(
            "/api/v1/assignments/as-r-2", json={"validity": v("2000-01-01"), "role": "r-2", "unit": U1, "inherit": True}
        )
        assert r.status_code == 503, r.text
        assert failed, "the injected failure did not happen"
        await pair.events.wait_type("access.granted", count=4, timeout=20)
    finally:
        svc._apply_person = real
    assert grants(pair) == {("p-1", "r-1"), ("p-2", "r-1"), ("p-1", "r-2"), ("p-2", "r-2")}
    await pair.settled(pair.a)
    granted_once(pair)
    for app in (pair.a, pair.b):
        assert roles(await rights(app, failed[0])) == ["r-1", "r-2"]


async def test_org_events_taken_in_together_grant_each_person_once_with_its_own_cause(pair: Any) -> None:
    """A burst of hires is handled in batches; each grant still names the engagement event that
    caused it (causation id), and every right is granted once."""
    await tree(pair.feed, U1)
    await pair.settled(pair.a)
    await catalogue(pair.a, {U1: "r-1"})
    people = {f"p-{n:02d}": U1 for n in range(40)}
    await hire(pair.feed, people)
    granted = await pair.events.wait_type("access.granted", count=len(people), timeout=60)
    await pair.settled(pair.a)
    granted_once(pair)
    engaged = {e.data["person"]: e.id for e in pair.events.of_type("engagement.created")}
    assert {e.subject: e.causationid for e in granted} == engaged
    svc = service(pair.a)
    assert svc.org_batches < svc.handled, (svc.org_batches, svc.handled)
    for app in (pair.a, pair.b):
        assert roles(await rights(app, "p-39")) == ["r-1"]


async def test_an_org_event_that_cannot_be_handled_fails_alone_not_with_its_batch(pair: Any) -> None:
    """One engagement event in a burst always fails: it alone is retried and then dead-lettered,
    and nothing is granted from it (its engagement was never stored); the events batched with it
    are handled at once, not retried with it."""
    await tree(pair.feed, U1)
    await pair.settled(pair.a)
    await catalogue(pair.a, {U1: "r-1"})
    svc = service(pair.a)
    real = svc._project
    retried = metrics.EVENTS_CONSUMED.labels(
        pair.settings.service_name, pair.settings.queue("org"), "engagement.created", "retried"
    )
    before = retried._value.get()

    async def poisoned(ticket: Any, event: Any, data: Any) -> None:
        if event.subject == "e-p-07":
            raise ValueError("cannot be handled (injected)")
        await real(ticket, event, data)

    svc._project = poisoned
    try:
        people = {f"p-{n:02d}": U1 for n in range(20)}
        await hire(pair.feed, people)
        await pair.events.wait_type("access.granted", count=len(people) - 1, timeout=60)

        async def dead_lettered() -> bool:
            return await dead_letters(pair) == 1

        await eventually(dead_lettered, within=30)
    finally:
        svc._project = real
    assert sorted(e.subject for e in pair.events.of_type("access.granted")) == sorted(set(people) - {"p-07"})
    assert svc.org_batches < svc.handled, (svc.org_batches, svc.handled)
    assert retried._value.get() - before == pair.settings.delivery_limit - 1  # e-p-07's attempts only
    granted_once(pair)
