"""Visibility of unit addresses: secret ones only with ``orgdir:read:secret``, kept when a writer cannot see them."""

from __future__ import annotations

import uuid

from orgdir_tools.testkit import READER, SECRET_READER, WRITER, RunningApp
from orgunits.vocabulary import class_uuid

SECRET_STREET = "Skjulestien 3, 6000 Kolding"
FROM = {"from": "2026-01-01"}


async def test_secret_unit_addresses_are_shown_only_to_secret_readers_and_survive_writers(svc: RunningApp) -> None:
    http = svc.http
    root, shelter = str(uuid.uuid4()), str(uuid.uuid4())
    r = await http.put(f"/api/v1/orgunits/{root}", json={"user_key": "k", "name": "Kommune", "validity": FROM})
    assert r.status_code == 201, r.text
    addresses = [
        {"address_type": "email", "value": "krise@kolding.dk", "visibility": "offentlig"},
        {"address_type": "postadresse", "value": SECRET_STREET, "visibility": class_uuid("visibility", "hemmelig")},
        {"address_type": "telefon", "value": "79791234"},
    ]
    body = {"user_key": "krise", "name": "Krisecenter", "parent": root, "addresses": addresses, "validity": FROM}

    # A visibility of the wrong facet, or none at all, is refused naming the field; nothing is stored.
    wrong = {**body, "addresses": [{**addresses[0], "visibility": class_uuid("address_type", "email")}]}
    r = await http.put(f"/api/v1/orgunits/{shelter}", json=wrong)
    assert r.status_code == 422 and r.json()["type"] == "urn:orgdir:problem:wrong-facet", r.text
    assert r.json()["field"] == "addresses.0.visibility"
    r = await http.put(f"/api/v1/orgunits/{shelter}", json={**body, "addresses": [{**addresses[0], "visibility": "x"}]})
    assert r.status_code == 422 and r.json()["field"] == "addresses.0.visibility", r.text
    assert (await http.get(f"/api/v1/orgunits/{shelter}/history")).status_code == 404

    r = await http.put(f"/api/v1/orgunits/{shelter}", json=body)
    assert r.status_code == 201, r.text
    stored = {a["value"]: a["visibility"] for a in r.json()["timeline"][0]["addresses"]}
    assert stored == {
        "krise@kolding.dk": class_uuid("visibility", "offentlig"),
        SECRET_STREET: class_uuid("visibility", "hemmelig"),
        "79791234": None,
    }

    # Readers without orgdir:read:secret see the public and internal ones, in every unit read.
    unit = f"/api/v1/orgunits/{shelter}"
    for path, params in (
        (unit, {}), (f"/api/v1/orgunits/{root}/children", {}), ("/api/v1/orgunits", {"q": "krise"}),
        (f"{unit}/history", {}),
    ):
        r = await http.get(path, params=params, headers=READER)
        assert r.status_code == 200 and "krise@kolding.dk" in r.text and SECRET_STREET not in r.text, (path, r.text)
        assert SECRET_STREET in (await http.get(path, params=params, headers=SECRET_READER)).text, path

    # A writer without read:secret writes back what it read: the secret address stays, nothing new is stored.
    seen = (await http.get(unit, headers=WRITER)).json()
    assert len(seen["addresses"]) == 2
    r = await http.put(unit, json={**seen, "validity": FROM}, headers=WRITER)
    assert r.status_code == 200 and r.json()["version"] == 1 and SECRET_STREET not in r.text, r.text
    # It replaces the addresses it can see; the secret one stays (and its answer does not show it).
    new = [{"address_type": "email", "value": "kontakt@kolding.dk"}]
    r = await http.patch(unit, json={"addresses": new, "validity": FROM}, headers=WRITER)
    assert r.status_code == 200 and SECRET_STREET not in r.text, r.text
    values = {a["value"] for a in (await http.get(unit, headers=SECRET_READER)).json()["addresses"]}
    assert values == {"kontakt@kolding.dk", SECRET_STREET}
    # A secret reader's write replaces everything it names.
    r = await http.patch(unit, json={"addresses": new, "validity": FROM})
    assert r.status_code == 200, r.text
    assert [a["value"] for a in (await http.get(unit, headers=SECRET_READER)).json()["addresses"]] == [
        "kontakt@kolding.dk"
    ]
