"""The registry's use cases: validated writes, as-of reads, manager resolution, search.

Writes read the aggregate itself from the database by ``_id`` (the source of
truth) and check cross-aggregate rules against the in-memory copies; a lock
per person serialises the writes whose rules span aggregates (one primary
engagement per day, leaves inside their engagement, terminations).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator, Iterable
from datetime import date
from typing import Any, cast

from pydantic import BaseModel

from orgdir import problems
from orgdir.clock import Clock
from orgdir.problems import rule
from orgdir.scheduler import EffectiveScheduler, next_transition_at
from orgdir.service import Runtime
from orgdir.store import Change, Doc, Repository
from orgdir.validity import SliceBase, Validity, at, overlapping, put, truncate
from orgdir.validity import apply as apply_change
from registry import domain
from registry.domain import ENGAGEMENT, KINDS, LEAVE, PERSON, Kind
from registry.settings import RegistrySettings
from registry.store import Agg, AuditLog, Directory, Memory, SearchIndex

log = logging.getLogger(__name__)


def _person_event_data(uuid: str, version: int, state: dict[str, Any]) -> dict[str, Any]:
    """CPR numbers never leave the database: events carry has_cpr and cpr_hash only."""
    return {"uuid": uuid, "version": version, **{k: v for k, v in state.items() if k != "cpr"}}


def current_or_next(timeline: list[Any], day: date) -> Any:
    return at(timeline, day) or next((s for s in timeline if s.validity.from_ > day), None)


class Effective(EffectiveScheduler):
    """``<agg>.effective`` with the derived fields (the unit in force) refreshed for the day."""

    def __init__(self, registry: Registry, kind: Kind) -> None:
        super().__init__(
            registry.repos[kind.agg],
            kind.agg,
            lambda state: [kind.slice.model_validate(s) for s in cast(list[Any], state["timeline"])],
            registry.clock,
            registry.settings.timezone,
        )
        self.kind = kind
        self.registry = registry

    def _change(self, doc: Doc, today: date) -> Change:
        change = super()._change(doc, today)
        timeline = self.timeline_of(doc["state"])
        change.state = {**doc["state"], **domain.derived(self.kind, timeline, today)}
        return change

    def fired(self, doc: Doc) -> None:
        self.registry.after_write(self.kind, doc)


class Registry:
    def __init__(self, runtime: Runtime, settings: RegistrySettings) -> None:
        self.runtime = runtime
        self.settings = settings
        self.clock: Clock = runtime.clock
        self.directory = Directory(runtime.db)
        self.memory = Memory()
        self.search_index = SearchIndex()
        self.audit = AuditLog(runtime.db)
        self.repos: dict[str, Repository] = {
            k.agg: runtime.repository(k.plural, **({"event_data": _person_event_data} if k is PERSON else {}))
            for k in KINDS.values()
        }
        self.schedulers = [Effective(self, k) for k in KINDS.values()]
        self.directory.on_unit_change.append(self._unit_changed)
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self.loaded = False

    # --- startup and background ---------------------------------------------------------------

    async def load(self) -> None:
        """Fill memory from the projection and the aggregates (FerretDB scans once, here)."""
        await self.directory.load()
        for kind in KINDS.values():
            async for doc in self.repos[kind.agg].col.find({}, {"outbox": 0, "registrations": 0}):
                self.memory.put(kind, doc)
        self.reindex_all()
        self.loaded = True
        log.info(
            "registry loaded",
            extra={k: len(v) for k, v in self.memory.aggs.items()} | {"units": len(self.directory.units)},
        )

    def reindex_all(self) -> None:
        for person in list(self.memory.aggs["person"]):
            self.index_person(person)

    async def reindex_job(self) -> None:
        self.reindex_all()

    async def run_due(self) -> int:
        return sum([await s.run_due() for s in self.schedulers])

    # --- locks ----------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def locked(self, keys: Iterable[str]) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for key in sorted(set(keys)):
                lock = self._locks.get(key)
                if lock is None:
                    lock = asyncio.Lock()
                    self._locks[key] = lock
                await stack.enter_async_context(lock)
            yield

    # --- writes -----------------------------------------------------------------------------------

    def _timeline(self, kind: Kind, doc: Doc) -> list[Any]:
        return [kind.slice.model_validate(s) for s in doc["state"].get("timeline", [])]

    def _persons_of(self, kind: Kind, uuid: str, *items: Any) -> set[str]:
        if kind is PERSON:
            return {uuid}
        out: set[str] = set()
        for item in items:
            if isinstance(item, BaseModel):
                p = getattr(item, "person", None)
                if p:
                    out.add(p)
            elif isinstance(item, Agg):
                out |= {s.person for s in item.timeline if getattr(s, "person", None)}
        return out

    def _keys(self, kind: Kind, uuid: str, persons: set[str]) -> list[str]:
        return [f"{kind.agg}:{uuid}", *(f"person:{p}" for p in persons)]

    async def _read(self, kind: Kind, uuid: str, if_match: int | None, *, required: bool) -> Doc | None:
        doc = await self.repos[kind.agg].get(uuid)
        if doc is None:
            if required:
                raise problems.not_found(kind.what, uuid)
            return None
        if if_match is not None and doc["version"] != if_match:
            raise problems.precondition_failed(doc["version"], if_match)
        return doc

    def _cpr(self, uuid: str, value: str | None) -> dict[str, Any]:
        if value is None:
            return {"has_cpr": False, "cpr_hash": None, "cpr": None}
        digits = domain.normalize_cpr(value)
        digest = domain.cpr_hash(digits, self.settings.cpr_hash_key)
        owner = self.memory.cpr_owner.get(digest)
        if owner is not None and owner != uuid:
            raise rule("cpr-in-use", "Another person has this CPR number.", status=409, field="cpr")
        return {"has_cpr": True, "cpr_hash": digest, "cpr": digits}

    async def save(
        self, kind: Kind, uuid: str, body: domain.WriteBase, *, if_match: int | None = None
    ) -> tuple[Agg, bool]:
        """PUT (create or replace within the body's validity) and POST; idempotent by content."""
        today = self.clock.today()
        period = body.validity.resolve(today)
        new_slice = kind.slice.model_validate({**domain.slice_fields(body), "validity": period})
        existing_agg = self.memory.get(kind.agg, uuid)
        persons = self._persons_of(kind, uuid, new_slice, *([existing_agg] if existing_agg else []))
        async with self.locked(self._keys(kind, uuid, persons)):
            doc = await self._read(kind, uuid, if_match, required=False)
            extra: dict[str, Any] = {}
            if kind is PERSON:
                cpr = getattr(body, "cpr", None)
                if cpr is not None or doc is None:
                    extra = self._cpr(uuid, cpr)
                else:
                    extra = {k: doc["state"].get(k) for k in ("has_cpr", "cpr_hash", "cpr")}
            if doc is None:
                agg = await self._commit(kind, uuid, None, [new_slice], period, extra, f"{kind.agg}.created")
                return agg, True
            timeline = put(self._timeline(kind, doc), new_slice)
            agg = await self._commit(kind, uuid, doc, timeline, period, extra, f"{kind.agg}.updated")
            return agg, False

    async def patch(self, kind: Kind, uuid: str, body: domain.WriteBase, *, if_match: int | None = None) -> Agg:
        """Change the given fields from ``validity.from`` (to ``validity.to``)."""
        today = self.clock.today()
        period = body.validity.resolve(today)
        changes = domain.slice_fields(body, exclude_unset=True)
        existing_agg = self.memory.get(kind.agg, uuid)
        persons = self._persons_of(kind, uuid, body, *([existing_agg] if existing_agg else []))
        async with self.locked(self._keys(kind, uuid, persons)):
            doc = await self._read(kind, uuid, if_match, required=True)
            assert doc is not None
            timeline = self._timeline(kind, doc)
            domain.check_in_life(timeline, period, kind.what)
            extra: dict[str, Any] = {}
            if kind is PERSON:
                if "cpr" in body.model_fields_set:
                    extra = self._cpr(uuid, getattr(body, "cpr", None))
                else:
                    extra = {k: doc["state"].get(k) for k in ("has_cpr", "cpr_hash", "cpr")}
            try:
                new_timeline = apply_change(timeline, period, changes) if changes else timeline
            except ValueError as exc:
                raise rule("invalid-change", str(exc).splitlines()[0]) from exc
            return await self._commit(kind, uuid, doc, new_timeline, period, extra, f"{kind.agg}.updated")

    async def terminate(self, kind: Kind, uuid: str, day: date, *, if_match: int | None = None) -> Agg:
        """End the aggregate from ``day`` (the first day it no longer holds)."""
        existing_agg = self.memory.get(kind.agg, uuid)
        persons = self._persons_of(kind, uuid, *([existing_agg] if existing_agg else []))
        async with self.locked(self._keys(kind, uuid, persons)):
            doc = await self._read(kind, uuid, if_match, required=True)
            assert doc is not None
            timeline = self._timeline(kind, doc)
            if not timeline or day <= timeline[0].validity.from_:
                start = timeline[0].validity.from_ if timeline else None
                raise rule(
                    "terminate-before-start",
                    f"Terminating from {day} would erase the whole {kind.what} "
                    f"(it starts {start}); "
                    "termination must be after its first day.",
                    field="from",
                )
            if kind is PERSON:
                deps = {
                    a.uuid: a.timeline
                    for k in ("engagement", "association", "manager", "leave")
                    for a in self.memory.of_person(k, uuid)
                    if any(
                        getattr(s, "person", None) == uuid and s.validity.end_ord() > day.toordinal()
                        for s in a.timeline
                    )
                }
                domain.check_nothing_after(
                    "engagement, association, manager role or leave",
                    day,
                    deps,
                    "person-has-active-relations",
                )
            if kind is ENGAGEMENT:
                leaves = {u: self.memory.aggs["leave"][u].timeline for u in self.memory.by_engagement.get(uuid, ())}
                domain.check_nothing_after("leave", day, leaves, "engagement-has-leaves")
            extra = {k: doc["state"].get(k) for k in ("has_cpr", "cpr_hash", "cpr")} if kind is PERSON else {}
            new_timeline = truncate(timeline, day)
            return await self._commit(
                kind, uuid, doc, new_timeline, Validity(from_=day), extra, f"{kind.agg}.terminated"
            )

    def validate(self, kind: Kind, uuid: str, timeline: list[Any], period: Validity) -> None:
        d = self.directory
        domain.check_immutable(kind, timeline)
        for s in overlapping(timeline, period):
            p = s.validity.intersect(period)
            assert p is not None
            if kind is PERSON:
                domain.check_classes(kind, d.classes, s, p)
                domain.check_addresses(d.classes, s, p)
                continue
            unit = getattr(s, "unit", None)
            if unit is not None:
                domain.check_unit(d.units, unit, p)
            person = getattr(s, "person", None)
            if person is not None:
                tl = self.memory.timeline("person", person)
                domain.check_person({person: tl} if tl is not None else {}, person, p)
            domain.check_classes(kind, d.classes, s, p)
            if kind is LEAVE:
                engagement = self.memory.timeline("engagement", s.engagement)
                domain.check_leave_in_engagement(s, engagement, p)
        if kind is ENGAGEMENT and timeline:
            others = {a.uuid: a.timeline for a in self.memory.of_person("engagement", timeline[0].person)}
            domain.check_single_primary(uuid, timeline, others, period)

    def build_state(self, kind: Kind, timeline: list[SliceBase], extra: dict[str, Any]) -> dict[str, Any]:
        return {
            "timeline": [s.model_dump(mode="json", by_alias=True) for s in timeline],
            **domain.derived(kind, timeline, self.clock.today()),
            **extra,
        }

    async def _commit(
        self,
        kind: Kind,
        uuid: str,
        doc: Doc | None,
        timeline: list[Any],
        period: Validity,
        extra: dict[str, Any],
        event_type: str,
    ) -> Agg:
        self.validate(kind, uuid, timeline, period)
        state = self.build_state(kind, timeline, extra)
        repo = self.repos[kind.agg]
        if doc is not None and state == doc["state"]:
            agg = self.memory.get(kind.agg, uuid)
            return agg if agg is not None and agg.version == doc["version"] else self.after_write(kind, doc)
        change = Change(
            state,
            event_type,
            next_transition_at(timeline, self.clock.today(), self.settings.timezone),
        )
        # FerretDB's concurrent-writer errors are kept away by the store's write gate.
        new = await repo.insert(uuid, change) if doc is None else await repo.update(uuid, doc["version"], change)
        return self.after_write(kind, new)

    def after_write(self, kind: Kind, doc: Doc) -> Agg:
        old = self.memory.get(kind.agg, str(doc["_id"]))
        old_persons = self._persons_of(kind, str(doc["_id"]), old) if old else set()
        agg = self.memory.put(kind, doc)
        if kind is PERSON or kind is ENGAGEMENT:
            for p in old_persons | self._persons_of(kind, agg.uuid, agg):
                self.index_person(p)
        return agg

    # --- search -----------------------------------------------------------------------------------

    def index_person(self, person: str) -> None:
        agg = self.memory.get("person", person)
        today = self.clock.today()
        s = current_or_next(agg.timeline, today) if agg else None
        if s is None:
            self.search_index.remove(person)
            return
        texts = [
            s.given_name,
            s.surname,
            s.nickname or "",
            *(a.value for a in s.addresses if a.scope != "location"),
        ]
        for e in self.memory.of_person("engagement", person):
            es = current_or_next(e.timeline, today)
            if es is not None:
                texts.append(self.directory.unit_name(es.unit, today) or "")
        self.search_index.assign(person, domain.search_terms(texts), f"{s.surname} {s.given_name}".casefold())

    def _unit_changed(self, unit: str) -> None:
        persons = {a.extra.get("person") for a in self.memory.of_unit("engagement", unit)}
        for p in persons:
            if p:
                self.index_person(p)

    def search(self, q: str, limit: int) -> list[dict[str, Any]]:
        today = self.clock.today()
        out = []
        for person in self.search_index.search(domain.query_terms(q), limit):
            agg = self.memory.get("person", person)
            s = current_or_next(agg.timeline, today) if agg else None
            if agg is None or s is None:
                continue
            units = []
            for e in self.memory.of_person("engagement", person):
                es = current_or_next(e.timeline, today)
                if es is not None:
                    units.append({"uuid": es.unit, "name": self.directory.unit_name(es.unit, today)})
            out.append(
                {
                    "uuid": person,
                    "given_name": s.given_name,
                    "surname": s.surname,
                    "nickname": s.nickname,
                    "emails": [a.value for a in s.addresses if a.scope == "email"],
                    "phones": [a.value for a in s.addresses if a.scope == "phone"],
                    "locations": [a.value for a in s.addresses if a.scope == "location"],
                    "units": units,
                }
            )
        return out

    # --- reads ------------------------------------------------------------------------------------

    def render(self, kind: Kind, agg: Agg, s: SliceBase, *, reveal_cpr: bool = False) -> dict[str, Any]:
        out = {"uuid": agg.uuid, "version": agg.version, **s.model_dump(mode="json", by_alias=True)}
        if kind is PERSON:
            cpr = agg.extra.get("cpr")
            out["has_cpr"] = bool(agg.extra.get("has_cpr"))
            out["cpr"] = domain.format_cpr(cpr, reveal=reveal_cpr) if cpr else None
        return out

    def person_ref(self, person: str | None, day: date) -> dict[str, Any] | None:
        if person is None:
            return None
        agg = self.memory.get("person", person)
        s = current_or_next(agg.timeline, day) if agg else None
        if s is None:
            return {"uuid": person, "name": None}
        return {
            "uuid": person,
            "name": f"{s.given_name} {s.surname}",
            "given_name": s.given_name,
            "surname": s.surname,
            "nickname": s.nickname,
        }

    def unit_ref(self, unit: str, day: date, *, with_path: bool = False) -> dict[str, Any]:
        s = self.directory.unit_at(unit, day)
        out: dict[str, Any] = {
            "uuid": unit,
            "name": s.name if s else self.directory.unit_name(unit, day),
            "user_key": s.user_key if s else None,
        }
        if with_path:
            out["path"] = self.directory.path(unit, day)
        return out

    def manager_of(self, unit: str, day: date, *, for_person: str | None = None) -> dict[str, Any] | None:
        """The nearest filled manager position from ``unit`` up to the root on ``day``.

        For a person's own manager, units the person manages are skipped: a
        head of unit reports to the manager above.
        """
        chain = self.directory.ancestors(unit, day)
        for depth, u in enumerate(chain):
            filled = []
            for m in self.memory.of_unit("manager", u):
                s = at(m.timeline, day)
                if s is not None and s.unit == u and s.person is not None:
                    filled.append((m, s))
            if for_person is not None and any(s.person == for_person for _, s in filled):
                continue
            if filled:
                m, s = filled[0]
                d = self.directory
                return {
                    "unit": unit,
                    "inherited": depth > 0,
                    "manager_unit": self.unit_ref(u, day),
                    "manager": {
                        "uuid": m.uuid,
                        "version": m.version,
                        "person": self.person_ref(s.person, day),
                        "manager_type": d.class_ref(s.manager_type),
                        "manager_level": d.class_ref(s.manager_level),
                        "responsibilities": [d.class_ref(r) for r in s.responsibilities],
                        "validity": s.validity.dump(),
                    },
                }
        return None

    def overview(self, person: str, day: date, *, reveal_cpr: bool) -> dict[str, Any]:
        agg = self.memory.get("person", person)
        if agg is None:
            raise problems.not_found("person", person)
        s = at(agg.timeline, day)
        if s is None:
            raise not_in_force("person", person, day, agg)
        d = self.directory
        engagements, managers, seen_units = [], [], set()
        for e in self.memory.of_person("engagement", person):
            es = at(e.timeline, day)
            if es is None:
                continue
            engagements.append(
                {
                    "uuid": e.uuid,
                    "version": e.version,
                    "validity": es.validity.dump(),
                    "unit": self.unit_ref(es.unit, day, with_path=True),
                    "job_function": d.class_ref(es.job_function),
                    "engagement_type": d.class_ref(es.engagement_type),
                    "primary": es.primary,
                    "fraction": es.fraction,
                    "user_key": es.user_key,
                }
            )
            if es.unit not in seen_units:
                seen_units.add(es.unit)
                resolved = self.manager_of(es.unit, day, for_person=person)
                managers.append(resolved or {"unit": es.unit, "inherited": False, "manager": None})
        roles = []
        for m in self.memory.of_person("manager", person):
            ms = at(m.timeline, day)
            if ms is not None and ms.person == person:
                roles.append(
                    {
                        "uuid": m.uuid,
                        "unit": self.unit_ref(ms.unit, day, with_path=True),
                        "manager_type": d.class_ref(ms.manager_type),
                        "manager_level": d.class_ref(ms.manager_level),
                        "responsibilities": [d.class_ref(r) for r in ms.responsibilities],
                        "validity": ms.validity.dump(),
                    }
                )
        associations = []
        for a in self.memory.of_person("association", person):
            as_ = at(a.timeline, day)
            if as_ is not None:
                associations.append(
                    {
                        "uuid": a.uuid,
                        "unit": self.unit_ref(as_.unit, day, with_path=True),
                        "association_type": d.class_ref(as_.association_type),
                        "validity": as_.validity.dump(),
                    }
                )
        leaves = []
        for lv in self.memory.of_person("leave", person):
            ls = at(lv.timeline, day)
            if ls is not None:
                leaves.append(
                    {
                        "uuid": lv.uuid,
                        "engagement": ls.engagement,
                        "leave_type": d.class_ref(ls.leave_type),
                        "validity": ls.validity.dump(),
                    }
                )
        engagements.sort(key=lambda e: (not e["primary"], e["uuid"]))
        return {
            "at": day.isoformat(),
            "person": self.render(PERSON, agg, s, reveal_cpr=reveal_cpr),
            "engagements": engagements,
            "managers": managers,
            "manager_roles": roles,
            "associations": associations,
            "leaves": leaves,
        }

    def people(self, unit: str, day: date, *, subtree: bool) -> list[tuple[str, dict[str, Any]]]:
        """Engagements in force in the unit (or its subtree) on ``day``, by engagement uuid."""
        if unit not in self.directory.units:
            raise rule("unknown-unit", f"No organisation unit {unit} is known.", status=404, unit=unit)
        units = self.directory.subtree(unit, day) if subtree else {unit}
        d = self.directory
        out = []
        for u in units:
            for e in self.memory.of_unit("engagement", u):
                es = at(e.timeline, day)
                if es is None or es.unit != u:
                    continue
                out.append(
                    (
                        e.uuid,
                        {
                            "engagement": e.uuid,
                            "person": self.person_ref(es.person, day),
                            "unit": self.unit_ref(u, day),
                            "job_function": d.class_ref(es.job_function),
                            "engagement_type": d.class_ref(es.engagement_type),
                            "primary": es.primary,
                            "fraction": es.fraction,
                            "validity": es.validity.dump(),
                        },
                    )
                )
        out.sort(key=lambda x: x[0])
        return out


def not_in_force(what: str, uuid: str, day: date, agg: Agg) -> problems.Problem:
    periods = [s.validity.dump() for s in agg.timeline]
    return problems.Problem(
        404,
        "not-in-force",
        f"{what} not in force",
        f"The {what} {uuid} exists but does not hold on {day}; see validity_periods or /history.",
        validity_periods=periods,
    )
