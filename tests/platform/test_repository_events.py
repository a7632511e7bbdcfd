"""Repository.write_events: several events in one atomic write, or a state refresh with none."""

from __future__ import annotations

from typing import Any

import pytest

import orgdir.contracts  # noqa: F401  (access.* and its previous dataversion)
from orgdir.clock import ManualClock
from orgdir.store import Repository, StaleVersion, connect


async def test_several_events_in_one_write_and_a_refresh_without_a_version(mongodb_url: str, ns: str) -> None:
    client = connect(mongodb_url)
    try:
        repo = Repository(client[f"{ns}_repo"], "rights", service="toy", clock=ManualClock())
        written: list[list[dict[str, Any]]] = []
        repo.on_write = lambda collection, uuid, outbox: written.append(outbox)

        def spec(kind: str, role: str) -> tuple[str, Any]:
            return kind, lambda version: {"uuid": "p1", "version": version, "role": role}

        assert await repo.write_events("p1", None, {"roles": ["a"]}, [spec("access.granted", "a")], None) == 1
        version = await repo.write_events(
            "p1", 1, {"roles": ["b"]}, [spec("access.granted", "b"), spec("access.revoked", "a")], None
        )
        assert version == 3
        doc = await repo.get_full("p1")
        assert doc is not None and doc["version"] == 3 and doc["state"] == {"roles": ["b"]}
        # Each event, then its copy in the previous dataversion (orgdir.events.side_by_side).
        assert [(e["type"], e["sequence"], e["data"]["role"], e["dataversion"]) for e in doc["outbox"]] == [
            ("access.granted", 1, "a", "2"),
            ("access.granted", 1, "a", "1"),
            ("access.granted", 2, "b", "2"),
            ("access.granted", 2, "b", "1"),
            ("access.revoked", 3, "a", "2"),
            ("access.revoked", 3, "a", "1"),
        ]
        assert [r["version"] for r in doc["registrations"]] == [1, 2, 3]
        assert [len(o) for o in written] == [2, 6]  # the relay hears of every outbox

        assert await repo.write_events("p1", 3, {"roles": ["b"], "reason": "new"}, [], None) == 3
        doc = await repo.get_full("p1")
        assert doc is not None and doc["state"]["reason"] == "new" and len(doc["outbox"]) == 6
        assert len(written) == 2  # nothing new to publish

        with pytest.raises(StaleVersion):
            await repo.write_events("p1", 2, {"roles": []}, [spec("access.revoked", "b")], None)
        with pytest.raises(StaleVersion):
            await repo.write_events("p1", None, {"roles": []}, [], None)
        doc = await repo.get_full("p1")
        assert doc is not None and doc["version"] == 3 and len(doc["registrations"]) == 3
    finally:
        await client.close()
