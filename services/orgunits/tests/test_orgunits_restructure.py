"""A yearly restructuring: a subtree of 200 units moves to a new parent from a future date."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date, timedelta
from typing import Any

from orgdir.clock import ManualClock
from orgdir_tools.testkit import EventCollector, RunningApp
from orgunits.service import OrgUnits

TODAY = date(2026, 3, 2)
MOVE_DAY = TODAY + timedelta(days=30)


def count(node: dict[str, Any]) -> int:
    return 1 + sum(count(c) for c in node.get("children", []))


def find(nodes: list[dict[str, Any]], uid: str) -> dict[str, Any] | None:
    for n in nodes:
        if n["uuid"] == uid:
            return n
        hit = find(n.get("children", []), uid)
        if hit:
            return hit
    return None


async def test_moving_a_200_unit_subtree_from_a_future_date(
    svc: RunningApp, clock: ManualClock, events: EventCollector
) -> None:
    http = svc.http
    start = {"from": (TODAY - timedelta(days=365)).isoformat()}
    root, old, new = (str(uuid.uuid4()) for _ in range(3))
    for uid, key, parent in ((root, "KOMMUNE", None), (old, "GAMMEL", root), (new, "NY", root)):
        r = await http.put(f"/api/v1/orgunits/{uid}", json={"user_key": key, "name": key.title(),
                                                           "parent": parent, "validity": start})
        assert r.status_code == 201, r.text

    # The subtree: 200 units, 4 levels, built level by level (parents first), 10 writes at a time.
    sub_root = str(uuid.uuid4())
    levels: list[list[tuple[str, str]]] = [[(sub_root, old)]]
    total = 1
    while total < 200:
        level: list[tuple[str, str]] = []
        for parent, _ in levels[-1]:
            for _ in range(5):
                if total + len(level) >= 200:
                    break
                level.append((str(uuid.uuid4()), parent))
        levels.append(level)
        total += len(level)
    leaf = levels[-1][-1][0]
    sem = asyncio.Semaphore(10)

    async def put(i: int, uid: str, parent: str) -> None:
        async with sem:
            r = await http.put(f"/api/v1/orgunits/{uid}", json={
                "user_key": f"E{i:04d}", "name": f"Enhed {i}", "parent": parent, "validity": start,
                "unit_type": "afdeling"})
            assert r.status_code == 201, r.text

    i = 0
    for level in levels:
        await asyncio.gather(*(put(i + n, uid, parent) for n, (uid, parent) in enumerate(level)))
        i += len(level)
    await svc.settle()
    await events.wait_type("orgunit.created", 203)

    r = await http.post(f"/api/v1/orgunits/{sub_root}/move",
                        json={"parent": new, "validity": {"from": MOVE_DAY.isoformat()}})
    assert r.status_code == 200, r.text

    async def tree(day: date | None = None) -> dict[str, Any]:
        r = await http.get("/api/v1/tree", params={"at": day.isoformat()} if day else {})
        assert r.status_code == 200
        body: dict[str, Any] = r.json()
        return body

    before = await tree()
    day_before = await tree(MOVE_DAY - timedelta(days=1))
    after = await tree(MOVE_DAY)
    for t in (before, day_before, after):
        assert t["count"] == 203
    for t in (before, day_before):
        assert count(find(t["roots"], old) or {}) == 201
        assert count(find(t["roots"], new) or {}) == 1
    assert count(find(after["roots"], old) or {}) == 1
    moved = find(after["roots"], new)
    assert moved is not None and count(moved) == 201 and moved["children"][0]["uuid"] == sub_root

    anc = (await http.get(f"/api/v1/orgunits/{leaf}/ancestors")).json()["items"]
    assert [a["uuid"] for a in anc][-3:] == [sub_root, old, root]
    anc = (await http.get(f"/api/v1/orgunits/{leaf}/ancestors", params={"at": MOVE_DAY.isoformat()})).json()["items"]
    assert [a["uuid"] for a in anc][-3:] == [sub_root, new, root]

    # One orgunit.moved, for the moved root only.
    await events.wait_type("orgunit.moved", 1)
    await asyncio.sleep(0.3)
    assert [e.subject for e in events.of_type("orgunit.moved")] == [sub_root]

    # The day arrives: orgunit.effective for the moved root, and today's tree is the new one.
    s: OrgUnits = svc.app.state.orgunits
    clock.set_day(MOVE_DAY - timedelta(days=1))
    assert await s.scheduler.run_due() == 0
    clock.set_day(MOVE_DAY)
    assert await s.scheduler.run_due() == 1
    eff = await events.wait_type("orgunit.effective", 1)
    assert [e.subject for e in eff] == [sub_root]
    assert eff[0].data["timeline"][-1]["parent"] == new
    assert count(find((await tree())["roots"], new) or {}) == 201
