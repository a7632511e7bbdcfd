"""The unit tree as every service reads it: units' timelines with parent and child indexes.

orgunits owns the tree; registry, access-rights and notifier keep this read
model of it from ``orgunit.*`` events (orgunits itself from its own
documents). One model, so "below", "above" and "the path to the root" mean
the same everywhere. Pure and in-memory: the database stays the truth.

Several hierarchies (the line organisation, MED committees, projects) share
the one tree: a unit's parent is always in the unit's own hierarchy, so each
hierarchy is a set of whole subtrees. ``Hierarchy`` is how a read names one:
the values of ``OrgUnitSlice.hierarchy`` it accepts (``hierarchy_filter``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import date

from orgdir import problems
from orgdir.contracts.orgunits import ClassState, OrgUnitSlice
from orgdir.validity import at

#: The unit_hierarchy facet, and the user_key of its default class (the line organisation).
HIERARCHY_FACET = "unit_hierarchy"
LINE = "linje"

#: The ``hierarchy`` values a read accepts; ``None`` in it stands for units written before hierarchies.
Hierarchy = frozenset[str | None]


def hierarchy_filter(
    ref: str | None,
    classes: Mapping[str, ClassState],
    by_key: Mapping[tuple[str, str], str] | None = None,
) -> Hierarchy | None:
    """``?hierarchy=`` (a unit_hierarchy class's UUID or user_key) as the values it accepts; None: any.

    The line organisation also accepts ``null`` (states published before
    units had a hierarchy). An unknown class is 422 ``unknown-hierarchy``
    naming the field. ``by_key`` ((facet, user_key) → UUID) spares a scan of
    every class on hot reads.
    """
    if ref is None:
        return None
    hit = classes.get(ref) or (classes.get(by_key.get((HIERARCHY_FACET, ref), "")) if by_key is not None else None)
    candidates = [hit] if hit is not None else [] if by_key is not None else list(classes.values())
    for c in candidates:
        if c.facet != HIERARCHY_FACET or not c.timeline:
            continue
        keys = {s.user_key for s in c.timeline}
        if ref == c.uuid or ref in keys:
            return frozenset({c.uuid, None}) if LINE in keys else frozenset({c.uuid})
    raise problems.rule(
        "unknown-hierarchy",
        f"hierarchy: no class {ref!r} in facet {HIERARCHY_FACET}.",
        field="hierarchy",
        facet=HIERARCHY_FACET,
    )


def reachable(start: str, neighbours: Callable[[str], Iterable[str]]) -> set[str]:
    """``start`` and everything reachable from it; safe against cycles in bad data."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        todo.extend(neighbours(node))
    return seen


class UnitTree:
    """Every known unit's timeline; ``children`` indexes every parent a unit ever had."""

    def __init__(self) -> None:
        self.units: dict[str, list[OrgUnitSlice]] = {}
        self.children: dict[str, set[str]] = {}
        self.generation = 0  # bumped on every change: day indexes are cached per generation
        self._by_day: tuple[date, int, dict[str | None, list[str]]] | None = None

    def __contains__(self, unit: object) -> bool:
        return unit in self.units

    def __len__(self) -> int:
        return len(self.units)

    def put(self, unit: str, timeline: Sequence[OrgUnitSlice]) -> None:
        for s in self.units.get(unit, []):
            if s.parent:
                self.children.get(s.parent, set()).discard(unit)
        self.units[unit] = list(timeline)
        for s in timeline:
            if s.parent:
                self.children.setdefault(s.parent, set()).add(unit)
        self.generation += 1

    def clear(self) -> None:
        self.units.clear()
        self.children.clear()
        self.generation += 1

    # ------------------------------------------------------------------ on one day

    def at(self, unit: str, day: date) -> OrgUnitSlice | None:
        return at(self.units.get(unit, []), day)

    def chain_at(self, unit: str, day: date) -> list[str]:
        """``[unit, parent, …, root]`` on ``day``; stops at a unit not active that day."""
        out: list[str] = []
        current: str | None = unit
        while current is not None and current not in out:
            s = self.at(current, day)
            if s is None:
                break
            out.append(current)
            current = s.parent
        return out

    def children_at(self, day: date) -> dict[str | None, list[str]]:
        """Parent → children on ``day`` (``None`` → the roots)."""
        cached = self._by_day
        if cached is not None and cached[0] == day and cached[1] == self.generation:
            return cached[2]
        index: dict[str | None, list[str]] = {}
        for u, timeline in self.units.items():
            s = at(timeline, day)
            if s is not None:
                index.setdefault(s.parent, []).append(u)
        self._by_day = (day, self.generation, index)
        return index

    def in_hierarchy(self, unit: str, day: date, hierarchy: Collection[str | None] | None) -> bool:
        """Whether the unit is active on ``day`` in ``hierarchy`` (None: in any)."""
        s = self.at(unit, day)
        return s is not None and (hierarchy is None or s.hierarchy in hierarchy)

    def subtree_at(self, unit: str, day: date, hierarchy: Collection[str | None] | None = None) -> set[str]:
        """The unit and everything below it on ``day``; with ``hierarchy``, empty unless the unit is in it."""
        index = self.children_at(day)
        if hierarchy is None:
            return reachable(unit, lambda u: index.get(u, ()))
        if not self.in_hierarchy(unit, day, hierarchy):
            return set()
        return reachable(unit, lambda u: [c for c in index.get(u, ()) if self.in_hierarchy(c, day, hierarchy)])

    # ------------------------------------------------------------------ over all time

    def parents_any_time(self, unit: str) -> set[str]:
        return {s.parent for s in self.units.get(unit, []) if s.parent}

    def ancestors_any_time(self, unit: str) -> set[str]:
        """The unit and every unit that was ever above it."""
        return reachable(unit, self.parents_any_time)

    def descendants_any_time(self, unit: str) -> set[str]:
        """The unit and every unit that was ever below it."""
        return reachable(unit, lambda u: self.children.get(u, ()))

    def unknown_above(self, units: Iterable[str]) -> set[str]:
        """Units met walking up from ``units`` (any time) that this tree has not seen yet."""
        out: set[str] = set()
        for u in units:
            out |= {a for a in self.ancestors_any_time(u) if a not in self.units}
        return out
