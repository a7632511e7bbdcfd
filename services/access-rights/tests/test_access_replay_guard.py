"""Replaying org events rebuilds the same rights; the mass-change guard holds revocations."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import date
from typing import Any

import pytest

from access_rights.app import create_app
from access_rights.settings import AccessRightsSettings
from orgdir.bus import Bus
from orgdir.clock import ManualClock
from orgdir_tools.testkit import RunningApp, settings_for

ROOT, A, B, T1, T2 = "u-root", "u-a", "u-b", "u-t1", "u-t2"
JF1, JF2 = "jf-1", "jf-2"
PEOPLE = [f"p-{i:02d}" for i in range(12)]


def v(start: str | date, end: str | date | None = None) -> dict[str, Any]:
    return {"from": str(start), "to": str(end) if end else None}


async def put_catalogue(http: Any) -> None:
    """Fixed UUIDs everywhere, so two databases can be compared reason by reason."""

    async def ok(url: str, body: dict[str, Any]) -> None:
        r = await http.put(url, json=body)
        assert r.status_code in (200, 201), r.text

    await ok(
        "/api/v1/it-systems/sys-ad",
        {"validity": v("2000-01-01"), "user_key": "AD", "name": "AD", "grace_days": 3},
    )
    for role in ("r-a", "r-b", "r-jf", "r-t2"):
        await ok(
            f"/api/v1/roles/{role}",
            {"validity": v("2000-01-01"), "it_system": "sys-ad", "name": role},
        )
    await ok(
        "/api/v1/assignments/as-a",
        {"validity": v("2000-01-01"), "role": "r-a", "unit": A, "inherit": True},
    )
    await ok(
        "/api/v1/assignments/as-b",
        {"validity": v("2000-01-01"), "role": "r-b", "unit": B, "inherit": True},
    )
    await ok("/api/v1/assignments/as-t2", {"validity": v("2025-02-01"), "role": "r-t2", "unit": T2})
    await ok(
        "/api/v1/assignments/as-jf",
        {"validity": v("2000-01-01"), "role": "r-jf", "job_function": JF2, "unit": B},
    )


async def wait_seen(running: RunningApp, sequences: dict[str, int], wait_s: float = 30) -> None:
    seen = running.runtime.db["_seen"]
    deadline = time.monotonic() + wait_s
    while True:
        docs = {d["_id"]: d["sequence"] async for d in seen.find({})}
        if all(docs.get(key, 0) >= q for key, q in sequences.items()):
            break
        assert time.monotonic() < deadline, "replay not consumed"
        await asyncio.sleep(0.05)
    await running.settle()


async def snapshot(running: RunningApp) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in PEOPLE:
        r = await running.http.get(f"/api/v1/persons/{p}/rights", params={"history": "true"})
        assert r.status_code == 200, r.text
        out[p] = r.json()["rights"]
    published = {
        d["_id"]: sorted(r["role"] for r in d["state"]["rights"])
        async for d in running.runtime.db["person_rights"].find({})
        if d["state"]["rights"]
    }
    accounts = sorted(
        [
            (d["state"]["person"], d["state"]["username"], d["state"]["status"])
            async for d in running.runtime.db["accounts"].find({})
        ]
    )
    return {"rights": out, "published": published, "accounts": accounts}


async def test_replay_into_empty_database_rebuilds_the_same_rights(
    env: Any, ns: str, amqp_url: str, mongodb_url: str
) -> None:
    f = env.feed
    await f.job_function(JF1, "Pædagog")
    await f.job_function(JF2, "Leder")
    await f.unit(ROOT, "Kommune", None)
    await f.unit(A, "Børn og Unge", ROOT)
    await f.unit(B, "Teknik og Miljø", ROOT)
    await f.unit(T1, "Dagtilbud", A)
    await f.unit(T2, "Vej og Park", B)
    for i, p in enumerate(PEOPLE):
        await f.person(p, ["Karen", "Jens", "Ole"][i % 3], ["Nielsen", "Hansen"][i % 2])
        await f.engage(f"e-{p}", p, [T1, T2, A, B][i % 4], [JF1, JF2][i % 2], "2025-01-01")
    await env.settled()
    await put_catalogue(env.http)
    await f.move(T1, B, date(2025, 3, 1))
    await f.move(T2, A, date(2025, 4, 1))
    await f.end("e-p-03", date(2025, 3, 2))
    await f.end("e-p-04", date(2025, 5, 1))
    await env.settled()
    original = await snapshot(env.app)
    assert any(original["rights"].values()) and original["accounts"]

    events = list(f.published)
    for attempt, order in enumerate(("sorted", "shuffled")):
        if order == "shuffled":
            random.Random(7).shuffle(events)
        ns2 = f"{ns}r{attempt}"
        settings = settings_for(
            AccessRightsSettings,
            ns=ns2,
            service="access-rights",
            amqp_url=amqp_url,
            mongodb_url=mongodb_url,
        )
        clock = ManualClock()
        clock.set_day(env.clock.today())
        bus = Bus(settings)
        await bus.connect()
        try:
            async with RunningApp(create_app(settings, clock)) as replica:
                for e in events:
                    await bus.publish(e)
                await wait_seen(
                    replica,
                    {f"org:{f.kinds[s]}:{s}": st["version"] for s, st in f.states.items()},
                )
                await put_catalogue(replica.http)
                await replica.settle()
                rebuilt = await snapshot(replica)
        finally:
            await bus.close()
        assert rebuilt["rights"] == original["rights"], order
        assert rebuilt["published"] == original["published"], order

        # Accounts of everyone holding rights now (a person offboarded before the catalogue
        # existed in the replica never needed one there).
        def holding(snap: dict[str, Any]) -> list[tuple[str, str]]:
            return [(p, s) for p, _, s in snap["accounts"] if p in original["published"]]

        assert holding(rebuilt) == holding(original)


@pytest.mark.parametrize("env", [{"mass_revoke_threshold": 2}], indirect=True)
async def test_mass_revocation_is_held_until_an_admin_releases_it(env: Any) -> None:
    f, ev = env.feed, env.events
    await f.job_function(JF1, "Pædagog")
    await f.job_function(JF2, "Leder")
    await f.unit(ROOT, "Kommune", None)
    await f.unit(A, "Børn og Unge", ROOT)
    await f.unit(B, "Teknik og Miljø", ROOT)
    await f.unit(T1, "Dagtilbud", A)
    await f.unit(T2, "Vej og Park", B)
    await env.settled()
    await put_catalogue(env.http)
    for p in PEOPLE[:4]:
        await f.person(p, "Lis", "Berg")
        await f.engage(f"e-{p}", p, T1, JF1, "2025-01-01")
    await env.settled()
    await ev.wait_type("access.granted", count=4)
    # A mistaken restructuring: the whole unit moves away from A to B today.
    await f.move(T1, B, date(2025, 3, 3))
    await env.settled()
    await ev.wait_type("access.granted", count=8)  # grants flow as usual
    assert not ev.of_type("access.revoked")
    batches = (await env.ok("GET", "/api/v1/held-batches"))["items"]
    assert len(batches) == 1 and batches[0]["status"] == "held" and batches[0]["persons"] == 4
    assert [(c["role"], c["count"]) for c in batches[0]["counts"]] == [("r-a", 4)]
    scrape = (await env.http.get("/metrics")).text
    assert "orgdir_access_held_revocations 4.0" in scrape
    r = await env.http.post(
        f"/api/v1/held-batches/{batches[0]['id']}/release",
        headers={"Authorization": "Bearer dev-writer"},
    )
    assert r.status_code == 403
    done = await env.ok("POST", f"/api/v1/held-batches/{batches[0]['id']}/release")
    assert done["status"] == "released" and done["decided_by"] == "static:admin"
    await env.app.settle()
    revoked = await ev.wait_type("access.revoked", count=4)
    assert {e.data["role"] for e in revoked} == {"r-a"}
    assert (await env.http.post(f"/api/v1/held-batches/{batches[0]['id']}/cancel")).status_code == 409
    assert "orgdir_access_held_revocations 0.0" in (await env.http.get("/metrics")).text
