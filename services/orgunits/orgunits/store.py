"""In-memory copies of the units and the vocabulary, and the views read from them.

A tree walk would need thousands of queries, so every replica keeps every
unit document in memory: loaded at startup, updated by its own writes at
once and by every replica's through the service's own events (the view
feed), and caught up from the database whenever it enters the tree section
to write. Hot reads (the tree, children, subtree, search) never touch the
database.

Views per date (which slice holds, the children of each unit, the rendered
tree) are computed once per date and cache generation, and dropped on the
next write.
"""

from __future__ import annotations

import bisect
import json
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, TypeVar

import pydantic_core
from pymongo.asynchronous.collection import AsyncCollection

from orgdir import problems
from orgdir.contracts.orgunits import ClassState, FacetState, OrgUnitSlice, OrgUnitState
from orgdir.store import Doc, decode_cursor, encode_cursor
from orgdir.text import fold
from orgdir.validity import at

T = TypeVar("T")

NO_HISTORY = {"outbox": 0, "registrations": 0}


def unit_state(doc: Doc) -> OrgUnitState:
    return OrgUnitState.model_validate(
        {"uuid": doc["_id"], "version": doc["version"], **doc["state"]}
    )


def class_state(doc: Doc) -> ClassState:
    return ClassState.model_validate(
        {"uuid": doc["_id"], "version": doc["version"], **doc["state"]}
    )


def facet_state(doc: Doc) -> FacetState:
    return FacetState.model_validate(
        {"uuid": doc["_id"], "version": doc["version"], **doc["state"]}
    )


def dump_state(state: Any) -> dict[str, Any]:
    out: dict[str, Any] = state.model_dump(mode="json", by_alias=True)
    return out


def slice_view(uuid: str, version: int, s: OrgUnitSlice) -> dict[str, Any]:
    """A unit as of one day: the slice's fields plus uuid, version and the slice's validity."""
    return {"uuid": uuid, "version": version, **s.model_dump(mode="json", by_alias=True)}


@dataclass
class DayView:
    """What holds on one day: the active slice of each unit and each unit's children."""

    day: date
    slices: dict[str, OrgUnitSlice]
    kids: dict[str | None, list[str]]
    sort_keys: dict[str, tuple[str, str]]
    _tree: bytes | None = None
    _search: list[tuple[tuple[str, str], str, str]] | None = None

    def node(self, uuid: str, depth: int | None) -> dict[str, Any]:
        """A unit with its children, ``depth`` levels down (None: all the way)."""
        s = self.slices[uuid]
        kids = self.kids.get(uuid, [])
        out: dict[str, Any] = {
            "uuid": uuid,
            "user_key": s.user_key,
            "name": s.name,
            "unit_type": s.unit_type,
            "unit_level": s.unit_level,
            "child_count": len(kids),
        }
        if depth is None or depth > 0:
            out["children"] = [self.node(k, None if depth is None else depth - 1) for k in kids]
        return out

    def tree_json(self) -> bytes:
        if self._tree is None:
            roots = [self.node(r, None) for r in self.kids.get(None, [])]
            body = {"at": self.day.isoformat(), "count": len(self.slices), "roots": roots}
            self._tree = pydantic_core.to_json(body)
        return self._tree

    def search_index(self) -> list[tuple[tuple[str, str], str, str]]:
        """(sort key, uuid, folded 'name user_key') for every unit active on the day, sorted."""
        if self._search is None:
            rows = [
                (self.sort_keys[u], u, fold(s.name) + "\x00" + fold(s.user_key))
                for u, s in self.slices.items()
            ]
            rows.sort()
            self._search = rows
        return self._search

    def ancestors(self, uuid: str) -> list[str]:
        out: list[str] = []
        seen = {uuid}
        s = self.slices.get(uuid)
        while s is not None and s.parent is not None and s.parent not in seen:
            out.append(s.parent)
            seen.add(s.parent)
            s = self.slices.get(s.parent)
        return out


@dataclass
class UnitCache:
    """Every unit's state, with indexes the rules need (children ever, user_key holders)."""

    max_days: int = 16
    units: dict[str, OrgUnitState] = field(default_factory=dict)
    timelines: dict[str, list[OrgUnitSlice]] = field(default_factory=dict)
    children: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    holders: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    generation: int = 0
    _views: OrderedDict[date, DayView] = field(default_factory=OrderedDict)

    def set(self, state: OrgUnitState, *, force: bool = False) -> bool:
        """Keep ``state`` unless a newer version is already here."""
        old = self.units.get(state.uuid)
        if old is not None and not force and old.version >= state.version:
            return False
        if old is not None:
            for s in old.timeline:
                if s.parent:
                    self.children[s.parent].discard(state.uuid)
                self.holders[s.user_key.casefold()].discard(state.uuid)
        for s in state.timeline:
            if s.parent:
                self.children[s.parent].add(state.uuid)
            self.holders[s.user_key.casefold()].add(state.uuid)
        self.units[state.uuid] = state
        self.timelines[state.uuid] = state.timeline
        self.generation += 1
        self._views.clear()
        return True

    def set_doc(self, doc: Doc, *, force: bool = False) -> bool:
        return self.set(unit_state(doc), force=force)

    def get(self, uuid: str) -> OrgUnitState | None:
        return self.units.get(uuid)

    def view(self, day: date) -> DayView:
        v = self._views.get(day)
        if v is not None:
            self._views.move_to_end(day)
            return v
        slices: dict[str, OrgUnitSlice] = {}
        for uuid, tl in self.timelines.items():
            s = at(tl, day)
            if s is not None:
                slices[uuid] = s
        sort_keys = {u: (s.name.casefold(), u) for u, s in slices.items()}
        kids: dict[str | None, list[str]] = defaultdict(list)
        for u, s in slices.items():
            parent = s.parent if s.parent in slices else None  # an orphan shows as a root
            kids[parent].append(u)
        for lst in kids.values():
            lst.sort(key=sort_keys.__getitem__)
        v = DayView(day, slices, dict(kids), sort_keys)
        self._views[day] = v
        while len(self._views) > self.max_days:
            self._views.popitem(last=False)
        return v

    async def load(self, col: AsyncCollection[Doc]) -> int:
        """Everything (one scan): at startup, and when a replica has fallen behind."""
        n = 0
        async for doc in col.find({}, NO_HISTORY):
            self.set_doc(doc)
            n += 1
        return n


@dataclass
class Vocabulary:
    """Facets and classes in memory (a few hundred documents at most)."""

    facets: dict[str, FacetState] = field(default_factory=dict)
    facet_by_key: dict[str, str] = field(default_factory=dict)
    classes: dict[str, ClassState] = field(default_factory=dict)
    class_by_key: dict[tuple[str, str], str] = field(default_factory=dict)

    def set_facet(self, state: FacetState) -> None:
        old = self.facets.get(state.uuid)
        if old is not None and old.version > state.version:
            return
        self.facets[state.uuid] = state
        for s in state.timeline:
            self.facet_by_key[s.user_key] = state.uuid

    def set_class(self, state: ClassState) -> None:
        old = self.classes.get(state.uuid)
        if old is not None and old.version > state.version:
            return
        self.classes[state.uuid] = state
        for s in state.timeline:
            self.class_by_key[(state.facet, s.user_key)] = state.uuid

    def facet(self, ref: str) -> FacetState:
        """A facet by UUID or user_key."""
        f = self.facets.get(ref) or self.facets.get(self.facet_by_key.get(ref, ""))
        if f is None:
            raise problems.Problem(404, "not-found", "facet not found", f"No facet {ref!r}.")
        return f

    def in_facet(self, facet: str) -> Iterator[ClassState]:
        return (c for c in self.classes.values() if c.facet == facet)

    async def load(self, facets: AsyncCollection[Doc], classes: AsyncCollection[Doc]) -> None:
        async for doc in facets.find({}, NO_HISTORY):
            self.set_facet(facet_state(doc))
        async for doc in classes.find({}, NO_HISTORY):
            self.set_class(class_state(doc))


# --------------------------------------------------------------------------- pages in memory


def page(
    rows: Iterable[tuple[tuple[str, ...], T]],
    *,
    limit: int,
    cursor: str | None,
    presorted: bool = False,
) -> dict[str, Any]:
    """Keyset pagination over rows already in memory: ``{items, next_cursor}``."""
    ordered = list(rows) if presorted else sorted(rows, key=lambda r: r[0])
    start = 0
    if cursor:
        try:
            after = tuple(json.loads(decode_cursor(cursor)))
        except ValueError as exc:
            raise problems.Problem(
                400, "invalid-cursor", "Invalid cursor", "The cursor is not one this API gave out."
            ) from exc
        start = bisect.bisect_right([r[0] for r in ordered], after)
    chunk = ordered[start : start + limit]
    more = start + limit < len(ordered)
    next_cursor = encode_cursor(json.dumps(list(chunk[-1][0]))) if more and chunk else None
    return {"items": [r[1] for r in chunk], "next_cursor": next_cursor}


def engagement_body(person: str, periods: list[dict[str, Any]]) -> dict[str, Any]:
    return {"person": person, "units": sorted({p["unit"] for p in periods}), "periods": periods}


async def engagements_in(col: AsyncCollection[Doc], unit: str) -> list[Mapping[str, Any]]:
    """Projected engagements that ever were in ``unit`` (a scan; only terminations ask)."""
    return [d async for d in col.find({"units": unit}, {"periods": 1})]
