"""Event envelope, catalogue exports, bus topic matching and role logic."""

import json

import pytest

import orgdir.contracts  # noqa: F401  (registers the catalogue)
from orgdir import auth, events
from orgdir.bus import Router, amqp_matches


def test_envelope_roundtrip_and_catalogue_validation() -> None:
    e = events.new_event(
        service="orgunits",
        type="facet.created",
        subject="f1",
        sequence=1,
        data={
            "uuid": "f1",
            "version": 1,
            "timeline": [{"validity": {"from": "2026-01-01", "to": None}, "user_key": "unit_type"}],
        },
    )
    parsed = events.parse(e.body())
    assert parsed == e and parsed.source == "/orgdir/orgunits" and parsed.specversion == "1.0"
    data = events.typed_data(parsed)
    assert data.model_dump(by_alias=True)["timeline"][0]["validity"]["from"].isoformat() == "2026-01-01"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"nope", "not JSON"),
        (b'{"id": "x"}', "not an Orgdir CloudEvent"),
    ],
)
def test_parse_rejects_malformed(body: bytes, reason: str) -> None:
    with pytest.raises(events.EventRejected, match=reason):
        events.parse(body)


def test_parse_rejects_unknown_type_and_bad_data() -> None:
    e = events.new_event(service="x", type="person.created", subject="p", sequence=1, data={"uuid": "p"})
    raw = json.loads(e.body())
    raw["type"] = "person.exploded"
    with pytest.raises(events.EventRejected, match="unknown event type"):
        events.parse(json.dumps(raw).encode())
    with pytest.raises(events.EventRejected, match="data does not match person.created"):
        events.typed_data(e)


def test_json_schema_and_asyncapi_cover_every_type() -> None:
    schema = events.catalogue_json_schema()
    assert set(schema["eventTypes"]) == set(events.CATALOGUE)
    assert "OrgUnitState" in schema["$defs"]
    doc = events.asyncapi_document()
    assert doc["asyncapi"] == "3.0.0"
    assert {c["address"] for c in doc["channels"].values()} == set(events.CATALOGUE)
    text = json.dumps(doc)
    assert "#/$defs/" not in text  # every reference points into components


def test_amqp_topic_matching() -> None:
    assert amqp_matches("orgunit.*", "orgunit.created")
    assert not amqp_matches("orgunit.*", "orgunit.created.x")
    assert amqp_matches("#", "a.b.c") and amqp_matches("orgunit.#", "orgunit")
    assert not amqp_matches("person.*", "orgunit.created")
    r = Router()

    @r.on("person.*", "engagement.created")
    async def h(event: object, data: object) -> None: ...

    assert r.patterns == ["engagement.created", "person.*"]
    assert r.handlers_for("person.updated") == [h] and r.handlers_for("leave.created") == []


def test_roles_imply_and_keycloak_claims() -> None:
    assert auth.expand(["orgdir:admin"]) >= {"orgdir:write", "orgdir:read"}
    assert "orgdir:write" not in auth.expand(["orgdir:read"])
    claims = {
        "realm_access": {"roles": ["orgdir:read", "offline_access"]},
        "resource_access": {"orgdir-api": {"roles": ["orgdir:write"]}},
        "scope": "openid orgdir:approve",
    }
    assert auth.roles_from_claims(claims, "orgdir-api") == {"orgdir:read", "orgdir:write", "orgdir:approve"}
