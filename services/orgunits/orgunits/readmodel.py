"""In-memory copies of the units and the vocabulary, and the views read from them.

A tree walk would need thousands of queries, so every replica keeps every
unit document in memory: loaded at startup, updated by its own writes at
once and by every replica's through the service's own events (the view
feed), and caught up from the database whenever it enters the tree section
to write. Hot reads (the tree, children, subtree, search) never touch the
database. The tree itself is ``orgdir.tree.UnitTree``, the model every
service reads the tree with.

Views per date (which slice holds, the children of each unit, the rendered
tree) are computed once per date and cache generation, and dropped on the
next write.
"""

from __future__ import annotations

import bisect
import json
from collections import OrderedDict, defaultdict
from collections.abc import AsyncIterable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any, TypeVar

import pydantic_core
from pymongo.asynchronous.collection import AsyncCollection

from orgdir import problems
from orgdir.contracts.orgunits import (
    ClassState,
    FacetState,
    OrgUnitSlice,
    OrgUnitState,
    RelatedUnitState,
    UnitAddress,
)
from orgdir.http import Page, Paging
from orgdir.store import Doc, decode_cursor, encode_cursor
from orgdir.text import fold
from orgdir.tree import Hierarchy, UnitTree
from orgdir.validity import at
from orgunits.schemas import ClassOut, FacetOut, RelatedUnitRef, UnitOut
from orgunits.store import NO_HISTORY, class_state, facet_state, related_state, unit_state

T = TypeVar("T")

#: The unit addresses a reader may see (``orgdir.visibility``); every read that shows addresses takes one.
Sight = Callable[[list[UnitAddress]], list[UnitAddress]]


def everything(addresses: list[UnitAddress]) -> list[UnitAddress]:
    """The sight of the system itself (rules, write paths): every address."""
    return addresses


# --------------------------------------------------------------------------- pages in memory


def page(
    rows: Iterable[tuple[tuple[str, ...], T]], paging: Paging, *, presorted: bool = False
) -> tuple[list[T], str | None]:
    """Keyset pagination over rows already in memory: the page's items and the next cursor."""
    ordered = list(rows) if presorted else sorted(rows, key=lambda r: r[0])
    start = 0
    if paging.cursor:
        try:
            key = json.loads(decode_cursor(paging.cursor))
        except ValueError:
            key = None
        if not isinstance(key, list) or not all(isinstance(k, str) for k in key):
            raise problems.bad_request("invalid-cursor", "The cursor is not one this API gave out.")
        after = tuple(key)
        start = bisect.bisect_right([r[0] for r in ordered], after)
    chunk = ordered[start : start + paging.limit]
    more = start + paging.limit < len(ordered)
    next_cursor = encode_cursor(json.dumps(list(chunk[-1][0]))) if more and chunk else None
    return [r[1] for r in chunk], next_cursor


# --------------------------------------------------------------------------- units


@dataclass
class DayView:
    """What holds on one day: the active slice of each unit and each unit's children, by name."""

    day: date
    tree: UnitTree
    slices: dict[str, OrgUnitSlice]
    kids: dict[str | None, list[str]]
    sort_keys: dict[str, tuple[str, str]]
    _trees: dict[tuple[str | None, ...] | None, bytes] = field(default_factory=dict)
    _search: list[tuple[tuple[str, str], str, str]] | None = None

    @classmethod
    def build(cls, tree: UnitTree, day: date) -> DayView:
        index = tree.children_at(day)
        slices: dict[str, OrgUnitSlice] = {}
        for units in index.values():
            for u in units:
                s = tree.at(u, day)
                if s is not None:
                    slices[u] = s
        sort_keys = {u: (s.name.casefold(), u) for u, s in slices.items()}
        kids: dict[str | None, list[str]] = defaultdict(list)
        for parent, units in index.items():
            kids[parent if parent in slices else None].extend(units)  # an orphan shows as a root
        for lst in kids.values():
            lst.sort(key=sort_keys.__getitem__)
        return cls(day, tree, slices, dict(kids), sort_keys)

    def in_hierarchy(self, uuid: str, hierarchy: Hierarchy | None) -> bool:
        return hierarchy is None or self.slices[uuid].hierarchy in hierarchy

    def kids_of(self, uuid: str | None, hierarchy: Hierarchy | None) -> list[str]:
        kids = self.kids.get(uuid, [])
        return kids if hierarchy is None else [k for k in kids if self.slices[k].hierarchy in hierarchy]

    def node(self, uuid: str, depth: int | None) -> dict[str, Any]:
        """A unit with its children, ``depth`` levels down (None: all the way).

        Children are in their parent's hierarchy (a rule of every write), so
        a hierarchy's tree is its roots' subtrees: no filter below the roots.
        """
        s = self.slices[uuid]
        kids = self.kids.get(uuid, [])
        out: dict[str, Any] = {
            "uuid": uuid,
            "user_key": s.user_key,
            "name": s.name,
            "unit_type": s.unit_type,
            "unit_level": s.unit_level,
            "hierarchy": s.hierarchy,
            "child_count": len(kids),
        }
        if depth is None or depth > 0:
            out["children"] = [self.node(k, None if depth is None else depth - 1) for k in kids]
        return out

    def tree_json(self, hierarchy: Hierarchy | None = None) -> bytes:
        """The tree of one hierarchy (``schemas.Tree``), rendered once per day, hierarchy and generation."""
        key = None if hierarchy is None else tuple(sorted(hierarchy, key=str))
        body = self._trees.get(key)
        if body is None:
            roots = [self.node(r, None) for r in self.kids_of(None, hierarchy)]
            count = sum(1 for u in self.slices if self.in_hierarchy(u, hierarchy))
            body = pydantic_core.to_json({"at": self.day.isoformat(), "count": count, "roots": roots})
            self._trees[key] = body
        return body

    def search_index(self) -> list[tuple[tuple[str, str], str, str]]:
        """(sort key, uuid, folded 'name user_key') for every unit active on the day, sorted."""
        if self._search is None:
            rows = [(self.sort_keys[u], u, fold(s.name) + "\x00" + fold(s.user_key)) for u, s in self.slices.items()]
            rows.sort()
            self._search = rows
        return self._search

    def ancestors(self, uuid: str) -> list[str]:
        """The parent, its parent … up to the root (or to a unit not active that day)."""
        return self.tree.chain_at(uuid, self.day)[1:]


class DocLoader:
    """What the document-fed read models share: loading a scan of documents through ``set_doc``."""

    def set_doc(self, doc: Doc, *, force: bool = False) -> bool:
        raise NotImplementedError

    async def load(self, col: AsyncCollection[Doc]) -> int:
        """Everything (one scan): at startup, and when a replica has fallen behind."""
        return await self.load_docs(col.find({}, NO_HISTORY))

    async def load_docs(self, docs: AsyncIterable[Doc]) -> int:
        """These documents (a collection's scan, or its state as registered at an instant)."""
        n = 0
        async for doc in docs:
            self.set_doc(doc)
            n += 1
        return n


@dataclass
class UnitCache(DocLoader):
    """Every unit's state: the tree (``UnitTree``) and the user_key holders the rules need."""

    max_days: int = 16
    units: dict[str, OrgUnitState] = field(default_factory=dict)
    tree: UnitTree = field(default_factory=UnitTree)
    holders: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    related: RelatedUnits = field(default_factory=lambda: RelatedUnits())
    _views: OrderedDict[date, DayView] = field(default_factory=OrderedDict)

    def set(self, state: OrgUnitState, *, force: bool = False) -> bool:
        """Keep ``state`` unless a newer version is already here."""
        old = self.units.get(state.uuid)
        if old is not None and not force and old.version >= state.version:
            return False
        if old is not None:
            for s in old.timeline:
                self.holders[s.user_key.casefold()].discard(state.uuid)
        for s in state.timeline:
            self.holders[s.user_key.casefold()].add(state.uuid)
        self.units[state.uuid] = state
        self.tree.put(state.uuid, state.timeline)
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
        v = DayView.build(self.tree, day)
        self._views[day] = v
        while len(self._views) > self.max_days:
            self._views.popitem(last=False)
        return v


    # ------------------------------------------------------------------ queries

    def _out(self, view: DayView, uuid: str, sight: Sight) -> UnitOut:
        related = self.related.of_unit(uuid, view.day)
        return UnitOut.of(uuid, self.units[uuid].version, view.slices[uuid], related, sight)

    def unit_at(self, uuid: str, day: date, sight: Sight) -> UnitOut:
        """The unit as of ``day`` with the addresses ``sight`` allows: 404 ``not-found``, or 404
        ``not-active`` with its periods."""
        state = self.units.get(uuid)
        if state is None:
            raise problems.not_found("organisation unit", uuid)
        current = at(state.timeline, day)
        if current is None:
            raise problems.NotFound(
                "not-active",
                "Unit not active on that day",
                f"Unit {uuid} does not exist on {day}.",
                periods=[sl.validity.dump() for sl in state.timeline],
            )
        return UnitOut.of(uuid, state.version, current, self.related.of_unit(uuid, day), sight)

    def _in(self, uuid: str, day: date, hierarchy: Hierarchy | None) -> DayView:
        """The day's view, after checking the unit is active then and in ``hierarchy`` (404 otherwise)."""
        self.unit_at(uuid, day, everything)
        view = self.view(day)
        if not view.in_hierarchy(uuid, hierarchy):
            raise problems.missing(
                "not-in-hierarchy",
                f"Unit {uuid} is not in that hierarchy on {day}.",
                field="hierarchy",
                hierarchy=view.slices[uuid].hierarchy,
            )
        return view

    def search(
        self,
        day: date,
        q: str | None,
        parent: str | None,
        roots: bool,
        paging: Paging,
        hierarchy: Hierarchy | None,
        sight: Sight,
    ) -> Page[UnitOut]:
        """Units active on ``day`` (in ``hierarchy``) by name, optionally a folded substring of name or user_key."""
        view = self.view(day)
        needle = fold(q) if q else None
        wanted: set[str] | None = None
        if parent is not None:
            wanted = set(view.kids.get(parent, []))
        elif roots:
            wanted = set(view.kids.get(None, []))
        rows = [
            (key, uid)
            for key, uid, text in view.search_index()
            if (needle is None or needle in text)
            and (wanted is None or uid in wanted)
            and view.in_hierarchy(uid, hierarchy)
        ]
        items, cursor = page(rows, paging, presorted=True)
        return Page[UnitOut](items=[self._out(view, u, sight) for u in items], next_cursor=cursor)

    def children(
        self, uuid: str, day: date, paging: Paging, hierarchy: Hierarchy | None, sight: Sight
    ) -> Page[UnitOut]:
        view = self._in(uuid, day, hierarchy)
        kids = view.kids_of(uuid, hierarchy)
        items, cursor = page(((view.sort_keys[k], k) for k in kids), paging, presorted=True)
        return Page[UnitOut](items=[self._out(view, k, sight) for k in items], next_cursor=cursor)

    def subtree(self, uuid: str, day: date, depth: int | None, hierarchy: Hierarchy | None = None) -> dict[str, Any]:
        """The unit as a ``schemas.TreeNode`` (a plain dict: large subtrees are not re-validated)."""
        return self._in(uuid, day, hierarchy).node(uuid, depth)

    def ancestors(self, uuid: str, day: date, sight: Sight) -> Page[UnitOut]:
        """One page: the path is short."""
        self.unit_at(uuid, day, everything)
        view = self.view(day)
        return Page[UnitOut](items=[self._out(view, a, sight) for a in view.ancestors(uuid)], next_cursor=None)

    def tree_json(self, day: date, hierarchy: Hierarchy | None = None) -> bytes:
        return self.view(day).tree_json(hierarchy)


# --------------------------------------------------------------------------- related units


@dataclass
class RelatedUnits(DocLoader):
    """Every relation between two units, indexed by unit (a few per unit at most)."""

    relations: dict[str, RelatedUnitState] = field(default_factory=dict)
    by_unit: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    def set(self, state: RelatedUnitState, *, force: bool = False) -> bool:
        old = self.relations.get(state.uuid)
        if old is not None and not force and old.version >= state.version:
            return False
        self.relations[state.uuid] = state
        for u in state.units:
            self.by_unit[u].add(state.uuid)
        return True

    def set_doc(self, doc: Doc, *, force: bool = False) -> bool:
        return self.set(related_state(doc), force=force)

    def get(self, uuid: str) -> RelatedUnitState:
        state = self.relations.get(uuid)
        if state is None:
            raise problems.not_found("related unit", uuid)
        return state

    def of_pair(self, pair: list[str]) -> list[RelatedUnitState]:
        return [self.relations[r] for r in sorted(self.by_unit.get(pair[0], ())) if self.relations[r].units == pair]

    def of_unit(self, unit: str, day: date) -> list[RelatedUnitRef]:
        """The unit's relations holding on ``day``, seen from the unit."""
        out: list[RelatedUnitRef] = []
        for r in sorted(self.by_unit.get(unit, ())):
            state = self.relations[r]
            s = at(state.timeline, day)
            if s is not None:
                other = next((u for u in state.units if u != unit), unit)
                out.append(RelatedUnitRef(uuid=r, unit=other, validity=s.validity))
        return out

    def page(self, day: date, unit: str | None, everything: bool, paging: Paging) -> Page[RelatedUnitState]:
        ids = self.by_unit.get(unit, set()) if unit else set(self.relations)
        rows = [
            ((r,), self.relations[r])
            for r in ids
            if everything or at(self.relations[r].timeline, day) is not None
        ]
        items, cursor = page(rows, paging)
        return Page[RelatedUnitState](items=items, next_cursor=cursor)



# --------------------------------------------------------------------------- vocabulary


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
            raise problems.NotFound("not-found", "facet not found", f"No facet {ref!r}.")
        return f

    def in_facet(self, facet: str) -> Iterator[ClassState]:
        return (c for c in self.classes.values() if c.facet == facet)

    async def load(self, facets: AsyncCollection[Doc], classes: AsyncCollection[Doc]) -> None:
        await self.load_docs(facets.find({}, NO_HISTORY), classes.find({}, NO_HISTORY))

    async def load_docs(self, facets: AsyncIterable[Doc], classes: AsyncIterable[Doc]) -> None:
        async for doc in facets:
            self.set_facet(facet_state(doc))
        async for doc in classes:
            self.set_class(class_state(doc))

    # ------------------------------------------------------------------ queries

    @staticmethod
    def facet_out(f: FacetState) -> FacetOut:
        last = f.timeline[-1]
        return FacetOut(**dict(f), user_key=last.user_key, description=last.description)

    @staticmethod
    def class_out(c: ClassState, day: date) -> ClassOut:
        """The class with the slice in force on ``day`` (else its last one) spelt out."""
        current = at(c.timeline, day)
        shown = current or c.timeline[-1]
        return ClassOut(**dict(c), **dict(shown), active=current is not None)

    def facets_page(self, paging: Paging) -> Page[FacetOut]:
        rows = [((f.timeline[-1].user_key, f.uuid), f) for f in self.facets.values()]
        items, cursor = page(rows, paging)
        return Page[FacetOut](items=[self.facet_out(f) for f in items], next_cursor=cursor)

    def class_at(self, uuid: str, day: date) -> ClassOut:
        c = self.classes.get(uuid)
        if c is None:
            raise problems.not_found("class", uuid)
        return self.class_out(c, day)

    def classes_page(self, day: date, facet: str | None, everything: bool, paging: Paging) -> Page[ClassOut]:
        """Classes (of one facet) active on ``day``, or all of them, by facet and user_key."""
        classes: list[ClassState] = list(self.classes.values())
        if facet is not None:
            key = self.facet(facet).timeline[0].user_key
            classes = [c for c in classes if c.facet == key]
        rows = [
            ((c.facet, (at(c.timeline, day) or c.timeline[-1]).user_key, c.uuid), c)
            for c in classes
            if c.timeline and (everything or at(c.timeline, day) is not None)
        ]
        items, cursor = page(rows, paging)
        return Page[ClassOut](items=[self.class_out(c, day) for c in items], next_cursor=cursor)
