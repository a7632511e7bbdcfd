"""A section excludes other replicas while each replica hands its hold on between its own writers.

Two ``Section`` objects on one database stand for two replicas; each runs many
concurrent writers. Inside the section every writer does a read-modify-write
that is only correct under mutual exclusion, and logs what it wrote: nothing
may be lost, the holds of the two replicas never overlap, every write is in
the section's log exactly once, and each replica re-reads the other's writes
on entry and ends as current as the database.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from orgdir.store import Section, SectionDesk
from orgdir_tools.testkit import eventually

WRITERS = 20
WRITES_EACH = 5


@pytest.mark.parametrize("created", ["at baseline", "by the first entry"])
async def test_two_replicas_many_writers_each_exclusive_and_logged(mongodb_url: str, ns: str, created: str) -> None:
    """``by the first entry``: no section document exists until both replicas race to enter
    (a person's section in the registry is made so), and the upsert that creates it excludes too."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_url)
    db = client[ns]
    counter = db["counter"]
    await counter.insert_one({"_id": "n", "value": 0})
    inside: list[str] = []  # which replica is inside right now (this process runs both)
    overlaps = 0
    refreshed: dict[str, list[tuple[str, str]]] = {"a": [], "b": []}

    def section(name: str) -> Section:
        async def one(collection: str, uid: str) -> None:
            refreshed[name].append((collection, uid))

        async def everything() -> None:
            refreshed[name].append(("*", "*"))

        return Section(db, "test.sec", refresh_one=one, refresh_all=everything, wait_seconds=60)

    replicas = {"a": section("a"), "b": section("b")}
    for s in replicas.values():
        if created == "at baseline":
            await s.baseline()
        else:
            s.seen = 0  # as ``PersonSections`` places a section that did not exist at its load
    assert (await db["_sections"].count_documents({})) == (1 if created == "at baseline" else 0)

    async def writer(name: str, i: int) -> None:
        nonlocal overlaps
        for k in range(WRITES_EACH):
            async with replicas[name].hold() as ticket:
                if any(r != name for r in inside):
                    overlaps += 1
                inside.append(name)
                doc = await counter.find_one({"_id": "n"})
                assert doc is not None
                await asyncio.sleep(0)  # let others run: a race would lose an increment here
                await counter.update_one({"_id": "n"}, {"$set": {"value": doc["value"] + 1}})
                ticket.wrote("things", f"{name}-{i}-{k}")
                inside.remove(name)

    await asyncio.gather(*(writer(name, i) for name in replicas for i in range(WRITERS)))
    total = 2 * WRITERS * WRITES_EACH
    doc = await counter.find_one({"_id": "n"})
    assert doc is not None and doc["value"] == total
    assert overlaps == 0
    log = await db["_sections"].find_one({"_id": "test.sec"})
    assert log is not None and log["seq"] == total and log["holder"] is None
    assert sorted(e["seq"] for e in log["recent"]) == list(range(1, total + 1))
    assert len({e["id"] for e in log["recent"]}) == total
    # handing on saved database round trips: far fewer holds than writes
    acquired = sum(s.acquired for s in replicas.values())
    assert acquired < total
    # each replica re-reads (one by one, or wholly) only what the other wrote, and after one more
    # entry each reflects every write
    for name, s in replicas.items():
        async with s.hold():
            pass
        assert s.seen == total
        assert not any(uid.startswith(f"{name}-") for _, uid in refreshed[name])  # never its own writes
    assert refreshed["a"] or refreshed["b"]  # whichever came second caught up with the first
    print(f"\n{total} writes under {acquired} database holds")
    await client.close()


async def test_a_replicas_sections_are_taken_and_released_together_and_still_exclude(
    mongodb_url: str, ns: str
) -> None:
    """Two replicas, each writing under 40 sections at once through one ``SectionDesk``: the takes
    and releases share commands, no section's writes overlap across replicas or are lost, and a
    section whose holder died (its lease ran out) is taken over and says so."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_url, tz_aware=True)
    db = client[ns]
    names = [f"test.person:{i}" for i in range(40)]
    dead = names[0]
    await db["_sections"].insert_one(
        {"_id": dead, "seq": 0, "recent": [], "holder": "dead", "until": datetime.now(UTC) - timedelta(seconds=1)}
    )

    async def nothing(*_: str) -> None:
        pass

    desks = {r: SectionDesk(db) for r in ("a", "b")}
    sections = {
        r: {n: Section(db, n, refresh_one=nothing, refresh_all=nothing, wait_seconds=60, desk=desks[r]) for n in names}
        for r in desks
    }
    for by_name in sections.values():
        for s in by_name.values():
            s.seen = 0
    counts = {n: 0 for n in names}
    inside: dict[str, str] = {}
    overlaps, took_over = 0, []

    async def writer(replica: str, name: str) -> None:
        nonlocal overlaps
        for _ in range(3):
            async with sections[replica][name].hold() as ticket:
                if ticket.took_over:
                    took_over.append((replica, name))
                if inside.get(name) not in (None, replica):
                    overlaps += 1
                inside[name] = replica
                before = counts[name]
                await asyncio.sleep(0.001)  # a race would lose an increment here
                counts[name] = before + 1
                del inside[name]

    await asyncio.gather(*(writer(r, n) for r in desks for n in names))
    assert overlaps == 0 and counts == {n: 6 for n in names}
    assert len(took_over) == 1 and took_over[0][1] == dead
    held = await db["_sections"].count_documents({"_id": {"$in": names}, "holder": None})
    assert held == len(names)  # every one released
    takes = sum(d.commands for d in desks.values())
    releases = sum(d.releases.commands for d in desks.values())
    entries = sum(s.acquired for by_name in sections.values() for s in by_name.values())
    assert takes < entries / 4 and releases < entries / 4, (takes, releases, entries)
    await client.close()


async def test_a_take_whose_caller_went_away_is_given_back(mongodb_url: str, ns: str) -> None:
    """Writers cancelled while their takes wait for the shared command, or while it runs, leave no
    section held: a lease nobody would give back would keep every other writer out until it ran out."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_url, tz_aware=True)
    db = client[ns]
    desk = SectionDesk(db)
    until = datetime.now(UTC) + timedelta(seconds=60)
    names = [f"test.gone:{i}" for i in range(60)]
    takes = [asyncio.create_task(desk.take(n, f"token-{n}", until)) for n in names]
    for i, task in enumerate(takes):  # cancelled before the command, and at points while it runs
        await asyncio.sleep(0 if i % 3 else 0.001)
        task.cancel()
    results = await asyncio.gather(*takes, return_exceptions=True)
    kept = [n for n, r in zip(names, results, strict=True) if isinstance(r, int)]  # taken before the cancel

    async def held_as_kept() -> bool:  # the desk gives the others back once its command has answered
        return {d["_id"] async for d in db["_sections"].find({"holder": {"$ne": None}})} == set(kept)

    await eventually(held_as_kept, within=5)
    if kept:  # the ones whose callers got their answer hold them, as a finished take does
        await db["_sections"].update_many({"_id": {"$in": kept}}, {"$set": {"holder": None}})
    await client.close()
