"""The database's compare-and-swap holds between processes, and unique indexes hold.

Orgdir's optimistic concurrency (a ``version`` in the update filter) is only
correct if the server applies filter and update atomically. FerretDB 1.x did
not (365 of 463 guarded updates lost); these tests keep whatever server the
project runs on honest, and run against a real MongoDB when MONGODB_URL is set.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient, MongoClient
from pymongo.errors import DuplicateKeyError

WORKER = Path(__file__).with_name("cas_worker.py")
WINS_EACH = 200
TAGS = ("a", "b")


def test_version_guarded_updates_from_two_processes_never_lose_one(mongodb_url: str, ns: str) -> None:
    client: MongoClient[dict[str, Any]] = MongoClient(mongodb_url)
    try:
        col = client[ns]["cas"]
        col.insert_one({"_id": "k", "version": 0, "won": []})
        workers = [
            subprocess.Popen(
                [sys.executable, str(WORKER), mongodb_url, ns, "cas", tag, str(WINS_EACH)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for tag in TAGS
        ]
        try:
            for worker in workers:  # both connected before either starts
                assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
            for worker in workers:
                assert worker.stdin is not None
                worker.stdin.write("go\n")
                worker.stdin.flush()
            outputs = [worker.communicate(timeout=120)[0] for worker in workers]
        finally:
            for worker in workers:
                worker.kill()
        assert [worker.returncode for worker in workers] == [0, 0]
        results = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
        doc = col.find_one({"_id": "k"})
        client.drop_database(ns)
    finally:
        client.close()

    assert doc is not None
    total = WINS_EACH * len(TAGS)
    won = [v for result in results for v in result["won"]]
    conflicts = sum(result["conflicts"] for result in results)
    assert conflicts > 0, "the two processes never collided: nothing was tested"
    assert doc["version"] == len(won) == total, f"conflicts retried: {conflicts}"
    assert sorted(won) == list(range(1, total + 1)), "each version won exactly once"
    assert isinstance(doc["won"], list) and len(doc["won"]) == total
    assert Counter(doc["won"]) == dict.fromkeys(TAGS, WINS_EACH)
    # The winners' order in the document matches the versions each process saw.
    by_version = {v: tag for tag, result in zip(TAGS, results, strict=True) for v in result["won"]}
    assert doc["won"] == [by_version[v] for v in range(1, total + 1)]


async def test_unique_index_rejects_a_duplicate(mongodb_url: str, ns: str) -> None:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongodb_url)
    async with client:
        col = client[ns]["people"]
        await col.create_index("email", unique=True)
        await col.insert_one({"_id": 1, "email": "a@example.org"})
        with pytest.raises(DuplicateKeyError) as caught:
            await col.insert_one({"_id": 2, "email": "a@example.org"})
        assert caught.value.code == 11000
        with pytest.raises(DuplicateKeyError):
            await col.insert_one({"_id": 1, "email": "b@example.org"})  # _id is unique too
        assert await col.count_documents({}) == 1
        await client.drop_database(ns)
