"""The people of a unit's subtree within one hierarchy (``?hierarchy=``), on real servers."""

from __future__ import annotations

from orgdir_tools.registry_support import EPOCH, World, uid


async def test_people_of_a_subtree_take_a_hierarchy(world: World) -> None:
    await world.seed()
    f, http = world.feed, world.http
    line = await f.cls("unit_hierarchy", "linje", "Linjeorganisation")
    med = await f.cls("unit_hierarchy", "med", "MED-organisation")

    def med_slice(name: str, parent: str | None) -> list[dict[str, object]]:
        return [{"validity": {"from": EPOCH.isoformat(), "to": None}, "user_key": name, "name": name,
                 "parent": parent, "hierarchy": med}]

    hu = await f.unit("Hovedudvalget", timeline=med_slice("HU", None))
    lu = await f.unit("Lokaludvalg", timeline=med_slice("LU", uid("Hovedudvalget")))
    await f.wait(world.registry)
    p = await world.person("Ida Holm")
    await world.engagement(p, lu)
    await world.engagement(p, world.u["team"])

    async def people(unit: str, **params: str) -> list[str]:
        r = await http.get(f"/api/v1/orgunits/{unit}/people", params={"subtree": "true", **params})
        assert r.status_code == 200, r.text
        return [i["unit"]["uuid"] for i in r.json()["items"]]

    assert await people(hu) == [lu]
    assert await people(hu, hierarchy="med") == await people(hu, hierarchy=med) == [lu]
    assert await people(hu, hierarchy="linje") == []
    # Units published before hierarchies existed (hierarchy null) are the line organisation.
    assert await people(world.u["root"], hierarchy=line) == [world.u["team"]]
    r = await http.get(f"/api/v1/orgunits/{hu}/people", params={"hierarchy": "nope"})
    assert r.status_code == 422 and r.json()["field"] == "hierarchy", r.text
