"""The unit tree as every service reads it: units' timelines with parent and child indexes.

orgunits owns the tree; registry, access-rights and notifier keep this read
model of it from ``orgunit.*`` events (orgunits itself from its own
documents). One model, so "below", "above" and "the path to the root" mean
the same everywhere. Pure and in-memory: the database stays the truth.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import date

from orgdir.contracts.orgunits import OrgUnitSlice
from orgdir.validity import at


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

    def subtree_at(self, unit: str, day: date) -> set[str]:
        index = self.children_at(day)
        return reachable(unit, lambda u: index.get(u, ()))

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
