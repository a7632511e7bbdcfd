"""A new dataversion is emitted beside the previous one for a release (docs/consumer-guide.md)."""

from __future__ import annotations

from typing import Any

from orgdir.contracts import access  # noqa: F401  (registers the types and their previous versions)
from orgdir.events import CATALOGUE, is_current, new_event, side_by_side

RIGHT: dict[str, Any] = {
    "role": "r1",
    "it_system": "s1",
    "validity": {"from": "2027-01-01", "to": None},
    "reasons": [{"kind": "kle", "assignment": "a1", "unit": "u1", "kle": "k1", "aspect": "udførende"}],
}


def event(type: str, data: dict[str, Any]) -> Any:
    return new_event(service="access-rights", type=type, subject="p1", sequence=3, data=data)


def test_access_events_go_out_in_both_versions_and_a_kle_reason_reads_as_its_unit_in_version_1() -> None:
    data = {
        "uuid": "p1",
        "version": 3,
        "person": "p1",
        "role": "r1",
        "it_system": "s1",
        "reasons": RIGHT["reasons"],
        "validity": RIGHT["validity"],
        "rights": [RIGHT],
    }
    new, old = side_by_side(event("access.granted", data))
    assert (new.dataversion, old.dataversion) == (CATALOGUE["access.granted"].dataversion, "1") == ("2", "1")
    assert (old.subject, old.sequence, old.type) == (new.subject, new.sequence, new.type) and old.id != new.id
    assert is_current(new) and not is_current(old)
    v1_reason = {"kind": "unit", "assignment": "a1", "unit": "u1", "via_unit": "u1"}
    assert old.data["reasons"] == [v1_reason] and old.data["rights"][0]["reasons"] == [v1_reason]
    assert new.data == data  # the new version untouched
    again = side_by_side(new.model_copy())  # republish: the copy has the same id again
    assert again[1].id == old.id


def test_an_assignment_version_1_cannot_say_is_left_out() -> None:
    slice_ = {"validity": {"from": "2027-01-01", "to": None}, "role": "r1", "status": "active"}
    unit = {"uuid": "a1", "version": 1, "target": "unit", "timeline": [{**slice_, "unit": "u1", "kle": None}]}
    kle = {"uuid": "a2", "version": 1, "target": "kle", "timeline": [{**slice_, "kle": "k1", "aspect": "indsigt"}]}
    both = side_by_side(event("assignment.created", unit))
    assert [e.dataversion for e in both] == ["2", "1"] and "kle" not in both[1].data["timeline"][0]
    assert [e.dataversion for e in side_by_side(event("assignment.created", kle))] == ["2"]
    assert len(side_by_side(event("role.created", {"uuid": "x", "version": 1, "timeline": []}))) == 1
