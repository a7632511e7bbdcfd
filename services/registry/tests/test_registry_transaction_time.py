"""``?registered_at=``: reads as the registry had things registered at an instant (issue #17)."""

from __future__ import annotations

from datetime import timedelta

from orgdir_tools.registry_support import World, problem_type


async def test_a_correction_leaves_the_earlier_belief_readable(world: World) -> None:
    http, clock = world.http, world.clock
    before_anything = clock.now().isoformat()
    clock.advance(timedelta(hours=1))
    ida = await world.person("Ida Hansen")
    eng = await world.engagement(ida, world.u["team"])
    believed = clock.now().isoformat()
    clock.advance(timedelta(hours=1))
    # The registration was wrong: she is called Hansen-Berg and works in Afdeling for Løn.
    fix = {"surname": "Hansen-Berg", "validity": {"from": "2020-01-01"}}
    assert (await http.patch(f"/api/v1/persons/{ida}", json=fix)).status_code == 200
    r = await http.patch(
        f"/api/v1/engagements/{eng}", json={"unit": world.u["afd"], "validity": {"from": "2021-01-01"}}
    )
    assert r.status_code == 200, r.text

    async def read(path: str, **params: str) -> dict:  # type: ignore[type-arg]
        r = await http.get(path, params={"at": "2026-03-10", **params})
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    assert (await read(f"/api/v1/persons/{ida}"))["surname"] == "Hansen-Berg"
    assert (await read(f"/api/v1/persons/{ida}", registered_at=believed))["surname"] == "Hansen"
    then = await read(f"/api/v1/persons/{ida}/overview", registered_at=believed)
    assert [e["unit"]["uuid"] for e in then["engagements"]] == [world.u["team"]]
    now = await read(f"/api/v1/persons/{ida}/overview")
    assert [e["unit"]["uuid"] for e in now["engagements"]] == [world.u["afd"]]
    team_then = await read(f"/api/v1/orgunits/{world.u['team']}/people", registered_at=believed)
    assert [i["person"]["uuid"] for i in team_then["items"]] == [ida]
    assert (await read(f"/api/v1/orgunits/{world.u['team']}/people"))["items"] == []
    listed = await read("/api/v1/engagements", person=ida, registered_at=believed)
    assert [e["unit"] for e in listed["items"]] == [world.u["team"]]

    r = await http.get(f"/api/v1/persons/{ida}", params={"registered_at": before_anything})
    assert r.status_code == 404  # not registered yet then
    r = await http.get(f"/api/v1/persons/{ida}", params={"registered_at": "yesterday"})
    assert r.status_code == 400 and problem_type(r) == "invalid-instant" and r.json()["field"] == "registered_at"
