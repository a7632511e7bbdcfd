"""The catalogue's compatibility promise: additive changes pass, removals and retypes need a new dataversion."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, Field

from orgdir.contracts.common import AggregateState
from orgdir.contracts.registry import ContactAddress, PersonSlice, PersonState
from orgdir.events import EventType, catalogue_json_schema
from orgdir.validity import SliceBase
from orgdir_tools.compat import SNAPSHOT, breaking_changes, current_catalogue, main


def catalogue(model: type[BaseModel], dataversion: str = "1", name: str = "person.updated") -> dict[str, Any]:
    schema = catalogue_json_schema({name: EventType(name, model, "A person changed.", dataversion)})
    return json.loads(json.dumps(schema, default=str))  # type: ignore[no-any-return]


BASE = catalogue(PersonState)


# Modified copies of the person contract (orgdir.contracts.registry), each one change.
class SliceWithoutSurname(SliceBase):
    given_name: str
    nickname: str | None = None
    user_key: str | None = None
    addresses: list[ContactAddress] = Field(default_factory=list)


class PersonWithoutSurname(AggregateState[SliceWithoutSurname]):
    has_cpr: bool = False
    cpr_hash: str | None = None


class PersonRetyped(AggregateState[PersonSlice]):
    has_cpr: str = "no"  # was bool
    cpr_hash: str | None = None


class PersonNullable(AggregateState[PersonSlice]):
    has_cpr: bool | None = False  # consumers may now get null
    cpr_hash: str | None = None


class WiderAddress(ContactAddress):
    scope: Literal["email", "phone", "location", "fax"]  # type: ignore[assignment]  # a new value


class SliceWiderAddress(PersonSlice):
    addresses: list[WiderAddress] = Field(default_factory=list)  # type: ignore[assignment]


class PersonWiderEnum(AggregateState[SliceWiderAddress]):
    has_cpr: bool = False
    cpr_hash: str | None = None


class SliceAdditive(PersonSlice):
    title: str | None = None  # a new optional field


class PersonAdditive(AggregateState[SliceAdditive]):
    has_cpr: bool = False
    cpr_hash: str | None = None
    pronouns: str | None = None  # another new field
    nickname_required: str = ""


class PersonNarrowed(AggregateState[PersonSlice]):
    has_cpr: bool  # now required: consumers get it always, as before or better
    cpr_hash: str | None = None


def test_the_unchanged_contract_is_compatible() -> None:
    assert breaking_changes(BASE, catalogue(PersonState)) == []


def test_a_removed_field_is_breaking_unless_dataversion_is_bumped() -> None:
    found = breaking_changes(BASE, catalogue(PersonWithoutSurname))
    assert [(b.event_type, b.path, b.problem) for b in found] == [("person.updated", "timeline[].surname", "removed")]
    assert "timeline[].surname: removed" in str(found[0])
    assert breaking_changes(BASE, catalogue(PersonWithoutSurname, dataversion="2")) == []


def test_retyped_widened_and_nullable_fields_are_breaking() -> None:
    retyped = breaking_changes(BASE, catalogue(PersonRetyped))
    assert [b.path for b in retyped] == ["has_cpr"] and "retyped" in retyped[0].problem
    nullable = breaking_changes(BASE, catalogue(PersonNullable))
    assert [b.path for b in nullable] == ["has_cpr"] and "null" in nullable[0].problem
    wider = breaking_changes(BASE, catalogue(PersonWiderEnum))
    assert [b.path for b in wider] == ["timeline[].addresses[].scope"] and "fax" in wider[0].problem


def test_additive_changes_and_stronger_promises_pass() -> None:
    assert breaking_changes(BASE, catalogue(PersonAdditive)) == []
    assert breaking_changes(BASE, catalogue(PersonNarrowed)) == []


def test_a_removed_event_type_is_breaking() -> None:
    found = breaking_changes(BASE, catalogue(PersonState, name="person.changed"))
    assert [(b.event_type, b.problem) for b in found] == [("person.updated", "event type removed")]


def test_the_catalogue_keeps_the_committed_snapshots_promises() -> None:
    """Fails when a contract in orgdir.contracts removes or retypes a field without a new dataversion."""
    snapshot = json.loads(SNAPSHOT.read_text())
    assert len(snapshot["eventTypes"]) >= 50
    assert [str(b) for b in breaking_changes(snapshot, current_catalogue())] == []


def test_the_snapshot_is_not_rewritten_over_a_breaking_change(tmp_path: Any, capsys: Any) -> None:
    broken = json.loads(SNAPSHOT.read_text())
    person = broken["$defs"]["PersonSlice"]
    person["properties"]["middle_name"] = {"type": "string"}  # promised once, gone from the contract now
    path = tmp_path / "snapshot.json"
    path.write_text(json.dumps(broken))
    assert main(["--snapshot", str(path), "--write"]) == 1
    assert json.loads(path.read_text()) == broken
    assert "middle_name: removed" in capsys.readouterr().err
