"""Group commit on the real server: concurrent writes share bulk commands, each gets its own outcome."""

from __future__ import annotations

import asyncio

import pytest
from pymongo.errors import DuplicateKeyError
from pymongo.operations import InsertOne, UpdateOne

from orgdir.store import MAX_BULK, BulkWriter, connect


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
