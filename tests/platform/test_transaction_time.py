"""Transaction time on the platform: what a repository or a projection held at an instant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from orgdir.clock import ManualClock
from orgdir.store import Change, Projection, Repository, as_registered, connect

T0 = datetime(2027, 1, 4, 9, 0, tzinfo=UTC)


def test_as_registered_picks_the_last_registration_at_or_before_the_instant() -> None:
    doc = {
        "_id": "u",
        "version": 2,
        "state": {"name": "Fix"},
        "registrations": [
            {"version": 1, "registered_at": T0, "state": {"name": "Typo"}},
            {
                "version": 2,
                "registered_at": (T0 + timedelta(hours=1)).replace(tzinfo=None),
                "state": {"name": "Corrected"},
            },
        ],
    }
    assert as_registered(doc, T0 - timedelta(seconds=1)) is None  # not yet known
    assert as_registered(doc, T0) == {"_id": "u", "version": 1, "state": {"name": "Typo"}}
    assert as_registered(doc, T0 + timedelta(minutes=59))["state"] == {"name": "Typo"}  # type: ignore[index]
    assert as_registered(doc, T0 + timedelta(hours=2))["version"] == 2  # type: ignore[index]  # naive = UTC


async def test_repository_and_projection_answer_as_registered(ns: str, mongodb_url: str) -> None:
    client = connect(mongodb_url)
    try:
        clock = ManualClock(T0)
        repo = Repository(client[f"{ns}_tt"], "things", service="toy", clock=clock)
        await repo.insert("a", Change(state={"name": "Typo"}, event_type="thing.created"))
        clock.advance(timedelta(hours=1))
        await repo.update("a", 1, Change(state={"name": "Corrected"}, event_type="thing.updated"))
        clock.advance(timedelta(hours=1))
        await repo.insert("b", Change(state={"name": "Later"}, event_type="thing.created"))

        then = T0 + timedelta(minutes=30)
        assert (await repo.get_as_registered("a", then))["state"] == {"name": "Typo"}  # type: ignore[index]
        assert await repo.get_as_registered("b", then) is None
        assert [d["_id"] async for d in repo.scan_as_registered(then)] == ["a"]
        now = T0 + timedelta(hours=3)
        assert sorted([(d["_id"], d["version"]) async for d in repo.scan_as_registered(now)]) == [("a", 2), ("b", 1)]

        proj = Projection(client[f"{ns}_tt"], "proj_things", history=True, clock=clock)
        assert await proj.apply("a", 1, {"name": "Typo"})
        middle = clock.now()
        clock.advance(timedelta(seconds=1))  # the database keeps milliseconds: instants this close would tie
        assert await proj.apply("a", 3, {"name": "Corrected"})
        assert not await proj.apply("a", 2, {"name": "Stale"})  # late and older: not applied, not believed
        assert [d async for d in proj.scan_as_registered(middle)] == [{"_id": "a", "sequence": 1, "name": "Typo"}]
        latest = [d async for d in proj.scan_as_registered(clock.now())]
        assert latest == [{"_id": "a", "sequence": 3, "name": "Corrected"}]
    finally:
        await client.close()
