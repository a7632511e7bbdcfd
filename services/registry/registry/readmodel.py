"""The in-memory views the registry's reads and rules use; the database stays the truth.

- ``Directory``: units (an ``orgdir.tree.UnitTree``), classes and facets from
  orgunits events, kept in a projection (Mongo, applied by ``sequence``,
  written by the competing durable consumer) and mirrored in memory on every
  replica for validation and tree walks: the replica that consumes an event
  applies it at once, every other replica through its view feed (newer
  ``sequence`` only); loaded from the projection at startup.
- ``Memory``: the registry's own aggregates with secondary indexes (by person,
  by unit, by engagement), so list, overview, people and manager reads need
  no query. Every replica's copy follows every replica's writes through the
  service's own events (re-read by ``_id``, newer version only), and a write
  re-reads what its rules need under the person's section (see
  ``registry.service``).
- ``SearchIndex``: a folded token/prefix index for the address book.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from orgdir.clock import Clock
from orgdir.contracts.orgunits import ClassState, FacetState, OrgUnitSlice, OrgUnitState
from orgdir.events import CloudEvent, typed_data
from orgdir.store import Doc, Projection, decode_cursor, encode_cursor
from orgdir.tree import UnitTree
from orgdir.validity import at, periods
from registry.domain import KINDS, Kind

# --- units and classes ---------------------------------------------------------------------------


class Directory:
    """What orgunits told us: the unit tree, classes and facets, by UUID."""

    def __init__(self, db: AsyncDatabase[Doc], clock: Clock | None = None) -> None:
        # With arrival logs: ``load(registered_at=…)`` answers as the registry knew them then.
        self.units_projection = Projection(db, "proj_orgunits", history=True, clock=clock)
        self.classes_projection = Projection(db, "proj_classes", history=True, clock=clock)
        self.facets_projection = Projection(db, "proj_facets", history=True, clock=clock)
        self.tree = UnitTree()
        self.classes: dict[str, ClassState] = {}
        self.facets: dict[str, FacetState] = {}
        self._seq: dict[str, int] = {}
        self.on_unit_change: list[Callable[[str], None]] = []

    def _newer(self, subject: str, sequence: int) -> bool:
        return sequence > self._seq.get(subject, 0)

    def set_unit(self, state: OrgUnitState, sequence: int) -> None:
        if not self._newer(state.uuid, sequence):
            return
        self._seq[state.uuid] = sequence
        self.tree.put(state.uuid, state.timeline)
        for listener in self.on_unit_change:
            listener(state.uuid)

    def set_class(self, state: ClassState, sequence: int) -> None:
        if self._newer(state.uuid, sequence):
            self._seq[state.uuid] = sequence
            self.classes[state.uuid] = state

    def set_facet(self, state: FacetState, sequence: int) -> None:
        if self._newer(state.uuid, sequence):
            self._seq[state.uuid] = sequence
            self.facets[state.uuid] = state

    async def apply_event(self, event: CloudEvent) -> None:
        """The view feed: an orgunits event consumed by any replica, applied here if newer."""
        data = typed_data(event)
        if isinstance(data, OrgUnitState):
            self.set_unit(data, event.sequence)
        elif isinstance(data, ClassState):
            self.set_class(data, event.sequence)
        elif isinstance(data, FacetState):
            self.set_facet(data, event.sequence)

    async def load(self, registered_at: datetime | None = None) -> None:
        """(Re)load the projection into memory; only newer entries replace what is held.

        With ``registered_at``: what had arrived by then (a fresh ``Directory`` for one read).
        """

        def scan(projection: Projection) -> AsyncIterator[Doc]:
            return projection.col.find({}) if registered_at is None else projection.scan_as_registered(registered_at)

        async for doc in scan(self.units_projection):
            self.set_unit(OrgUnitState.model_validate(doc), int(doc["sequence"]))
        async for doc in scan(self.classes_projection):
            self.set_class(ClassState.model_validate(doc), int(doc["sequence"]))
        async for doc in scan(self.facets_projection):
            self.set_facet(FacetState.model_validate(doc), int(doc["sequence"]))

    # units on a day ----------------------------------------------------------------------------

    def unit_at(self, unit: str, day: date) -> OrgUnitSlice | None:
        return self.tree.at(unit, day)

    def unit_name(self, unit: str, day: date) -> str | None:
        """The name on ``day``, else the next one it will have, else its last one."""
        timeline = self.tree.units.get(unit)
        if not timeline:
            return None
        s = at(timeline, day) or next((x for x in timeline if x.validity.from_ > day), timeline[-1])
        return s.name

    def path(self, unit: str, day: date) -> list[dict[str, str]]:
        """Root first: ``[{uuid, name, user_key}, …]``."""
        out = []
        for u in reversed(self.tree.chain_at(unit, day)):
            s = self.tree.at(u, day)
            assert s is not None
            out.append({"uuid": u, "name": s.name, "user_key": s.user_key})
        return out

    def active_since(self, unit: str, day: date) -> date | None:
        """First day of the unbroken period of the unit that holds ``day``."""
        return next((p.from_ for p in periods(self.tree.units.get(unit, [])) if p.contains(day)), None)

    def class_ref(self, uuid: str | None) -> dict[str, Any] | None:
        if uuid is None:
            return None
        cls = self.classes.get(uuid)
        if cls is None:
            return {"uuid": uuid, "user_key": None, "name": None}
        s = cls.timeline[-1] if cls.timeline else None
        return {"uuid": uuid, "user_key": s.user_key if s else None, "name": s.name if s else None}


# --- the registry's own aggregates ------------------------------------------------------------


@dataclass
class Agg:
    uuid: str
    version: int
    timeline: list[Any]
    extra: dict[str, Any] = field(default_factory=dict)


class Memory:
    """Every registry aggregate in memory, with the indexes the reads and rules need."""

    def __init__(self) -> None:
        self.aggs: dict[str, dict[str, Agg]] = {k: {} for k in KINDS}
        self.by_person: dict[str, dict[str, set[str]]] = {k: {} for k in KINDS}
        self.by_unit: dict[str, dict[str, set[str]]] = {k: {} for k in KINDS}
        self.by_engagement: dict[str, set[str]] = {}
        self._sorted: dict[str, list[str] | None] = {k: None for k in KINDS}

    def get(self, kind: str, uuid: str) -> Agg | None:
        return self.aggs[kind].get(uuid)

    def timeline(self, kind: str, uuid: str) -> list[Any] | None:
        agg = self.aggs[kind].get(uuid)
        return agg.timeline if agg else None

    def put(self, kind: Kind, doc: Doc) -> Agg:
        state = doc["state"]
        timeline = [kind.slice.model_validate(s) for s in state.get("timeline", [])]
        extra = {k: v for k, v in state.items() if k != "timeline"}
        agg = Agg(str(doc["_id"]), int(doc["version"]), timeline, extra)
        old = self.aggs[kind.agg].get(agg.uuid)
        if old is not None and old.version > agg.version:
            return old
        if old is not None:
            self._unindex(kind, old)
        else:
            self._sorted[kind.agg] = None
        self.aggs[kind.agg][agg.uuid] = agg
        self._index(kind, agg)
        return agg

    def _keys(self, agg: Agg, name: str) -> set[str]:
        return {v for s in agg.timeline if (v := getattr(s, name, None)) is not None}

    def _index(self, kind: Kind, agg: Agg) -> None:
        for p in self._keys(agg, "person"):
            self.by_person[kind.agg].setdefault(p, set()).add(agg.uuid)
        for u in self._keys(agg, "unit"):
            self.by_unit[kind.agg].setdefault(u, set()).add(agg.uuid)
        if kind.agg == "leave":
            for e in self._keys(agg, "engagement"):
                self.by_engagement.setdefault(e, set()).add(agg.uuid)

    def _unindex(self, kind: Kind, agg: Agg) -> None:
        for p in self._keys(agg, "person"):
            self.by_person[kind.agg].get(p, set()).discard(agg.uuid)
        for u in self._keys(agg, "unit"):
            self.by_unit[kind.agg].get(u, set()).discard(agg.uuid)
        if kind.agg == "leave":
            for e in self._keys(agg, "engagement"):
                self.by_engagement.get(e, set()).discard(agg.uuid)

    def of_person(self, kind: str, person: str) -> list[Agg]:
        return [self.aggs[kind][u] for u in sorted(self.by_person[kind].get(person, ()))]

    def of_unit(self, kind: str, unit: str) -> list[Agg]:
        return [self.aggs[kind][u] for u in sorted(self.by_unit[kind].get(unit, ()))]

    def sorted_ids(self, kind: str) -> list[str]:
        ids = self._sorted[kind]
        if ids is None:
            ids = sorted(self.aggs[kind])
            self._sorted[kind] = ids
        return ids


def page_of(ids: Iterable[str], *, limit: int, cursor: str | None) -> tuple[list[str], str | None]:
    """Keyset pagination over a sorted sequence of ids held in memory."""
    seq = ids if isinstance(ids, list) else sorted(ids)
    start = bisect.bisect_right(seq, decode_cursor(cursor)) if cursor else 0
    chunk = seq[start : start + limit]
    more = start + limit < len(seq)
    return chunk, (encode_cursor(chunk[-1]) if more and chunk else None)


def page_filtered(
    ids: list[str], keep: Callable[[str], bool], *, limit: int, cursor: str | None
) -> tuple[list[str], str | None]:
    start = bisect.bisect_right(ids, decode_cursor(cursor)) if cursor else 0
    out: list[str] = []
    for i in range(start, len(ids)):
        if keep(ids[i]):
            if len(out) == limit:
                return out, encode_cursor(out[-1])
            out.append(ids[i])
    return out, None


# --- address book -----------------------------------------------------------------------------


class SearchIndex:
    """Folded terms → persons, with a sorted term list for prefix lookups (bisect)."""

    def __init__(self) -> None:
        self.terms_of: dict[str, frozenset[str]] = {}
        self.postings: dict[str, set[str]] = {}
        self.sorted_terms: list[str] = []
        self.sort_name: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.terms_of)

    def assign(self, person: str, terms: set[str], sort_name: str) -> None:
        new = frozenset(terms)
        old = self.terms_of.get(person, frozenset())
        for t in old - new:
            bucket = self.postings.get(t)
            if bucket is not None:
                bucket.discard(person)
                if not bucket:
                    del self.postings[t]
                    i = bisect.bisect_left(self.sorted_terms, t)
                    if i < len(self.sorted_terms) and self.sorted_terms[i] == t:
                        del self.sorted_terms[i]
        for t in new - old:
            bucket = self.postings.get(t)
            if bucket is None:
                self.postings[t] = {person}
                bisect.insort(self.sorted_terms, t)
            else:
                bucket.add(person)
        if new:
            self.terms_of[person] = new
            self.sort_name[person] = sort_name
        else:
            self.terms_of.pop(person, None)
            self.sort_name.pop(person, None)

    def remove(self, person: str) -> None:
        self.assign(person, set(), "")

    def _prefixed(self, prefix: str) -> Iterator[str]:
        terms = self.sorted_terms
        i = bisect.bisect_left(terms, prefix)
        while i < len(terms) and terms[i].startswith(prefix):
            yield terms[i]
            i += 1

    def _exact(self, alts: set[str]) -> set[str]:
        out: set[str] = set()
        for a in alts:
            out |= self.postings.get(a, set())
        return out

    def _candidates(self, alts: set[str], cap: int | None) -> set[str]:
        out = self._exact(alts)
        for a in alts:
            for term in self._prefixed(a):
                out |= self.postings[term]
                if cap is not None and len(out) >= cap:
                    return out
        return out

    def search(self, words: list[set[str]], limit: int, cap: int = 5000) -> list[str]:
        """Persons matching every word (exact or prefix); exact matches rank first, then by name.

        Each word's candidates come from the postings of the terms it prefixes
        (bisect on the sorted term list); words are intersected, most selective
        (longest) first. A single short word stops after ``cap`` candidates,
        since exact matches rank first anyway.
        """
        if not words:
            return []
        ordered = sorted(words, key=lambda alts: -max(len(a) for a in alts))
        candidates: set[str] | None = None
        for alts in ordered:
            found = self._candidates(alts, cap if len(ordered) == 1 else None)
            candidates = found if candidates is None else candidates & found
            if not candidates:
                return []
        assert candidates is not None
        exact = [self._exact(alts) for alts in ordered]
        names = self.sort_name
        scored = ((-sum(2 if p in e else 1 for e in exact), names.get(p, ""), p) for p in candidates)
        return [p for _, _, p in heapq.nsmallest(limit, scored)]
