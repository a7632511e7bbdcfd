"""The rules as pure functions, without servers."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from orgdir import problems
from orgdir.contracts.orgunits import OrgUnitSlice
from orgdir.problems import Problem
from orgdir.schemas import ValidityIn
from orgdir.validity import Validity
from orgunits import domain


def v(a: str, b: str | None = None) -> Validity:
    return Validity(from_=date.fromisoformat(a), to=date.fromisoformat(b) if b else None)


def sl(key: str, parent: str | None, a: str, b: str | None = None, name: str | None = None) -> OrgUnitSlice:
    return OrgUnitSlice(validity=v(a, b), user_key=key, name=name or key, parent=parent)


def kind(exc: pytest.ExceptionInfo[Problem]) -> str:
    return exc.value.kind


def test_ean_check_digit_gs1() -> None:
    assert domain.ean_check_digit("579800000000") == 1
    assert domain.valid_ean("5798000000001")
    assert domain.valid_ean("4006381333931")  # a well-known valid EAN-13
    assert not domain.valid_ean("4006381333932")
    assert not domain.valid_ean("579800000001")


@pytest.mark.parametrize(
    ("scope", "value", "normalised"),
    [
        ("email", "post@kolding.dk", "post@kolding.dk"),
        ("email", "børn@kolding.dk", "børn@kolding.dk"),
        ("ean", "5798 0000 00001", "5798000000001"),
        ("pnumber", "1003388714", "1003388714"),
        ("phone", "+45 79 79 79 79", "+4579797979"),
        ("phone", "79 79 79 79", "79797979"),
        ("www", "www.kolding.dk", "https://www.kolding.dk"),
        ("www", "https://kolding.dk/borger?x=1", "https://kolding.dk/borger?x=1"),
        ("postal", "Akseltorv  1, 6000 Kolding", "Akseltorv 1, 6000 Kolding"),
        ("text", "Rådhuset, 2. sal", "Rådhuset, 2. sal"),
    ],
)
def test_valid_addresses(scope: str, value: str, normalised: str) -> None:
    assert domain.validate_address(scope, value) == normalised


@pytest.mark.parametrize(
    ("scope", "value"),
    [
        ("email", "post@kolding"),
        ("email", "no at sign"),
        ("ean", "5798000000002"),
        ("ean", "579800000000"),
        ("pnumber", "123456789"),
        ("pnumber", "12345678AB"),
        ("phone", "1234"),
        ("phone", "+45 abc"),
        ("www", "ftp://kolding.dk"),
        ("postal", "Akseltorv 1"),
        ("text", "   "),
    ],
)
def test_invalid_addresses(scope: str, value: str) -> None:
    with pytest.raises(Problem) as exc:
        domain.validate_address(scope, value)
    assert kind(exc) == "invalid-address"


def test_to_before_from() -> None:
    today = date(2026, 3, 2)
    assert ValidityIn().resolve(today) == Validity(from_=today)
    with pytest.raises(problems.Invalid) as exc:
        ValidityIn(**{"from": date(2026, 5, 1), "to": date(2026, 4, 1)}).resolve(today)
    assert kind(exc) == "invalid-validity" and exc.value.extra["field"] == "validity"
    with pytest.raises(problems.Invalid):
        ValidityIn(**{"from": date(2026, 5, 1), "to": date(2026, 5, 1)}).resolve(today)


def test_parent_must_exist_and_cover_the_slice() -> None:
    units = {"p": [sl("P", None, "2026-01-01", "2026-06-01")]}
    domain.check_parents("c", [sl("C", "p", "2026-02-01", "2026-06-01")], units)
    with pytest.raises(Problem) as exc:
        domain.check_parents("c", [sl("C", "p", "2026-02-01")], units)
    assert kind(exc) == "parent-not-active"
    assert exc.value.extra["uncovered"] == [{"from": "2026-06-01", "to": None}]
    with pytest.raises(Problem) as exc:
        domain.check_parents("c", [sl("C", "nope", "2026-02-01")], units)
    assert kind(exc) == "parent-not-found"
    with pytest.raises(Problem) as exc:
        domain.check_parents("c", [sl("C", "c", "2026-02-01")], units)
    assert kind(exc) == "cycle"


def test_cycles_are_found_on_the_day_they_would_begin() -> None:
    # a <- b <- c today; from 2026-05-01 c moves under a root x.
    units = {
        "a": [sl("A", None, "2026-01-01")],
        "b": [sl("B", "a", "2026-01-01")],
        "c": [sl("C", "b", "2026-01-01", "2026-05-01"), sl("C", "x", "2026-05-01")],
        "x": [sl("X", None, "2026-01-01")],
    }
    # Moving a under c from 2026-03-01: a cycle at once.
    new_a = [sl("A", None, "2026-01-01", "2026-03-01"), sl("A", "c", "2026-03-01")]
    assert domain.find_cycle("a", new_a, units) == date(2026, 3, 1)
    # Moving a under c from 2026-06-01 is fine: c is no longer below a by then.
    later = [sl("A", None, "2026-01-01", "2026-06-01"), sl("A", "c", "2026-06-01")]
    assert domain.find_cycle("a", later, units) is None
    with pytest.raises(Problem) as exc:
        domain.check_no_cycle("a", new_a, units)
    assert kind(exc) == "cycle" and exc.value.extra["day"] == "2026-03-01"


def test_children_must_stay_covered() -> None:
    units = {
        "p": [sl("P", None, "2026-01-01")],
        "c": [sl("C", "p", "2026-01-01", "2026-04-01")],
        "d": [sl("D", "p", "2026-01-01")],
    }
    ended = [sl("P", None, "2026-01-01", "2026-04-01")]
    with pytest.raises(Problem) as exc:
        domain.check_children("p", ended, units, {"c", "d"})
    assert kind(exc) == "active-children"
    assert [c["uuid"] for c in exc.value.extra["children"]] == ["d"]
    domain.check_children("p", ended, units, {"c"})


def test_user_key_unique_on_any_day() -> None:
    units = {"a": [sl("SKOLE1", None, "2026-01-01", "2026-08-01")]}
    holders = {"skole1": {"a"}}
    domain.check_user_key("b", [sl("skole1", None, "2026-08-01")], units, holders)
    with pytest.raises(Problem) as exc:
        domain.check_user_key("b", [sl("Skole1", None, "2026-07-31")], units, holders)
    assert kind(exc) == "user-key-taken" and isinstance(exc.value, problems.Conflict)
    domain.check_user_key("a", [sl("SKOLE1", None, "2026-01-01")], units, holders)  # itself


def test_timelines_and_event_kinds() -> None:
    current = [sl("A", "p", "2026-01-01")]
    moved = domain.patch_timeline(current, v("2026-05-01"), {"parent": "q"})
    assert [s.parent for s in moved] == ["p", "q"]
    assert domain.parent_changes(current, moved)
    renamed = domain.patch_timeline(current, v("2026-05-01"), {"name": "B"})
    assert not domain.parent_changes(current, renamed)
    with pytest.raises(Problem) as exc:
        domain.patch_timeline(current, v("2025-01-01", "2025-06-01"), {"name": "B"})
    assert kind(exc) == "unit-not-active"
    assert domain.terminate_timeline(current, date(2026, 3, 1))[-1].validity.to == date(2026, 3, 1)
    with pytest.raises(problems.Invalid) as exc:
        domain.terminate_timeline(current, date(2026, 1, 1))
    assert kind(exc) == "terminate-before-start"


def test_engagement_counts() -> None:
    docs: list[dict[str, Any]] = [
        {"periods": [{"unit": "u", "from": "2025-01-01", "to": "2026-03-01"}]},
        {"periods": [{"unit": "u", "from": "2025-01-01", "to": None}]},
        {"periods": [{"unit": "w", "from": "2025-01-01", "to": None}]},
        {"periods": [{"unit": "u", "from": "2026-06-01", "to": "2026-09-01"}]},
    ]
    assert domain.count_active_engagements(docs, "u", date(2026, 3, 1)) == 2
    assert domain.count_active_engagements(docs, "u", date(2026, 10, 1)) == 1
    with pytest.raises(Problem) as exc:
        domain.check_engagements("u", date(2026, 3, 1), 2)
    assert kind(exc) == "active-engagements" and exc.value.extra["engagements"] == 2


def test_facet_and_class_rules() -> None:
    from orgdir.contracts.orgunits import ClassSlice, FacetSlice

    facet = [FacetSlice(validity=v("1900-01-01"), user_key="skoleform")]
    domain.check_facet("f", "skoleform", "f", facet)
    with pytest.raises(problems.Conflict) as exc:
        domain.check_facet("g", "skoleform", "f", [])
    assert kind(exc) == "user-key-taken" and exc.value.extra["holder"] == "f"
    with pytest.raises(problems.Invalid) as invalid:
        domain.check_facet("f", "andet", None, facet)
    assert kind(invalid) == "facet-key-immutable"
    cls = [ClassSlice(validity=v("2026-01-01"), user_key="x", name="X")]
    assert domain.terminate_class_timeline(cls, date(2026, 2, 1))[-1].validity.to == date(2026, 2, 1)
    with pytest.raises(problems.Invalid) as invalid:
        domain.terminate_class_timeline(cls, date(2026, 1, 1))
    assert kind(invalid) == "terminate-before-start"


@pytest.mark.parametrize("cursor", ["MQ", "bnVsbA", "WzFd", "not a cursor!", "W10x"])
def test_in_memory_pages_refuse_cursors_they_did_not_give_out(cursor: str) -> None:
    from orgdir.http import Paging
    from orgunits.readmodel import page

    rows = [(("a", "1"), 1), (("b", "2"), 2), (("c", "3"), 3)]
    items, nxt = page(rows, Paging(2, None))
    assert items == [1, 2] and nxt is not None
    assert page(rows, Paging(2, nxt)) == ([3], None)
    with pytest.raises(problems.BadRequest) as exc:
        page(rows, Paging(2, cursor))
    assert kind(exc) == "invalid-cursor"


def test_parent_and_children_stay_in_one_hierarchy() -> None:
    med = "med-uuid"
    units = {
        "line-root": [sl("L", None, "2020-01-01")],
        "med-root": [sl("M", None, "2020-01-01").model_copy(update={"hierarchy": med})],
    }
    # A MED unit under a line unit, from the day it would be.
    child = [sl("C", "line-root", "2024-01-01").model_copy(update={"hierarchy": med})]
    with pytest.raises(Problem) as exc:
        domain.check_parents("c", child, units)
    assert (kind(exc), exc.value.extra["field"]) == ("parent-other-hierarchy", "parent")
    domain.check_parents("c", [s.model_copy(update={"parent": "med-root"}) for s in child], units)
    # A unit stored before hierarchies (null) counts as the line organisation.
    domain.check_parents("c", [sl("C", "line-root", "2024-01-01")], units)
    # A parent cannot leave its children's hierarchy.
    units["c"] = [sl("C", "line-root", "2024-01-01")]
    moved = [sl("L", None, "2020-01-01").model_copy(update={"hierarchy": med})]
    with pytest.raises(Problem) as exc:
        domain.check_children_hierarchy("line-root", moved, units, ["c"])
    assert kind(exc) == "children-other-hierarchy" and exc.value.extra["children"][0]["uuid"] == "c"


def test_related_pairs_are_two_units_related_once_at_a_time() -> None:
    from orgdir.contracts.orgunits import RelatedUnitSlice, RelatedUnitState

    assert domain.related_pair(["b", "a"]) == ["a", "b"]
    with pytest.raises(Problem) as exc:
        domain.related_pair(["a", "a"])
    assert kind(exc) == "same-unit"
    units = {"a": [sl("A", None, "2020-01-01")], "b": [sl("B", None, "2022-01-01")]}
    rel = [RelatedUnitSlice(validity=v("2023-01-01", "2024-01-01"))]
    domain.check_relation("r1", ["a", "b"], rel, units, [])
    with pytest.raises(Problem) as exc:
        domain.check_relation("r1", ["a", "b"], [RelatedUnitSlice(validity=v("2021-01-01"))], units, [])
    assert kind(exc) == "unit-not-active" and exc.value.extra["unit"] == "b"
    other = RelatedUnitState(uuid="r0", version=1, units=["a", "b"], timeline=rel)
    with pytest.raises(Problem) as exc:
        domain.check_relation("r1", ["a", "b"], [RelatedUnitSlice(validity=v("2023-06-01"))], units, [other])
    assert kind(exc) == "relation-exists"
    domain.check_relation("r1", ["a", "b"], [RelatedUnitSlice(validity=v("2024-01-01"))], units, [other])


def test_units_a_write_touches_for_scoped_administration() -> None:
    day = date(2026, 3, 1)
    old = [sl("u", "p", "2020-01-01")]
    assert domain.units_touched("u", [], [sl("u", "p", "2026-03-01")], day) == ["p"]  # created under p
    assert domain.units_touched("u", [], [sl("u", None, "2026-03-01")], day) == [None]  # a root: no unit
    renamed = [sl("u", "p", "2020-01-01", "2026-03-01"), sl("u", "p", "2026-03-01", name="new")]
    assert domain.units_touched("u", old, renamed, day) == ["u"]
    moved = [sl("u", "p", "2020-01-01", "2026-03-01"), sl("u", "q", "2026-03-01")]
    assert domain.units_touched("u", old, moved, day) == ["u", "q"]  # the unit where it stands, and the new parent
    assert domain.units_touched("u", old, [sl("u", "p", "2020-01-01", "2026-03-01")], day) == ["u"]  # ended
    assert domain.units_touched("u", old, [*moved[:1], sl("u", None, "2026-03-01")], day) == ["u", None]  # to a root
