"""Group commit and group fetch on the real server: concurrent writes (reads) share commands, each
gets its own outcome."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime

import pytest
from pymongo.errors import DuplicateKeyError
from pymongo.operations import InsertOne, UpdateOne

from orgdir.store import MAX_BULK, BulkReader, BulkWriter, Projection, connect


async def test_concurrent_writes_share_commands_and_keep_their_own_errors(mongodb_url: str, ns: str) -> None:
    client = connect(mongodb_url)
    try:
        col = client[f"{ns}_bulk"]["docs"]
        await col.insert_one({"_id": "taken", "n": -1})
        writer = BulkWriter(col)

        async def insert(i: int) -> str:
            key = "taken" if i == 7 else f"k{i}"
            try:
                await writer.write(InsertOne({"_id": key, "n": i}))
            except DuplicateKeyError:
                return "duplicate"
            return "ok"

        outcomes = await asyncio.gather(*(insert(i) for i in range(120)))
        assert outcomes.count("duplicate") == 1 and outcomes[7] == "duplicate"
        assert await col.count_documents({}) == 120  # 119 new + the one that was there
        assert (await col.find_one({"_id": "taken"}) or {})["n"] == -1
        assert writer.commands <= 120 // MAX_BULK + 2  # shared, not one per write

        async def bump(i: int) -> None:
            await writer.write(UpdateOne({"_id": f"k{i}"}, {"$inc": {"n": 1000}}))

        await asyncio.gather(*(bump(i) for i in range(120) if i != 7))
        assert sorted([d["n"] async for d in col.find({"_id": {"$ne": "taken"}})]) == [
            i + 1000 for i in range(120) if i != 7
        ]
    finally:
        await client.close()


async def test_a_failing_command_fails_every_waiting_writer(mongodb_url: str, ns: str) -> None:
    client = connect(mongodb_url, timeout_ms=500)
    col = client[f"{ns}_bulk"]["docs"]
    writer = BulkWriter(col)
    await client.close()  # every command now fails
    results = await asyncio.gather(
        *(writer.write(InsertOne({"_id": f"x{i}"})) for i in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, Exception) for r in results), results
    with pytest.raises(Exception):  # noqa: B017 - whatever the driver raises for a closed client
        await writer.write(InsertOne({"_id": "y"}))


async def test_concurrent_reads_share_queries_and_each_sees_its_own_document(mongodb_url: str, ns: str) -> None:
    client = connect(mongodb_url)
    try:
        col = client[f"{ns}_fetch"]["docs"]
        await col.insert_many([{"_id": f"k{i}", "n": i, "big": "x" * 10} for i in range(MAX_BULK + 100)])
        reader = BulkReader(col, {"big": 0})
        keys = [f"k{i}" for i in range(MAX_BULK + 100)] + ["k3", "missing"]
        docs = await asyncio.gather(*(reader.get(k) for k in keys))
        assert [d and d["n"] for d in docs[: MAX_BULK + 100]] == list(range(MAX_BULK + 100))
        assert docs[-2] == {"_id": "k3", "n": 3} and docs[-1] is None  # projected; absent is None
        assert docs[3] is not docs[-2]  # two readers of one document may each change their copy
        assert reader.commands == 2  # one query per MAX_BULK ids, not one per read

        await col.update_one({"_id": "k1"}, {"$set": {"n": 100}})
        assert (await reader.get("k1") or {})["n"] == 100  # a later read is a new query
        await client.close()
        with pytest.raises(Exception):  # noqa: B017 - whatever the driver raises for a closed client
            await reader.get("k1")
    finally:
        await client.close()


async def test_projection_applies_concurrently_from_two_replicas_newest_wins(mongodb_url: str, ns: str) -> None:
    """Two replicas apply shuffled sequences of the same subjects at once: the writes share bulk
    commands, the newest sequence is what stays, each apply answers whether it was applied, and
    every arrival is in the log once."""
    client = connect(mongodb_url)
    try:
        db = client[f"{ns}_proj"]
        replicas = [Projection(db, "units", history=True), Projection(db, "units", history=True)]
        rng = random.Random(7)
        jobs = [(f"u{s % 10}", seq) for s in range(10) for seq in range(1, 13)]
        rng.shuffle(jobs)

        async def apply(i: int, subject: str, seq: int) -> tuple[str, int, bool]:
            return subject, seq, await replicas[i % 2].apply(subject, seq, {"name": f"{subject}@{seq}"})

        outcomes = await asyncio.gather(*(apply(i, subject, seq) for i, (subject, seq) in enumerate(jobs)))
        stored = {d["_id"]: d async for d in db["units"].find({})}
        assert {k: (d["sequence"], d["name"]) for k, d in stored.items()} == {
            f"u{s}": (12, f"u{s}@12") for s in range(10)
        }
        assert all(applied for subject, seq, applied in outcomes if seq == 12)  # the newest is never stale
        assert await db["units_log"].count_documents({}) == len(jobs)
        assert sum(p.writer.commands for p in replicas) < len(jobs) // 4  # shared, not one per apply
        assert not await replicas[0].apply("u0", 5, {"name": "late"})  # older than what is stored
    finally:
        await client.close()


async def test_a_stamped_projection_hands_back_what_changed_since_and_the_reader_lacks(
    mongodb_url: str, ns: str
) -> None:
    """``changed_since`` reads back ``OVERLAP`` before the instant (a copy is stamped when its write
    is queued, and lands later) and returns whole copies only where the reader's ``newer`` says so."""
    client = connect(mongodb_url)
    try:
        db = client[f"{ns}_stamped"]
        writer = Projection(db, "persons", stamped=True)
        for subject in ("old", "held", "fresh"):
            assert await writer.apply(subject, 1, {"name": subject})
        await db["persons"].update_one(  # stored long before the reader last looked
            {"_id": "old"}, {"$set": {"applied_at": datetime.now(UTC) - 3 * Projection.OVERLAP}}
        )
        assert await writer.apply("held", 2, {"name": "held, renamed"})
        asked: list[tuple[str, int]] = []

        def newer(subject: str, sequence: int) -> bool:
            asked.append((subject, sequence))
            return subject != "fresh"  # the reader already has this one

        since = datetime.now(UTC) - Projection.OVERLAP / 2  # inside the overlap: still read
        got = [(d["_id"], d["sequence"], d["name"]) async for d in writer.changed_since(since, newer)]
        assert got == [("held", 2, "held, renamed")]
        assert sorted(asked) == [("fresh", 1), ("held", 2)]
        with pytest.raises(RuntimeError):
            _ = [d async for d in Projection(db, "persons").changed_since(since, newer)]
    finally:
        await client.close()
