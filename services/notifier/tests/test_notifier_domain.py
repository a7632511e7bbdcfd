"""Pure rules of the notifier, without servers."""

from datetime import date

import pytest

from notifier import domain
from orgdir import problems
from orgdir.contracts.orgunits import OrgUnitSlice
from orgdir.tree import UnitTree
from orgdir.validity import Validity


def tree(parents: dict[str, list[str]]) -> UnitTree:
    """Units whose timelines name these parents one after another (a root: none)."""
    t = UnitTree()
    for unit, ps in parents.items():
        timeline = [
            OrgUnitSlice(
                validity=Validity(from_=date(2020 + i, 1, 1), to=date(2021 + i, 1, 1) if i < len(ps) - 1 else None),
                user_key=unit,
                name=unit,
                parent=p,
            )
            for i, p in enumerate(ps or [None])
        ]
        t.put(unit, timeline)
    return t


def test_subtree_follows_every_parent_a_unit_ever_had() -> None:
    units = tree({"root": [], "old": ["root"], "child": ["old", "other"], "other": []})
    assert domain.in_subtree({"child"}, "root", units)
    assert domain.in_subtree({"root"}, "root", units)
    assert not domain.in_subtree({"other"}, "root", units)


def test_subtree_of_a_unit_not_yet_seen_is_undecided_not_false() -> None:
    """The unit's creation may still be on its way: retry, never drop."""
    units = tree({"root": [], "child": ["missing"]})
    with pytest.raises(domain.UnitNotYetKnown, match="missing"):
        domain.in_subtree({"child"}, "root", units)
    with pytest.raises(domain.UnitNotYetKnown, match="new"):
        domain.in_subtree({"new"}, "root", units)
    # decided as soon as one of the units is known to lie below the root
    assert domain.in_subtree({"new", "root"}, "root", units)


def test_request_rules_raise_categories_not_statuses() -> None:
    with pytest.raises(problems.BadRequest) as bad:
        domain.parse_uuid("nope")
    assert bad.value.kind == "invalid-uuid"
    assert domain.parse_uuid("6F1D7C1E5C1B4B1E9F3E6A0D5E6B7C01") == "6f1d7c1e-5c1b-4b1e-9f3e-6a0d5e6b7c01"
    with pytest.raises(problems.BadRequest, match="status"):
        domain.check_status("nope")
    with pytest.raises(problems.BadRequest, match="pending"):
        domain.check_replay_statuses(["failed", "pending"])
    with pytest.raises(problems.Conflict) as pending:
        domain.check_replayable({"status": "pending"}, subscription_exists=True)
    assert pending.value.kind == "delivery-pending"
    with pytest.raises(problems.Conflict) as gone:
        domain.check_replayable({"status": "failed"}, subscription_exists=False)
    assert gone.value.kind == "subscription-missing"
    domain.check_replayable({"status": "delivered"}, subscription_exists=True)
