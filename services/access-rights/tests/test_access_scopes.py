"""Scoped administration of unit role assignments (issue #16), through the API on real servers.

A writer scoped to one subtree assigns roles to the units in it, and nothing
else: not to a unit outside, not to a person, not in the role catalogue.
"""

from __future__ import annotations

from typing import Any

import pytest

from orgdir.settings import DEV_STATIC_TOKENS, StaticToken

from .test_access_flow import FORV_A, FORV_B, ROOT, TEAM, catalogue, tree, v

TOKENS = {
    **DEV_STATIC_TOKENS,
    "forv-a": StaticToken(token="scope-forv-a", roles=["orgdir:read", f"orgdir:write@{FORV_A}"]),
    "bound": StaticToken(token="scope-bound", roles=["orgdir:read"]),
}
BINDINGS = {"static:bound": ["orgdir:write@Forvaltning B"]}  # by user_key, from the binding list
FORV = {"Authorization": "Bearer scope-forv-a"}
BOUND = {"Authorization": "Bearer scope-bound"}
SCOPED = {"static_tokens": TOKENS, "role_bindings": BINDINGS}


def kind(r: Any) -> str:
    return str(r.json().get("type", "")).rsplit(":", 1)[-1]


@pytest.mark.parametrize("env", [SCOPED], indirect=True)
async def test_a_writer_scoped_to_a_subtree_assigns_roles_there_only(env: Any) -> None:
    await tree(env)
    ids = await catalogue(env)  # as admin: role-a on Forvaltning A, role-b on Forvaltning B (both inherited)
    http = env.http
    unit_body = {"validity": v("2025-04-01"), "role": "role-c", "unit": TEAM}

    # inside the subtree: create, change, exempt someone, end
    mine = await env.ok("POST", "/api/v1/assignments", 201, json=unit_body, headers=FORV)
    assert mine["requested_by"] == "static:forv-a"
    await env.ok(
        "PATCH",
        f"/api/v1/assignments/{mine['uuid']}",
        json={"inherit": True, "validity": v("2025-05-01")},
        headers=FORV,
    )
    await env.feed.person("p-x", "Xenia", "Holm")
    await env.feed.engage("e-x", "p-x", TEAM, "jf-sagsbehandler", "2025-01-01")
    await env.settled()
    await env.ok(
        "POST", f"/api/v1/assignments/{ids['a']}/exclusions", json={"person": "p-x", "reason": "Orlov"}, headers=FORV
    )
    await env.ok("POST", f"/api/v1/assignments/{mine['uuid']}/terminate", json={"to": "2025-06-01"}, headers=FORV)

    # outside: a unit above or beside the scope, moving an assignment out of it, someone else's, a person
    r = await http.post("/api/v1/assignments", json={**unit_body, "unit": FORV_B}, headers=FORV)
    assert r.status_code == 403 and kind(r) == "out-of-scope", r.text
    assert r.json()["scope"] == [FORV_A] and r.json()["units"] == [FORV_B] and "Forvaltning A" in r.json()["detail"]
    r = await http.post("/api/v1/assignments", json={**unit_body, "unit": ROOT}, headers=FORV)
    assert r.status_code == 403 and r.json()["units"] == [ROOT], r.text
    version = (await env.ok("GET", f"/api/v1/assignments/{ids['a']}"))["version"]
    r = await http.put(
        f"/api/v1/assignments/{ids['a']}",
        json={"validity": v("2025-04-01"), "role": "role-a", "unit": FORV_B, "inherit": True},
        headers=FORV,
    )
    assert r.status_code == 403 and r.json()["units"] == [FORV_B], r.text  # FORV_A is fine, FORV_B is not
    assert (await env.ok("GET", f"/api/v1/assignments/{ids['a']}"))["version"] == version  # nothing changed
    r = await http.post(f"/api/v1/assignments/{ids['b']}/terminate", json={"to": "2025-06-01"}, headers=FORV)
    assert r.status_code == 403 and kind(r) == "out-of-scope", r.text
    r = await http.post(
        f"/api/v1/assignments/{ids['b']}/exclusions", json={"person": "p-x", "reason": "x"}, headers=FORV
    )
    assert r.status_code == 403, r.text
    r = await http.post("/api/v1/assignments", json={"role": "role-c", "person": "p-x"}, headers=FORV)
    assert r.status_code == 403 and kind(r) == "out-of-scope" and r.json()["units"] == [], r.text  # no unit
    r = await http.post("/api/v1/it-systems", json={"user_key": "X", "name": "X"}, headers=FORV)
    assert r.status_code == 403 and kind(r) == "forbidden", r.text  # the catalogue needs write everywhere
    listed = await env.ok("GET", "/api/v1/assignments", params={"unit": FORV_B}, headers=FORV)  # reads: not scoped
    assert [a["uuid"] for a in listed["items"]] == [ids["b"]]

    # a grant from the binding list, naming its unit by user_key
    await env.ok("POST", "/api/v1/assignments", 201, json={**unit_body, "unit": FORV_B}, headers=BOUND)
    r = await http.post("/api/v1/assignments", json=unit_body, headers=BOUND)
    assert r.status_code == 403 and r.json()["units"] == [TEAM], r.text
