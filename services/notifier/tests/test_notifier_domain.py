"""Pure rules of the notifier, without servers."""

import pytest

from notifier import domain


def test_subtree_follows_every_parent_a_unit_ever_had() -> None:
    parents = {"root": set(), "old": {"root"}, "child": {"old", "other"}, "other": set()}
    assert domain.in_subtree({"child"}, "root", parents)
    assert domain.in_subtree({"root"}, "root", parents)
    assert not domain.in_subtree({"other"}, "root", parents)


def test_subtree_of_a_unit_not_yet_seen_is_undecided_not_false() -> None:
    """The unit's creation may still be on its way: retry, never drop."""
    parents = {"root": set(), "child": {"missing"}}
    with pytest.raises(domain.UnitNotYetKnown, match="missing"):
        domain.in_subtree({"child"}, "root", parents)
    with pytest.raises(domain.UnitNotYetKnown, match="new"):
        domain.in_subtree({"new"}, "root", parents)
    # decided as soon as one of the units is known to lie below the root
    assert domain.in_subtree({"new", "root"}, "root", parents)
