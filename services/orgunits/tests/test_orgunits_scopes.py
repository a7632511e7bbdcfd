"""Scoped administration of the unit tree (issue #16): a writer on one subtree, on real servers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from orgdir.clock import ManualClock
from orgdir.settings import ALL_ROLES, StaticToken
from orgdir_tools.testkit import RunningApp, settings_for
from orgunits.app import create_app
from orgunits.settings import OrgunitsSettings

ROOT, BU, SKOLE, SOC, TEAM = (str(uuid.uuid4()) for _ in range(5))
TOKENS = {
    "admin": StaticToken(token="scope-admin", roles=ALL_ROLES),
    "bou": StaticToken(token="scope-bou", roles=["orgdir:read", f"orgdir:write@{BU}"]),
    "bound": StaticToken(token="scope-bound", roles=["orgdir:read"]),
}
BINDINGS = {"static:bound": ["orgdir:write@boern-og-unge"]}  # by user_key, from the binding list
FROM = {"from": "2026-01-01"}


def as_(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name].token}"}


def out_of_scope(r: httpx.Response, units: list[str]) -> dict[str, Any]:
    assert r.status_code == 403, r.text
    body: dict[str, Any] = r.json()
    assert body["type"] == "urn:orgdir:problem:out-of-scope" and body["scope"] == [BU], body
    assert body["units"] == units, body
    return body


@pytest.fixture
async def http(ns: str, amqp_url: str, mongodb_url: str, clock: ManualClock) -> AsyncIterator[httpx.AsyncClient]:
    settings = settings_for(
        OrgunitsSettings,
        ns=ns,
        service="orgunits",
        amqp_url=amqp_url,
        mongodb_url=mongodb_url,
        static_tokens=TOKENS,
        role_bindings=BINDINGS,
    )
    async with RunningApp(create_app(settings, clock), as_("admin")) as app:
        # Kommune > Børn og Unge > Skole; Kommune > Social > Team
        for uid, key, parent in (
            (ROOT, "kommune", None), (BU, "boern-og-unge", ROOT), (SKOLE, "skole", BU),
            (SOC, "social", ROOT), (TEAM, "team", SOC),
        ):
            body = {"user_key": key, "name": key.title(), "parent": parent, "validity": FROM}
            r = await app.http.put(f"/api/v1/orgunits/{uid}", json=body)
            assert r.status_code == 201, r.text
        yield app.http


async def test_a_writer_scoped_to_a_subtree_changes_units_inside_it_only(http: httpx.AsyncClient) -> None:
    bou = as_("bou")
    # Inside: create under the scope, rename, move within it, relate two units, rename the scope's own unit.
    r = await http.post("/api/v1/orgunits", json={"user_key": "sfo", "name": "SFO", "parent": BU}, headers=bou)
    assert r.status_code == 201, r.text
    sfo = r.json()["uuid"]
    r = await http.patch(f"/api/v1/orgunits/{SKOLE}", json={"name": "Skole og SFO"}, headers=bou)
    assert r.status_code == 200, r.text
    r = await http.post(f"/api/v1/orgunits/{sfo}/move", json={"parent": SKOLE}, headers=bou)
    assert r.status_code == 200, r.text
    r = await http.post("/api/v1/related-units", json={"units": [SKOLE, sfo]}, headers=bou)
    assert r.status_code == 201, r.text
    assert (await http.patch(f"/api/v1/orgunits/{BU}", json={"name": "Børn & Unge"}, headers=bou)).status_code == 200

    versions = {u: (await http.get(f"/api/v1/orgunits/{u}/history")).json()["version"] for u in (SKOLE, SOC, TEAM)}
    # Outside: a unit under another parent, a root, a rename, a termination, a relation reaching out.
    r = await http.post("/api/v1/orgunits", json={"user_key": "x", "name": "X", "parent": SOC}, headers=bou)
    assert "Social" in out_of_scope(r, [SOC])["detail"]
    r = await http.put(f"/api/v1/orgunits/{uuid.uuid4()}", json={"user_key": "r", "name": "Rod"}, headers=bou)
    out_of_scope(r, [])  # a root has no unit above it: only a writer everywhere creates one
    out_of_scope(await http.patch(f"/api/v1/orgunits/{TEAM}", json={"name": "T"}, headers=bou), [TEAM])
    out_of_scope(await http.post(f"/api/v1/orgunits/{SOC}/terminate", json={"to": "2026-06-01"}, headers=bou), [SOC])
    out_of_scope(await http.post("/api/v1/related-units", json={"units": [SKOLE, TEAM]}, headers=bou), [TEAM])
    # A move needs the scope at both ends: out of the subtree, and into it from outside.
    out_of_scope(await http.post(f"/api/v1/orgunits/{SKOLE}/move", json={"parent": SOC}, headers=bou), [SOC])
    out_of_scope(await http.patch(f"/api/v1/orgunits/{SKOLE}", json={"parent": SOC}, headers=bou), [SOC])
    out_of_scope(await http.post(f"/api/v1/orgunits/{TEAM}/move", json={"parent": BU}, headers=bou), [TEAM])
    # The vocabulary stays with admins everywhere.
    r = await http.post("/api/v1/classes", json={"facet": "unit_type", "user_key": "y", "name": "Y"}, headers=bou)
    assert r.status_code == 403 and r.json()["type"] == "urn:orgdir:problem:forbidden", r.text

    # Nothing was stored, and reads are not scoped.
    for u, v in versions.items():
        assert (await http.get(f"/api/v1/orgunits/{u}/history")).json()["version"] == v
    r = await http.get(f"/api/v1/orgunits/{TEAM}", headers=bou)
    assert r.status_code == 200 and r.json()["parent"] == SOC
    assert (await http.get(f"/api/v1/orgunits/{SKOLE}", headers=bou)).json()["parent"] == BU

    # A binding from the administrator's list names the unit by user_key.
    bound = as_("bound")
    assert (await http.patch(f"/api/v1/orgunits/{sfo}", json={"name": "SFO Nord"}, headers=bound)).status_code == 200
    r = await http.patch(f"/api/v1/orgunits/{ROOT}", json={"name": "K"}, headers=bound)
    assert r.status_code == 403 and r.json()["units"] == [ROOT], r.text
