"""``?registered_at=``: the tree, units and vocabulary as orgunits had them registered at an instant (issue #17)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from orgdir.clock import ManualClock
from orgdir_tools.testkit import RunningApp

DAY = {"at": "2026-03-10"}
FROM = {"from": "2026-01-01"}


async def test_a_correction_leaves_the_earlier_tree_readable(svc: RunningApp, clock: ManualClock) -> None:
    http = svc.http
    root, bu, soc, skole = (str(uuid.uuid4()) for _ in range(4))
    before_anything = clock.now().isoformat()
    clock.advance(timedelta(hours=1))
    for uid, name, parent in ((root, "Kommune", None), (bu, "Børn og Unge", root), (soc, "Social", root),
                              (skole, "Skolen", bu)):
        body = {"user_key": name.lower(), "name": name, "parent": parent, "validity": FROM}
        assert (await http.put(f"/api/v1/orgunits/{uid}", json=body)).status_code == 201
    believed = clock.now().isoformat()
    clock.advance(timedelta(hours=1))
    # The registration was wrong: it is Lykkeskolen, and it has belonged to Social all along.
    r = await http.patch(f"/api/v1/orgunits/{skole}", json={"name": "Lykkeskolen", "validity": FROM})
    assert r.status_code == 200, r.text
    r = await http.post(f"/api/v1/orgunits/{skole}/move", json={"parent": soc, "validity": FROM})
    assert r.status_code == 200, r.text
    r = await http.post("/api/v1/classes", json={"facet": "unit_type", "user_key": "friskole", "name": "Friskole"})
    assert r.status_code == 201, r.text
    friskole = r.json()["uuid"]
    r = await http.post("/api/v1/related-units", json={"units": [bu, soc], "validity": FROM})
    assert r.status_code == 201, r.text

    async def read(path: str, **params: str) -> Any:
        r = await http.get(path, params={**DAY, **params})
        assert r.status_code == 200, r.text
        return r.json()

    then: dict[str, str] = {"registered_at": believed}
    now: dict[str, str] = {}
    assert (await read(f"/api/v1/orgunits/{skole}", **then))["name"] == "Skolen"
    assert (await read(f"/api/v1/orgunits/{skole}", **then))["parent"] == bu
    assert (await read(f"/api/v1/orgunits/{skole}", **now))["name"] == "Lykkeskolen"
    assert (await read(f"/api/v1/orgunits/{skole}", **now))["parent"] == soc

    def under(tree: dict[str, Any], name: str) -> list[str]:
        kids = {n["name"]: [c["name"] for c in n["children"]] for n in tree["roots"][0]["children"]}
        return kids[name]

    assert under(await read("/api/v1/tree", **then), "Børn og Unge") == ["Skolen"]
    assert under(await read("/api/v1/tree", **now), "Social") == ["Lykkeskolen"]
    assert under(await read("/api/v1/tree", **now), "Børn og Unge") == []
    assert [u["name"] for u in (await read(f"/api/v1/orgunits/{bu}/children", **then))["items"]] == ["Skolen"]
    assert (await read(f"/api/v1/orgunits/{bu}/children", **now))["items"] == []
    assert [u["name"] for u in (await read(f"/api/v1/orgunits/{soc}/children", **now))["items"]] == ["Lykkeskolen"]
    assert [c["name"] for c in (await read(f"/api/v1/orgunits/{bu}/subtree", **then))["children"]] == ["Skolen"]
    assert [a["uuid"] for a in (await read(f"/api/v1/orgunits/{skole}/ancestors", **then))["items"]] == [bu, root]
    assert [u["uuid"] for u in (await read("/api/v1/orgunits", q="skolen", **then))["items"]] == [skole]
    assert (await read("/api/v1/orgunits", q="lykke", **then))["items"] == []
    assert (await read(f"/api/v1/orgunits/{bu}", **then))["related_units"] == []
    assert (await read("/api/v1/related-units", **then))["items"] == []
    assert len((await read("/api/v1/related-units", **now))["items"]) == 1
    keys = {c["user_key"] for c in (await read("/api/v1/classes", facet="unit_type", **then))["items"]}
    assert "skole" in keys and "friskole" not in keys
    r = await http.get(f"/api/v1/classes/{friskole}", params={"registered_at": believed})
    assert r.status_code == 404

    # Before anything was registered: no unit, an empty tree; a bad instant is a 400 naming the parameter.
    r = await http.get(f"/api/v1/orgunits/{skole}", params={"registered_at": before_anything})
    assert r.status_code == 404
    assert (await read("/api/v1/tree", registered_at=before_anything))["count"] == 0
    r = await http.get("/api/v1/tree", params={"registered_at": "last tuesday"})
    assert r.status_code == 400 and r.json()["type"] == "urn:orgdir:problem:invalid-instant", r.text
    assert r.json()["field"] == "registered_at"
