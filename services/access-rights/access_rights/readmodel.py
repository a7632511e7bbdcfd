"""The in-memory views rights are computed from and reads answer from.

``OrgView``: the organisation as learnt from orgunits and registry events (the
unit tree as an ``orgdir.tree.UnitTree``, engagements, persons, job-function
classes) with any-time indexes. ``CatalogueView``: this service's own IT
systems, roles, role groups and assignments, indexed by what they point at.
Both are pure memory, newer-only; the database stays the truth (``service``
loads and feeds them).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from pydantic import BaseModel

from orgdir.contracts.access import AssignmentState, ITSystemState, RoleGroupState, RoleState
from orgdir.contracts.orgunits import ClassState, OrgUnitSlice, OrgUnitState
from orgdir.contracts.registry import EngagementState, PersonState
from orgdir.tree import UnitTree
from orgdir.validity import SliceBase, Validity, at, periods


@dataclass
class OrgView:
    """The organisation as learnt from orgunits and registry events, with any-time indexes."""

    tree: UnitTree = field(default_factory=UnitTree)
    engagements: dict[str, EngagementState] = field(default_factory=dict)
    persons: dict[str, PersonState] = field(default_factory=dict)
    classes: dict[str, ClassState] = field(default_factory=dict)
    eng_by_person: dict[str, set[str]] = field(default_factory=dict)
    eng_by_unit: dict[str, set[str]] = field(default_factory=dict)
    eng_by_job_function: dict[str, set[str]] = field(default_factory=dict)
    units_by_kle: dict[str, set[str]] = field(default_factory=dict)
    seq: dict[str, int] = field(default_factory=dict)

    @property
    def units(self) -> dict[str, list[OrgUnitSlice]]:
        return self.tree.units

    @property
    def children(self) -> dict[str, set[str]]:
        return self.tree.children

    def newer(self, subject: str, sequence: int) -> bool:
        """True (and remembered) when ``sequence`` is newer than what memory holds."""
        if self.seq.get(subject, 0) >= sequence:
            return False
        self.seq[subject] = sequence
        return True

    def put(self, sequence: int, state: BaseModel) -> bool:
        """An org state, newer-only by the producer's sequence."""
        uid: str = state.uuid  # type: ignore[attr-defined]
        if not self.newer(uid, sequence):
            return False
        if isinstance(state, OrgUnitState):
            self.put_unit(state)
        elif isinstance(state, EngagementState):
            self.put_engagement(state)
        elif isinstance(state, PersonState):
            self.persons[state.uuid] = state
        elif isinstance(state, ClassState):
            self.classes[state.uuid] = state
        return True

    def put_unit(self, state: OrgUnitState) -> None:
        for s in self.tree.units.get(state.uuid, []):
            for k in s.kle:
                self.units_by_kle.get(k.kle, set()).discard(state.uuid)
        self.tree.put(state.uuid, state.timeline)
        for s in state.timeline:
            for k in s.kle:
                self.units_by_kle.setdefault(k.kle, set()).add(state.uuid)

    def kle_units_any_time(self, kle: str, aspect: str | None) -> set[str]:
        """Units that ever carried the KLE class (with ``aspect``, if given)."""
        return {
            u
            for u in self.units_by_kle.get(kle, ())
            if any(k.kle == kle and (aspect is None or aspect in k.aspects) for s in self.units[u] for k in s.kle)
        }

    def carries_kle(self, unit: str, day: date, kle: str | None, aspect: str | None) -> bool:
        """Whether the unit carries the KLE class with the aspect on ``day``."""
        s = self.tree.at(unit, day)
        return s is not None and any(k.kle == kle and aspect in k.aspects for k in s.kle)

    def put_engagement(self, state: EngagementState) -> None:
        old = self.engagements.get(state.uuid)
        if old is not None:
            self.eng_by_person.get(old.person, set()).discard(state.uuid)
            for s in old.timeline:
                self.eng_by_unit.get(s.unit, set()).discard(state.uuid)
                self.eng_by_job_function.get(s.job_function, set()).discard(state.uuid)
        self.engagements[state.uuid] = state
        self.eng_by_person.setdefault(state.person, set()).add(state.uuid)
        for s in state.timeline:
            self.eng_by_unit.setdefault(s.unit, set()).add(state.uuid)
            self.eng_by_job_function.setdefault(s.job_function, set()).add(state.uuid)

    def ancestors_any_time(self, unit: str) -> set[str]:
        """The unit and every unit that was ever above it (cycle-safe)."""
        return self.tree.ancestors_any_time(unit)

    def descendants_any_time(self, unit: str) -> set[str]:
        """The unit and every unit that was ever below it (cycle-safe)."""
        return self.tree.descendants_any_time(unit)

    def chain_at(self, unit: str, day: date) -> list[str]:
        """``[unit, parent, grandparent, …]`` as the tree stands on ``day``.

        The tree's chain, plus what events that cross may leave out: the unit
        itself counts even on a day the tree does not show it, and so does a
        parent the tree does not show yet (an engagement or child event can
        arrive before its unit's or parent's event).
        """
        chain = self.tree.chain_at(unit, day)
        if not chain:
            return [unit]
        last = self.tree.at(chain[-1], day)
        if last is not None and last.parent is not None and last.parent not in chain:
            chain.append(last.parent)
        return chain

    def members_any_time(self, units: Iterable[str]) -> set[str]:
        out: set[str] = set()
        for u in units:
            for e in self.eng_by_unit.get(u, ()):
                out.add(self.engagements[e].person)
        return out

    def engagement_periods(self, person: str) -> list[Validity]:
        slices: list[SliceBase] = []
        for e in self.eng_by_person.get(person, ()):
            slices.extend(self.engagements[e].timeline)
        return periods(slices)

    def person_known(self, person: str) -> bool:
        return person in self.persons or bool(self.eng_by_person.get(person))

    def members_at(self, unit: str, day: date) -> list[str]:
        """Persons with an engagement in the unit itself on ``day``."""
        return sorted(
            {
                self.engagements[e].person
                for e in self.eng_by_unit.get(unit, ())
                if (s := at(self.engagements[e].timeline, day)) is not None and s.unit == unit
            }
        )


@dataclass
class CatalogueView:
    """IT systems, roles, role groups and assignments, with indexes by what they point at."""

    it_systems: dict[str, ITSystemState] = field(default_factory=dict)
    roles: dict[str, RoleState] = field(default_factory=dict)
    role_groups: dict[str, RoleGroupState] = field(default_factory=dict)
    assignments: dict[str, AssignmentState] = field(default_factory=dict)
    by_person: dict[str, set[str]] = field(default_factory=dict)
    by_unit: dict[str, set[str]] = field(default_factory=dict)
    by_job_function: dict[str, set[str]] = field(default_factory=dict)
    by_kle: dict[str, set[str]] = field(default_factory=dict)

    def of(self, collection: str) -> dict[str, Any]:
        """The states of one catalogue collection (``it_systems``, ``roles`` …)."""
        views: dict[str, dict[str, Any]] = {
            "it_systems": self.it_systems,
            "roles": self.roles,
            "role_groups": self.role_groups,
            "assignments": self.assignments,
        }
        return views[collection]

    def put(self, state: BaseModel) -> bool:
        """A catalogue state, newer-only by version."""
        if isinstance(state, ITSystemState):
            found: dict[str, Any] = self.it_systems
        elif isinstance(state, RoleState):
            found = self.roles
        elif isinstance(state, RoleGroupState):
            found = self.role_groups
        elif isinstance(state, AssignmentState):
            found = self.assignments
        else:
            return False
        old = found.get(state.uuid)
        if old is not None and old.version >= state.version:
            return False
        if isinstance(state, AssignmentState):
            self.put_assignment(state)
        else:
            found[state.uuid] = state
        return True

    def put_assignment(self, state: AssignmentState) -> None:
        old = self.assignments.get(state.uuid)
        if old is not None:
            for key, index in self._keys(old):
                index.get(key, set()).discard(old.uuid)
        self.assignments[state.uuid] = state
        for key, index in self._keys(state):
            index.setdefault(key, set()).add(state.uuid)

    def _keys(self, a: AssignmentState) -> list[tuple[str, dict[str, set[str]]]]:
        out: list[tuple[str, dict[str, set[str]]]] = []
        for s in a.timeline:
            if a.target == "person" and s.person:
                out.append((s.person, self.by_person))
            elif a.target == "unit" and s.unit:
                out.append((s.unit, self.by_unit))
            elif a.target == "job_function" and s.job_function:
                out.append((s.job_function, self.by_job_function))
            elif a.target == "kle" and s.kle:
                out.append((s.kle, self.by_kle))
        return out

    def assignments_with_role(self, role: str) -> set[str]:
        groups = {g.uuid for g in self.role_groups.values() if any(role in s.roles for s in g.timeline)}
        return {
            a.uuid
            for a in self.assignments.values()
            if any(s.role == role or (s.role_group in groups) for s in a.timeline)
        }

    def assignments_with_group(self, group: str) -> set[str]:
        return {a.uuid for a in self.assignments.values() if any(s.role_group == group for s in a.timeline)}

    def names(self, role: str, it_system: str) -> tuple[str | None, str | None]:
        """The latest names of a role and an IT system (for reads that show them)."""
        r = self.roles.get(role)
        s = self.it_systems.get(it_system)
        rs = r.timeline[-1] if r and r.timeline else None
        ss = s.timeline[-1] if s and s.timeline else None
        return (rs.name if rs else None, ss.name if ss else None)
