"""Scoped administration's pure rules: grants, group paths, and which units lie inside a scope."""

from __future__ import annotations

from datetime import date

import pytest

from orgdir import auth, scopes
from orgdir.contracts.orgunits import OrgUnitSlice
from orgdir.problems import Forbidden
from orgdir.tree import UnitTree
from orgdir.validity import Validity

D = date(2027, 1, 1)
MOVE = date(2027, 6, 1)


def unit(key: str, parent: str | None, start: date = date(2020, 1, 1), end: date | None = None) -> OrgUnitSlice:
    return OrgUnitSlice(validity=Validity(from_=start, to=end), user_key=key, name=key.title(), parent=parent)


@pytest.fixture
def tree() -> UnitTree:
    """kommune → {bou → {skole, dagtilbud}, teknik}; skole moves to teknik from MOVE; nyskole starts in MOVE."""
    t = UnitTree()
    t.put("kommune", [unit("kommune", None)])
    t.put("bou", [unit("bou", "kommune")])
    t.put("teknik", [unit("teknik", "kommune")])
    t.put("dagtilbud", [unit("dagtilbud", "bou")])
    t.put("skole", [unit("skole", "bou", end=MOVE), unit("skole", "teknik", start=MOVE)])
    t.put("nyskole", [unit("nyskole", "bou", start=MOVE)])
    t.put("f0e1", [unit("boern-og-unge", "kommune")])  # a unit named in grants by its user_key
    t.put("f0e2", [unit("sundhed", "f0e1")])
    return t


def test_grants_split_into_roles_everywhere_and_roles_on_units() -> None:
    roles, scoped = scopes.split_grants(["orgdir:read", "orgdir:write@bou", "orgdir:write@teknik", "orgdir:admin@"])
    assert roles == {"orgdir:read"}
    assert scoped == {"orgdir:write": {"bou", "teknik"}}


def test_group_paths_grant_roles_under_the_prefix_only() -> None:
    groups = ["/orgdir/read", "/orgdir/write/boern-og-unge", "/other/admin", 42, "/orgdir/"]
    assert scopes.grants_from_groups(groups, "/orgdir/") == {"orgdir:read", "orgdir:write@boern-og-unge"}
    assert scopes.grants_from_groups(groups, "") == set()


def test_a_scoped_admin_holds_write_and_read_on_the_same_units_only() -> None:
    p = auth.principal_of("s", ["orgdir:read", "orgdir:admin@bou"])
    assert p.has("orgdir:read") and not p.has("orgdir:write")
    assert p.scoped["orgdir:write"] == {"bou"} and p.has_somewhere("orgdir:write")


def test_units_inside_a_scope_follow_the_tree_of_the_day(tree: UnitTree) -> None:
    assert scopes.outside(tree, ["bou"], ["bou", "dagtilbud", "skole"], D) == []
    assert scopes.outside(tree, ["bou"], ["teknik", "kommune"], D) == ["teknik", "kommune"]
    assert scopes.outside(tree, ["bou"], ["skole"], MOVE) == ["skole"]  # moved out
    assert scopes.outside(tree, ["bou"], ["nyskole"], D) == []  # not there yet: judged where it will be
    assert scopes.outside(tree, ["bou"], ["unknown"], D) == ["unknown"]
    assert scopes.resolve(tree, "boern-og-unge", D) == "f0e1"
    assert scopes.outside(tree, ["boern-og-unge"], ["f0e2", "bou"], D) == ["bou"]


def test_check_scope_refuses_what_lies_outside_and_names_the_scope(tree: UnitTree) -> None:
    token = auth.current.set(auth.principal_of("static:bou", ["orgdir:read", "orgdir:write@bou"]))
    try:
        auth.check_scope(tree, ["dagtilbud", "bou"], D)
        with pytest.raises(Forbidden) as refused:
            auth.check_scope(tree, ["dagtilbud", "teknik"], D)  # e.g. a move from inside to outside
        assert refused.value.kind == "out-of-scope" and "Bou (bou)" in refused.value.detail
        assert refused.value.extra["units"] == ["teknik"]
        with pytest.raises(Forbidden):
            auth.check_scope(tree, [None], D)  # a root unit, a person: only for a writer everywhere
    finally:
        auth.current.reset(token)
    auth.check_scope(tree, [None, "teknik"], D)  # no caller (a consumer, the scheduler): the system acts
    token = auth.current.set(auth.principal_of("static:all", ["orgdir:write"]))
    try:
        auth.check_scope(tree, [None, "teknik"], D)
    finally:
        auth.current.reset(token)
