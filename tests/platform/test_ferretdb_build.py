"""The FerretDB the scripts build: lookups by ``_id`` must use the ``_id`` index."""

from __future__ import annotations

import pytest

from orgdir.store import compares_in_server, connect


async def test_lookup_by_id_uses_the_index(mongodb_url: str, ns: str) -> None:
    """Stock FerretDB 1.24 on SQLite scans the whole table for every ``{_id: …}``
    (its query and index expressions differ); ``FERRETDB_PATCHES`` aligns them.
    """
    client = connect(mongodb_url)
    try:
        col = client[f"{ns}_build"]["docs"]
        if await compares_in_server(col):
            pytest.skip("a real MongoDB: nothing to check")
        await col.insert_many([{"_id": f"k{i}", "n": i} for i in range(20)])
        explained = await col.database.command("explain", {"find": "docs", "filter": {"_id": "k7"}})
        plan = " ".join(explained["queryPlanner"]["Plan"])
        assert "USING INDEX" in plan and "SCAN" not in plan, plan
        assert (await col.find_one({"_id": "k7"}) or {}).get("n") == 7
        await col.update_one({"_id": "k7"}, {"$set": {"n": 70}})
        await col.delete_one({"_id": "k8"})
        assert [d["n"] async for d in col.find({"_id": {"$in": ["k7", "k8", "k9"]}}).sort("_id", 1)] == [70, 9]
    finally:
        await client.close()
