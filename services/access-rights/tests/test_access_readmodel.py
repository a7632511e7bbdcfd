"""The org read model rests on the shared ``UnitTree``; its chain keeps what crossing events leave out."""

from __future__ import annotations

from datetime import date

from access_rights.readmodel import OrgView
from orgdir.contracts.orgunits import OrgUnitState


def unit(uid: str, version: int, *slices: tuple[str | None, str, str | None]) -> OrgUnitState:
    return OrgUnitState.model_validate(
        {
            "uuid": uid,
            "version": version,
            "timeline": [
                {"validity": {"from": f, "to": t}, "user_key": uid, "name": uid, "parent": p} for p, f, t in slices
            ],
        }
    )


def test_org_view_units_are_a_unit_tree_newer_only() -> None:
    org = OrgView()
    assert org.put(1, unit("root", 1, (None, "2020-01-01", None)))
    assert org.put(1, unit("a", 1, ("root", "2020-01-01", None)))
    assert org.put(1, unit("b", 1, ("root", "2020-01-01", "2025-01-01"), ("a", "2025-01-01", None)))
    assert not org.put(1, unit("b", 1, ("root", "2020-01-01", None)))  # stale: kept as it was
    assert org.tree.generation == 3 and "b" in org.units
    assert org.chain_at("b", date(2024, 6, 1)) == ["b", "root"]
    assert org.chain_at("b", date(2025, 6, 1)) == ["b", "a", "root"]
    assert org.ancestors_any_time("b") == {"b", "a", "root"}
    assert org.descendants_any_time("root") == {"root", "a", "b"}
    assert org.children["a"] == {"b"}


def test_chain_counts_the_unit_and_a_parent_the_tree_does_not_show_yet() -> None:
    org = OrgView()
    org.put(1, unit("c", 1, ("not-yet", "2020-01-01", None)))
    assert org.chain_at("c", date(2024, 1, 1)) == ["c", "not-yet"]
    assert org.chain_at("unknown", date(2024, 1, 1)) == ["unknown"]
    assert org.chain_at("c", date(2019, 1, 1)) == ["c"]
