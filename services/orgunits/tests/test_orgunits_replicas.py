"""Two replicas of orgunits on one database and one broker: reads agree, tree rules hold under races."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from orgdir.clock import ManualClock
from orgdir_tools.testkit import RunningApp, eventually
from orgunits.app import create_app
from orgunits.settings import OrgunitsSettings

from .conftest import TODAY

START = {"from": (TODAY - timedelta(days=365)).isoformat()}
ROUNDS = 8


@pytest.fixture
async def pair(settings: OrgunitsSettings, clock: ManualClock) -> AsyncIterator[tuple[RunningApp, RunningApp]]:
    async with RunningApp(create_app(settings, clock)) as a, RunningApp(create_app(settings, clock)) as b:
        yield a, b


def uid() -> str:
    return str(uuid.uuid4())


async def put(app: RunningApp, unit: str, key: str, parent: str | None, **kw: Any) -> httpx.Response:
    body = {"user_key": key, "name": key.title(), "parent": parent, "validity": START, **kw}
    return await app.http.put(f"/api/v1/orgunits/{unit}", json=body)


def one_won(responses: list[httpx.Response], kinds: set[str]) -> None:
    """Exactly one 2xx; the other a problem of one of ``kinds``."""
    codes = sorted(r.status_code for r in responses)
    assert codes[0] in (200, 201) and codes[1] >= 400, [r.text for r in responses]
    loser = next(r for r in responses if r.status_code >= 400)
    assert loser.headers["content-type"].startswith("application/problem+json")
    assert loser.json()["type"].rsplit(":", 1)[-1] in kinds, loser.text


async def test_a_write_through_one_replica_is_read_through_the_other_within_a_second(
    pair: tuple[RunningApp, RunningApp],
) -> None:
    a, b = pair
    root = uid()
    assert (await put(a, root, "ROOT", None)).status_code == 201
    for _ in range(5):
        unit = uid()
        r = await put(a, unit, f"U-{unit[:6]}", root)
        assert r.status_code == 201, r.text
        await eventually(lambda unit=unit: _status(b, unit, 200), within=1.0, interval=0.02)
        # B writes on top of A's version; A then reads B's write.
        r = await b.http.patch(f"/api/v1/orgunits/{unit}", json={"name": "Omdøbt"}, headers={"If-Match": '"1"'})
        assert r.status_code == 200, r.text
        await eventually(lambda unit=unit: _name(a, unit, "Omdøbt"), within=1.0, interval=0.02)


async def test_the_same_user_key_from_two_replicas_at_once_is_taken_once(
    pair: tuple[RunningApp, RunningApp],
) -> None:
    a, b = pair
    root = uid()
    assert (await put(a, root, "ROOT-K", None)).status_code == 201
    for i in range(ROUNDS):
        key = f"SAME-{i}"
        responses = await asyncio.gather(put(a, uid(), key, root), put(b, uid(), key, root))
        one_won(list(responses), {"user-key-taken"})
    tree = (await a.http.get("/api/v1/tree")).json()
    keys = [n["user_key"] for n in tree["roots"][0]["children"]]
    assert sorted(keys) == sorted(f"SAME-{i}" for i in range(ROUNDS))


async def test_crossing_moves_from_two_replicas_never_make_a_cycle(pair: tuple[RunningApp, RunningApp]) -> None:
    a, b = pair
    root = uid()
    assert (await put(a, root, "ROOT-C", None)).status_code == 201
    for i in range(ROUNDS):
        x, y = uid(), uid()
        assert (await put(a, x, f"X{i}", root)).status_code == 201
        assert (await put(a, y, f"Y{i}", root)).status_code == 201
        await eventually(lambda y=y: _status(b, y, 200), within=1.0, interval=0.02)
        responses = await asyncio.gather(
            a.http.post(f"/api/v1/orgunits/{x}/move", json={"parent": y}),
            b.http.post(f"/api/v1/orgunits/{y}/move", json={"parent": x}),
        )
        one_won(list(responses), {"cycle"})
        parents = {u: (await a.http.get(f"/api/v1/orgunits/{u}")).json()["parent"] for u in (x, y)}
        assert not (parents[x] == y and parents[y] == x), parents


async def test_a_child_and_its_parents_end_from_two_replicas_at_once(pair: tuple[RunningApp, RunningApp]) -> None:
    a, b = pair
    root = uid()
    assert (await put(a, root, "ROOT-P", None)).status_code == 201
    end = (TODAY + timedelta(days=10)).isoformat()
    for i in range(ROUNDS):
        parent = uid()
        assert (await put(a, parent, f"P{i}", root)).status_code == 201
        await eventually(lambda parent=parent: _status(b, parent, 200), within=1.0, interval=0.02)
        responses = await asyncio.gather(
            a.http.post(f"/api/v1/orgunits/{parent}/terminate", json={"to": end}),
            put(b, uid(), f"C{i}", parent),  # open-ended: it would outlive its parent
        )
        one_won(list(responses), {"active-children", "parent-not-active"})


async def _status(app: RunningApp, unit: str, status: int) -> bool:
    return (await app.http.get(f"/api/v1/orgunits/{unit}")).status_code == status


async def _name(app: RunningApp, unit: str, name: str) -> bool:
    r = await app.http.get(f"/api/v1/orgunits/{unit}")
    return r.status_code == 200 and r.json()["name"] == name
