"""The registry's use cases: validated writes, as-of reads, manager resolution, search.

Stateless: any number of replicas answer like one.

Reads come from this replica's in-memory read model (``Memory``, the search
index, the ``Directory`` of units and classes). Each replica's model follows
every replica's writes through the service's own events (``Runtime.view``: a
per-replica queue; the document is re-read by ``_id`` and kept only if newer,
since events leave out the raw CPR number), and follows orgunits' events
through a second view (newer ``sequence`` only). A replica's own write
updates its model at once (read-your-writes). ``/readyz`` is 503 until the
model is loaded and the view queues are bound.

Writes read the aggregate itself from the database by ``_id`` and write with
its version in the filter (compare-and-swap; a lost race is retried from a
fresh read, or 412 with If-Match). Rules that span aggregates:

- **One person per CPR number**: a unique key, ``cpr_claims`` keyed by the
  CPR hash, claimed before the person is written (``store.CprClaims``).
- **Rules between a person and its relations** (an engagement, association,
  manager role or leave lies within the person's life; at most one primary
  engagement per person and day; a leave lies within its engagement, of the
  same person; a person or engagement is not terminated while relations
  hold after that day): every write of an engagement, association, manager
  role or leave, and every termination of a person, holds the section of
  each person it names (``Runtime.section("person:<uuid>")``, a lease document
  taken by a conditional write, acquired in uuid order). So two writes about
  one person never interleave, on any replica. On entry, the replica re-reads
  the documents other replicas wrote under that section since it last held
  it, so the rule sees the person's relations exactly as stored; the person
  and engagement a write refers to are re-read by ``_id``. Person writes
  other than termination hold no section: they cannot shorten a life, and
  the person document's own version guards it. The sections' positions are
  read in one query before the initial load (``PersonSections.baseline``), so
  a section first used later catches up by its log alone.

The scheduler (``*.effective``) writes through the same version guard: of two
replicas firing one transition one wins and the other's ``StaleVersion`` is
skipped by ``EffectiveScheduler.run_due`` (no error, no second event).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, cast

from pydantic import BaseModel

from orgdir import auth, crypto, problems, visibility
from orgdir.auth import Principal
from orgdir.clock import Clock
from orgdir.contracts.orgunits import ClassState, FacetState, OrgUnitState
from orgdir.contracts.registry import EngagementSlice, PersonSlice
from orgdir.events import CloudEvent
from orgdir.problems import rule
from orgdir.scheduler import EffectiveScheduler, next_transition_at
from orgdir.schemas import History, history_of
from orgdir.service import Runtime
from orgdir.store import Change, Doc, Repository, Section, SectionTicket, StaleVersion
from orgdir.tree import hierarchy_filter
from orgdir.validity import SliceBase, Validity, at, overlapping, put, truncate
from orgdir.validity import apply as apply_change
from registry import domain, schemas
from registry.domain import ASSOCIATION, ENGAGEMENT, KINDS, LEAVE, PERSON, Kind
from registry.readmodel import Agg, Directory, Memory, SearchIndex, page_filtered, page_of
from registry.settings import RegistrySettings
from registry.store import INDEXES, NO_HISTORY, AuditLog, CprClaims

log = logging.getLogger(__name__)

ATTEMPTS = 5
READ_CPR = "orgdir:read:cpr"  # shows full CPR numbers; every such read is audited
READ_BIRTHDATE = "orgdir:read:birthdate"  # shows the birth date part (DDMMYY-XXXX); audited too
CPR_FIELDS = ("has_cpr", "cpr_hash", "cpr")
NO_CPR: dict[str, Any] = {"has_cpr": False, "cpr_hash": None, "cpr": None}


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
        """Only the winning replica gets here; the others see the event through their view."""
        self.registry.after_write(self.kind, doc)


class PersonSections:
    """One ``Section`` per person, made on first use, positioned by one query before the load.

    ``Section.baseline`` reads one section's position; with a section per
    person that would be a query per person at every start. Instead
    ``baseline`` reads every section's position at once before the initial
    load, and a section made later starts from that position (0 for a
    section that did not exist then: everything in its log was written after
    the load began, and is re-read on first entry). Its first entry creates it.
    """

    def __init__(
        self,
        runtime: Runtime,
        refresh_one: Callable[[str, str], Awaitable[None]],
        refresh_person: Callable[[str], Awaitable[None]],
    ) -> None:
        self.runtime = runtime
        self.refresh_one = refresh_one
        self.refresh_person = refresh_person
        self.col = runtime.db["_sections"]
        self.sections: dict[str, Section] = {}
        self._positions: dict[str, int] | None = None  # None: not baselined, a new section re-reads all

    async def baseline(self) -> None:
        self._positions = {str(d["_id"]): int(d.get("seq") or 0) async for d in self.col.find({}, {"seq": 1})}

    def get(self, person: str) -> Section:
        section = self.sections.get(person)
        if section is not None:
            return section
        section = self.runtime.section(
            f"person:{person}", self.refresh_one, functools.partial(self.refresh_person, person)
        )
        known = None if self._positions is None else self._positions.pop(section.name, None)
        section.seen = known if known is not None else (None if self._positions is None else 0)
        return self.sections.setdefault(person, section)

    @contextlib.asynccontextmanager
    async def hold(self, persons: Iterable[str]) -> AsyncIterator[list[SectionTicket]]:
        """Every named person's section, in uuid order (so two writers never wait for each other in a ring)."""
        async with contextlib.AsyncExitStack() as stack:
            tickets = [await stack.enter_async_context(self.get(p).hold()) for p in sorted(set(persons))]
            yield tickets


@dataclass
class Plan:
    """What a write decided: the new timeline, the period it changed, the CPR fields, the event."""

    timeline: list[Any]
    period: Validity
    extra: dict[str, Any]
    event_type: str


Decide = Callable[[Doc | None], Plan]


class Registry:
    def __init__(self, runtime: Runtime, settings: RegistrySettings) -> None:
        self.runtime = runtime
        self.settings = settings
        self.clock: Clock = runtime.clock
        self.directory = Directory(runtime.db, runtime.clock)
        self.memory = Memory()
        self.search_index = SearchIndex()
        self.audit = AuditLog(runtime.db)
        self.repos: dict[str, Repository] = {
            k.agg: runtime.repository(k.plural, **({"event_data": _person_event_data} if k is PERSON else {}))
            for k in KINDS.values()
        }
        self.by_collection: dict[str, Kind] = {k.plural: k for k in KINDS.values()}
        self.claims = CprClaims(runtime.db, self.repos[PERSON.agg].col)
        self.sections = PersonSections(runtime, self.refresh_one, self.refresh_person)
        self.schedulers = [Effective(self, k) for k in KINDS.values()]
        self.directory.on_unit_change.append(self._unit_changed)
        runtime.declare(*INDEXES)
        runtime.sealed(PERSON.plural, fields=["cpr"])  # state.cpr and every registration's snapshot of it
        runtime.view([f"{k.agg}.*" for k in KINDS.values()], self.on_event, self.reload)
        # Orgunits events reach every replica after the consuming one projected them.
        runtime.view([], self.directory.apply_event, self.directory.load, handled_by=["orgunits"])
        runtime.loaders.append(self.start)
        self.loaded = False

    # --- startup and the read model -------------------------------------------------------------

    async def start(self) -> None:
        """The loader (after the indexes, with the view queues bound): sections, projection, aggregates."""
        await self.sections.baseline()
        await self.directory.load()
        await self.reload()
        holders = {a.extra["cpr_hash"]: a.uuid for a in self.memory.aggs["person"].values() if a.extra.get("cpr_hash")}
        backfilled = await self.claims.backfill(holders)
        self.loaded = True
        log.info(
            "registry loaded",
            extra={k: len(v) for k, v in self.memory.aggs.items()}
            | {"units": len(self.directory.tree), "cpr_claims_backfilled": backfilled},
        )

    async def reload(self) -> None:
        """Every aggregate from the database (one scan each); only newer versions replace what is held."""
        for kind in KINDS.values():
            async for doc in self.repos[kind.agg].col.find({}, NO_HISTORY):
                self.memory.put(kind, doc)
        self.reindex_all()

    async def as_registered(self, instant: datetime | None) -> Registry:
        """The registry as it had things registered at ``instant`` (transaction time), for one read.

        A shallow copy with read models of its own, built from every document's
        registrations and the projections' arrival logs: a full scan, so meant
        for the occasional "what did we believe then", not for every read.
        """
        if instant is None:
            return self
        snap = copy.copy(self)
        snap.directory = Directory(self.runtime.db, self.clock)
        snap.memory = Memory()
        snap.search_index = SearchIndex()
        await snap.directory.load(instant)
        for kind in KINDS.values():
            async for doc in self.repos[kind.agg].scan_as_registered(instant):
                snap.memory.put(kind, doc)
        snap.reindex_all()
        return snap

    def reindex_all(self) -> None:
        for person in list(self.memory.aggs["person"]):
            self.index_person(person)

    async def on_event(self, event: CloudEvent) -> None:
        """The view feed: a write of any replica, re-read by ``_id`` unless memory holds it already."""
        kind = KINDS.get(event.type.split(".", 1)[0])
        if kind is None:
            return
        held = self.memory.get(kind.agg, event.subject)
        if held is not None and held.version >= event.sequence:
            return  # this replica's own write, or already re-read
        await self.refresh_one(kind.plural, event.subject)

    async def refresh_one(self, collection: str, uuid: str) -> None:
        """Re-read one document into memory (kept only if newer than what is held)."""
        kind = self.by_collection.get(collection)
        if kind is None:
            return
        doc = await self.repos[kind.agg].get(uuid)
        if doc is not None:
            self.after_write(kind, doc)

    async def refresh_person(self, person: str) -> None:
        """A person's section fell behind its log: re-read the person and everything about them."""
        await self.refresh_one(PERSON.plural, person)
        for kind in KINDS.values():
            if kind is PERSON:
                continue
            known = {a.uuid for a in self.memory.of_person(kind.agg, person)}
            field_ = "state.timeline.person" if kind.agg == "manager" else "state.person"
            async for doc in self.repos[kind.agg].col.find({field_: person}, NO_HISTORY):
                known.discard(str(doc["_id"]))
                self.after_write(kind, doc)
            for uuid in known:  # held here as the person's, but no longer stored so
                await self.refresh_one(kind.plural, uuid)

    async def run_due(self) -> int:
        return sum([await s.run_due() for s in self.schedulers])

    # --- the orgunits projection (consumer ``registry.orgunits``) ---------------------------------

    async def project_unit(self, subject: str, sequence: int, data: OrgUnitState) -> None:
        await self.directory.units_projection.apply(subject, sequence, data.model_dump(mode="json", by_alias=True))
        self.directory.set_unit(data, sequence)

    async def project_class(self, subject: str, sequence: int, data: ClassState) -> None:
        await self.directory.classes_projection.apply(subject, sequence, data.model_dump(mode="json", by_alias=True))
        self.directory.set_class(data, sequence)

    async def project_facet(self, subject: str, sequence: int, data: FacetState) -> None:
        await self.directory.facets_projection.apply(subject, sequence, data.model_dump(mode="json", by_alias=True))
        self.directory.set_facet(data, sequence)

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

    async def _read(self, kind: Kind, uuid: str, if_match: int | None, *, required: bool) -> Doc | None:
        doc = await self.repos[kind.agg].get(uuid)
        if doc is None:
            if required:
                raise problems.not_found(kind.what, uuid)
            return None
        if if_match is not None and doc["version"] != if_match:
            raise problems.precondition_failed(doc["version"], if_match)
        return doc

    def _cpr(self, value: str | None) -> dict[str, Any]:
        if value is None:
            return dict(NO_CPR)
        digits = domain.normalize_cpr(value)
        # Stored sealed (AES-GCM, orgdir.crypto): a database dump shows no CPR number; the keyed
        # hash keeps one person per number (cpr_claims) and is what events carry.
        sealed = self.runtime.keyring.seal(digits)
        return {"has_cpr": True, "cpr_hash": domain.cpr_hash(digits, self.settings.cpr_hash_key), "cpr": sealed}

    @staticmethod
    def _kept_cpr(doc: Doc | None) -> dict[str, Any]:
        return dict(NO_CPR) if doc is None else {k: doc["state"].get(k) for k in CPR_FIELDS}

    @classmethod
    def _person_cpr(cls, given: dict[str, Any] | None, doc: Doc | None) -> dict[str, Any]:
        """The CPR fields a write leaves: the stored ones when the number is the same (sealing
        again would differ byte for byte and make a new version of an unchanged person)."""
        kept = cls._kept_cpr(doc)
        if given is None or (given["cpr_hash"] is not None and given["cpr_hash"] == kept["cpr_hash"]):
            return kept
        return given

    def _cpr_text(self, sealed: str | None, view: domain.CprView) -> str | None:
        if not sealed:
            return None
        if view == "masked":
            return domain.format_cpr("", view)  # nothing to open
        digits = self.runtime.keyring.open(sealed) if crypto.is_sealed(sealed) else sealed  # stored before sealing
        return domain.format_cpr(digits, view)

    async def save(
        self,
        kind: Kind,
        uuid: str,
        body: schemas.WriteBase,
        *,
        if_match: int | None = None,
        ceiling: visibility.Level = "secret",
    ) -> tuple[Agg, bool]:
        """PUT (create or replace within the body's validity) and POST; idempotent by content.

        A person's addresses above the writer's ``ceiling`` (which it cannot read) are kept."""
        today = self.clock.today()
        period = body.validity.resolve(today)
        new_slice = kind.slice.model_validate({**domain.slice_fields(body), "validity": period})
        cpr = getattr(body, "cpr", None) if kind is PERSON else None
        given = self._cpr(cpr) if cpr is not None else None  # an invalid number is refused before any I/O

        def decide(doc: Doc | None) -> Plan:
            extra = self._person_cpr(given, doc) if kind is PERSON else {}
            if doc is None:
                return Plan([new_slice], period, extra, f"{kind.agg}.created")
            old = self._timeline(kind, doc)
            timeline = self._keeping_hidden(kind, old, put(old, new_slice), period, ceiling)
            return Plan(timeline, period, extra, f"{kind.agg}.updated")

        return await self._write(
            kind,
            uuid,
            decide,
            if_match=if_match,
            must_exist=False,
            named=self._persons_of(kind, uuid, new_slice),
            serialise=kind is not PERSON,
        )

    async def patch(
        self,
        kind: Kind,
        uuid: str,
        body: schemas.WriteBase,
        *,
        if_match: int | None = None,
        ceiling: visibility.Level = "secret",
    ) -> Agg:
        """Change the given fields from ``validity.from`` (to ``validity.to``); hidden addresses are kept."""
        today = self.clock.today()
        period = body.validity.resolve(today)
        changes = domain.slice_fields(body, exclude_unset=True)
        given = self._cpr(getattr(body, "cpr", None)) if kind is PERSON and "cpr" in body.model_fields_set else None

        def decide(doc: Doc | None) -> Plan:
            assert doc is not None
            timeline = self._timeline(kind, doc)
            domain.check_in_life(timeline, period, kind.what)
            extra = self._person_cpr(given, doc) if kind is PERSON else {}
            try:
                new_timeline = apply_change(timeline, period, changes) if changes else timeline
            except ValueError as exc:
                raise rule("invalid-change", str(exc).splitlines()[0]) from exc
            if "addresses" in changes:
                new_timeline = self._keeping_hidden(kind, timeline, new_timeline, period, ceiling)
            return Plan(new_timeline, period, extra, f"{kind.agg}.updated")

        agg, _ = await self._write(
            kind,
            uuid,
            decide,
            if_match=if_match,
            must_exist=True,
            named=self._persons_of(kind, uuid, body),
            serialise=kind is not PERSON,
        )
        return agg

    async def terminate(self, kind: Kind, uuid: str, day: date, *, if_match: int | None = None) -> Agg:
        """End the aggregate from ``day`` (the first day it no longer holds)."""

        def decide(doc: Doc | None) -> Plan:
            assert doc is not None
            timeline = self._timeline(kind, doc)
            if not timeline or day <= timeline[0].validity.from_:
                start = timeline[0].validity.from_ if timeline else None
                raise rule(
                    "terminate-before-start",
                    f"Terminating from {day} would erase the whole {kind.what} "
                    f"(it starts {start}); "
                    "termination must be after its first day.",
                    field="to",
                )
            if kind is PERSON:  # memory holds the person's relations as stored: we hold the person's section
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
            if kind is ENGAGEMENT:  # its leaves are its person's: that section is held
                leaves = {u: self.memory.aggs["leave"][u].timeline for u in self.memory.by_engagement.get(uuid, ())}
                domain.check_nothing_after("leave", day, leaves, "engagement-has-leaves")
            extra = self._kept_cpr(doc) if kind is PERSON else {}
            return Plan(truncate(timeline, day), Validity(from_=day), extra, f"{kind.agg}.terminated")

        agg, _ = await self._write(
            kind,
            uuid,
            decide,
            if_match=if_match,
            must_exist=True,
            named={uuid} if kind is PERSON else set(),
            serialise=True,
        )
        return agg

    def _keeping_hidden(
        self, kind: Kind, old: list[Any], new: list[Any], period: Validity, ceiling: visibility.Level
    ) -> list[Any]:
        """``new`` with, in each part of ``period``, the addresses of the old slice there that the
        writer cannot see (``domain.keep_hidden``)."""
        if kind is not PERSON or ceiling == "secret":
            return new
        classes = self.directory.classes
        for o in overlapping(old, period):
            part = o.validity.intersect(period)
            assert part is not None
            keep = functools.partial(domain.keep_hidden, old=o, ceiling=ceiling, classes=classes)
            new = apply_change(new, part, keep)
        return new

    async def _write(
        self,
        kind: Kind,
        uuid: str,
        decide: Decide,
        *,
        if_match: int | None,
        must_exist: bool,
        named: set[str],
        serialise: bool,
    ) -> tuple[Agg, bool]:
        """Read, decide, check, write; under the sections of the persons involved when ``serialise``.

        The persons are those the request names and those the stored
        aggregate names (a manager role may move between persons); memory
        gives a first guess, and when the stored document names one more the
        sections are taken again with it.
        """
        held = set(named)
        hint = self.memory.get(kind.agg, uuid)
        if serialise:
            held |= self._persons_of(kind, uuid, *([hint] if hint else []))
        # Unknown here, it is most likely new (an import creates tens of thousands): try the insert
        # without reading first. Its unique ``_id`` refuses it when another replica made it, and the
        # next attempt reads and decides again.
        unread = hint is None and not must_exist and if_match is None
        for _ in range(ATTEMPTS):
            outcome: tuple[Agg, bool] | None = None
            release: tuple[str, str, str | None] | None = None
            async with self.sections.hold(held if serialise else ()) as tickets:
                guessed, unread = unread, False
                doc = None if guessed else await self._read(kind, uuid, if_match, required=must_exist)
                if serialise and doc is not None:
                    stored = self._persons_of(kind, uuid, *self._timeline(kind, doc))
                    if not stored <= held:
                        held |= stored
                        continue
                try:
                    plan = decide(doc)
                    self._check_scope(kind, doc, plan)
                    await self._refresh_references(kind, plan)
                    self.validate(kind, uuid, plan.timeline, plan.period)
                except problems.Problem:
                    if guessed:
                        continue  # refused as new: it may exist after all, so read and decide again
                    raise
                state = self.build_state(kind, plan.timeline, plan.extra)
                if doc is not None and state == doc["state"]:
                    agg = self.memory.get(kind.agg, uuid)
                    if agg is None or agg.version != doc["version"]:
                        agg = self.after_write(kind, doc)
                    return agg, False
                if kind is PERSON:
                    release = await self._claim_cpr(uuid, doc, state)
                change = Change(
                    state,
                    plan.event_type,
                    next_transition_at(plan.timeline, self.clock.today(), self.settings.timezone),
                )
                repo = self.repos[kind.agg]
                try:
                    new = (
                        await repo.insert(uuid, change)
                        if doc is None
                        else await repo.update(uuid, doc["version"], change)
                    )
                except StaleVersion as exc:  # another writer was first: decide again from what it left
                    if if_match is not None:
                        raise problems.precondition_failed(exc.current, if_match) from exc
                    continue
                except problems.Problem as exc:
                    if doc is not None or exc.kind != "conflict":
                        raise
                    continue  # created meanwhile by another request: read it and decide again
                for ticket in tickets:
                    ticket.wrote(kind.plural, uuid)
                outcome = self.after_write(kind, new), doc is None
            if outcome is not None:
                if release is not None:
                    await self.claims.release(*release)
                return outcome
        raise problems.conflict(f"{kind.what} {uuid} is being changed concurrently; try again")

    def _check_scope(self, kind: Kind, doc: Doc | None, plan: Plan) -> None:
        """403 ``out-of-scope`` when a writer scoped to subtrees reaches a unit outside them."""
        if auth.current.get() is None:
            return
        since = plan.period.from_
        old = self._timeline(kind, doc) if doc is not None else []
        engagements = {
            e: {u for x in self.memory.aggs["engagement"][e].timeline if (u := getattr(x, "unit", None))}
            for x in [*old, *plan.timeline]
            if (e := getattr(x, "engagement", None)) and e in self.memory.aggs["engagement"]
        }
        auth.check_scope(self.directory.tree, domain.units_touched(old, plan.timeline, since, engagements), since)

    async def _claim_cpr(self, uuid: str, doc: Doc | None, state: dict[str, Any]) -> tuple[str, str, str | None] | None:
        """Claim a CPR hash the person gets; returns the claim it gives up (released after the write)."""
        new = state.get("cpr_hash")
        old = doc["state"].get("cpr_hash") if doc is not None else None
        if new and new != old:
            await self.claims.claim(new, uuid)
        if old and old != new:
            return old, uuid, await self.claims.token(old, uuid)
        return None

    async def _refresh_references(self, kind: Kind, plan: Plan) -> None:
        """Re-read the persons and engagements the new content refers to (by ``_id``: exact, cheap)."""
        if kind is PERSON:
            return
        persons: set[str] = set()
        engagements: set[str] = set()
        for s in overlapping(plan.timeline, plan.period):
            if getattr(s, "person", None):
                persons.add(s.person)
            if getattr(s, "substitute", None):
                persons.add(s.substitute)
            if kind is LEAVE:
                engagements.add(s.engagement)
        for p in sorted(persons):
            await self.refresh_one(PERSON.plural, p)
        for e in sorted(engagements):
            await self.refresh_one(ENGAGEMENT.plural, e)

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
                domain.check_unit(d.tree.units, unit, p)
            person = getattr(s, "person", None)
            if person is not None:
                tl = self.memory.timeline("person", person)
                domain.check_person({person: tl} if tl is not None else {}, person, p)
            domain.check_classes(kind, d.classes, s, p)
            if kind is ASSOCIATION and s.substitute is not None:
                sub_tl = self.memory.timeline("person", s.substitute)
                domain.check_substitute({s.substitute: sub_tl} if sub_tl is not None else {}, s, p)
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

    def after_write(self, kind: Kind, doc: Doc) -> Agg:
        old = self.memory.get(kind.agg, str(doc["_id"]))
        old_persons = self._persons_of(kind, str(doc["_id"]), old) if old else set()
        agg = self.memory.put(kind, doc)
        if agg is old:
            return agg  # memory held a newer version already
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
        # One index serves every reader: secret addresses are never search terms (a hit would tell).
        shown = domain.visible_person(s, "internal", self.directory.classes)
        texts = [
            s.given_name,
            s.surname,
            s.nickname or "",
            *(a.value for a in shown.addresses if a.scope != "location"),
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

    def search(self, q: str, limit: int, ceiling: visibility.Level = "internal") -> list[dict[str, Any]]:
        """The address book; each hit shows the addresses ``ceiling`` allows (found by non-secret terms only)."""
        today = self.clock.today()
        out = []
        for person in self.search_index.search(domain.query_terms(q), limit):
            agg = self.memory.get("person", person)
            s = current_or_next(agg.timeline, today) if agg else None
            if agg is None or s is None:
                continue
            s = domain.visible_person(s, ceiling, self.directory.classes)
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

    def render(
        self,
        kind: Kind,
        agg: Agg,
        s: SliceBase,
        *,
        reveal_cpr: domain.CprView = "masked",
        ceiling: visibility.Level = "internal",
    ) -> dict[str, Any]:
        """One slice as a reader sees it: a person's CPR number masked and addresses above ``ceiling`` left out."""
        if kind is PERSON:
            s = domain.visible_person(cast(PersonSlice, s), ceiling, self.directory.classes)
        out = {"uuid": agg.uuid, "version": agg.version, **s.model_dump(mode="json", by_alias=True)}
        if kind is PERSON:
            out["has_cpr"] = bool(agg.extra.get("has_cpr"))
            out["cpr"] = self._cpr_text(agg.extra.get("cpr"), reveal_cpr)
        return out

    def person_ref(self, person: str | None, day: date) -> dict[str, Any] | None:
        if person is None:
            return None
        agg = self.memory.get("person", person)
        s = current_or_next(agg.timeline, day) if agg else None
        if s is None:  # every field of ``PersonRef``: a page of these is sent as built (``prebuilt``)
            return {"uuid": person, "name": None, "given_name": None, "surname": None, "nickname": None}
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
        chain = self.directory.tree.chain_at(unit, day)
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

    def overview(
        self, person: str, day: date, *, reveal_cpr: domain.CprView, ceiling: visibility.Level = "internal"
    ) -> dict[str, Any]:
        agg = self.memory.get("person", person)
        if agg is None:
            raise problems.not_found("person", person)
        s = at(agg.timeline, day)
        if s is None:
            raise domain.not_in_force("person", person, day, agg.timeline)
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
                        "substitute": self.person_ref(as_.substitute, day),
                        "trade_union": d.class_ref(as_.trade_union),
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
            "person": self.render(PERSON, agg, s, reveal_cpr=reveal_cpr, ceiling=ceiling),
            "engagements": engagements,
            "managers": managers,
            "manager_roles": roles,
            "associations": associations,
            "leaves": leaves,
        }

    def people(
        self, unit: str, day: date, *, subtree: bool, hierarchy: str | None = None
    ) -> list[tuple[str, str, EngagementSlice]]:
        """Engagements in force in the unit (or its subtree, within ``hierarchy``) on ``day``:
        (engagement uuid, unit, slice), by engagement uuid. Rows are built per page (``people_page``)."""
        if unit not in self.directory.tree:
            raise unknown_unit(unit)
        h = hierarchy_filter(hierarchy, self.directory.classes)
        tree = self.directory.tree
        if subtree:
            units = tree.subtree_at(unit, day, h)
        else:
            units = {unit} if h is None or tree.in_hierarchy(unit, day, h) else set()
        out = []
        for u in units:
            for e in self.memory.of_unit("engagement", u):
                es = at(e.timeline, day)
                if es is not None and es.unit == u:
                    out.append((e.uuid, u, es))
        out.sort(key=lambda x: x[0])
        return out

    # --- what the API serves ----------------------------------------------------------------------

    async def reveal_cpr(self, viewer: Principal, persons: list[str], endpoint: str) -> domain.CprView:
        """How much of CPR numbers ``viewer`` sees: all of it with orgdir:read:cpr, the birth date
        with orgdir:read:birthdate, nothing else; an unmasked read is recorded first (append-only audit)."""
        if viewer.has(READ_CPR):
            view: domain.CprView = "full"
        elif viewer.has(READ_BIRTHDATE):
            view = "birthdate"
        else:
            return "masked"
        action = "read-person" if view == "full" else "read-birthdate"
        await self.audit.record(
            actor=viewer.actor, persons=persons, endpoint=endpoint, when=self.clock.now(), action=action
        )
        return view

    async def _reveal(self, kind: Kind, viewer: Principal, persons: list[str], endpoint: str) -> domain.CprView:
        return await self.reveal_cpr(viewer, persons, endpoint) if kind is PERSON else "masked"

    async def list_in_force(
        self,
        kind: Kind,
        day: date,
        filters: dict[str, str | None],
        viewer: Principal,
        endpoint: str,
        *,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of the aggregates in force on ``day`` matching every filter given, by uuid."""
        domain.check_filters(kind, filters)
        mem = self.memory
        person, unit, engagement = filters.get("person"), filters.get("unit"), filters.get("engagement")
        if person is not None:
            ids = sorted(mem.by_person[kind.agg].get(person, ()))
        elif unit is not None:
            ids = sorted(mem.by_unit[kind.agg].get(unit, ()))
        elif engagement is not None:
            ids = sorted(mem.by_engagement.get(engagement, ()))
        else:
            ids = mem.sorted_ids(kind.agg)
        aggs = mem.aggs[kind.agg]

        def keep(u: str) -> bool:
            s = at(aggs[u].timeline, day)
            return s is not None and all(v is None or getattr(s, k) == v for k, v in filters.items())

        chunk, nxt = page_filtered(ids, keep, limit=limit, cursor=cursor)
        reveal = await self._reveal(kind, viewer, chunk, endpoint)
        ceiling = domain.ceiling_of(viewer.roles)
        items = []
        for u in chunk:
            s = at(aggs[u].timeline, day)
            assert s is not None
            items.append(self.render(kind, aggs[u], s, reveal_cpr=reveal, ceiling=ceiling))
        return items, nxt

    async def read(
        self, kind: Kind, uuid: str, day: date, viewer: Principal, endpoint: str
    ) -> tuple[dict[str, Any], int]:
        """The aggregate as it is on ``day``, and its version (the ETag)."""
        agg = self.memory.get(kind.agg, uuid)
        if agg is None:
            raise problems.not_found(kind.what, uuid)
        s = at(agg.timeline, day)
        if s is None:
            raise domain.not_in_force(kind.what, uuid, day, agg.timeline)
        reveal = await self._reveal(kind, viewer, [uuid], endpoint)
        return self.render(kind, agg, s, reveal_cpr=reveal, ceiling=domain.ceiling_of(viewer.roles)), agg.version

    async def written(self, kind: Kind, agg: Agg, viewer: Principal, endpoint: str) -> dict[str, Any]:
        """A write's answer: the slice in force today (else the last one) and the whole timeline."""
        s = at(agg.timeline, self.clock.today()) or agg.timeline[-1]
        reveal = await self._reveal(kind, viewer, [agg.uuid], endpoint)
        ceiling = domain.ceiling_of(viewer.roles)
        out = self.render(kind, agg, s, reveal_cpr=reveal, ceiling=ceiling)
        timeline = [x.model_dump(mode="json", by_alias=True) for x in agg.timeline]
        out["timeline"] = self._strip(kind, timeline, ceiling)
        return out

    def _strip(self, kind: Kind, timeline: list[dict[str, Any]], ceiling: visibility.Level) -> list[dict[str, Any]]:
        """Raw slices (a write's answer, history) with a person's addresses cut to ``ceiling``."""
        if kind is not PERSON or ceiling == "secret":
            return timeline
        return visibility.strip_timeline(timeline, ceiling, domain.class_user_key(self.directory.classes))

    async def history(self, kind: Kind, uuid: str, viewer: Principal, endpoint: str) -> History:
        """The shared history shape; a person's adds the CPR number (masked unless revealed)."""
        doc = await self.repos[kind.agg].get_full(uuid)
        if doc is None:
            raise problems.not_found(kind.what, uuid)
        hist = history_of(doc)
        if kind is not PERSON:
            return hist
        ceiling = domain.ceiling_of(viewer.roles)
        hist.timeline = self._strip(kind, hist.timeline, ceiling)
        for r in hist.registrations:
            r.timeline = self._strip(kind, r.timeline, ceiling)
        reveal = await self.reveal_cpr(viewer, [uuid], endpoint)
        cpr = doc["state"].get("cpr")
        return schemas.PersonHistory(
            **dict(hist),
            has_cpr=bool(cpr),
            cpr=self._cpr_text(cpr, reveal),
        )

    async def person_overview(self, person: str, day: date, viewer: Principal, endpoint: str) -> dict[str, Any]:
        if self.memory.get("person", person) is None:
            raise problems.not_found("person", person)
        reveal = await self.reveal_cpr(viewer, [person], endpoint)
        return self.overview(person, day, reveal_cpr=reveal, ceiling=domain.ceiling_of(viewer.roles))

    def people_page(
        self, unit: str, day: date, *, subtree: bool, limit: int, cursor: str | None, hierarchy: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Rows shaped as ``schemas.UnitPerson``, every field (sent as built: ``prebuilt``); the
        page's units and classes are looked up once, not once per row."""
        rows = self.people(unit, day, subtree=subtree, hierarchy=hierarchy)
        by_id = {r[0]: r for r in rows}
        chunk, nxt = page_of([r[0] for r in rows], limit=limit, cursor=cursor)
        units: dict[str, dict[str, Any]] = {}
        classes: dict[str, dict[str, Any] | None] = {}

        def class_ref(uuid: str) -> dict[str, Any] | None:
            if uuid not in classes:
                classes[uuid] = self.directory.class_ref(uuid)
            return classes[uuid]

        out = []
        for key in chunk:
            engagement, u, es = by_id[key]
            if u not in units:
                units[u] = self.unit_ref(u, day)
            out.append({
                "engagement": engagement,
                "person": self.person_ref(es.person, day),
                "unit": units[u],
                "job_function": class_ref(es.job_function),
                "engagement_type": class_ref(es.engagement_type),
                "primary": es.primary,
                "fraction": es.fraction,
                "validity": es.validity.dump(),
            })
        return out, nxt

    def unit_manager(self, unit: str, day: date) -> dict[str, Any]:
        """The responsible manager of ``unit`` on ``day`` (inherited from above when vacant)."""
        if unit not in self.directory.tree:
            raise unknown_unit(unit)
        if self.directory.unit_at(unit, day) is None:
            raise problems.missing("unit-not-active", f"Unit {unit} is not active on {day}.", unit=unit)
        found = self.manager_of(unit, day)
        if found is None:
            raise problems.missing("no-manager", f"No filled manager position in {unit} or any unit above it on {day}.")
        return found

    async def audit_page(
        self, person: str | None, *, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        docs, nxt = await self.audit.page(person=person, limit=limit, cursor=cursor)
        keys = ("at", "actor", "person", "endpoint", "action")
        return [{"id": d["_id"], **{k: d[k] for k in keys}} for d in docs], nxt

    def known_units(self, day: date, *, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """The projected units active on ``day``, with the first day of their current period."""
        d = self.directory
        ids = sorted(u for u in d.tree.units if d.unit_at(u, day) is not None)
        chunk, nxt = page_of(ids, limit=limit, cursor=cursor)
        items = []
        for u in chunk:
            s = d.unit_at(u, day)
            assert s is not None
            items.append(
                {
                    "uuid": u,
                    "name": s.name,
                    "user_key": s.user_key,
                    "parent": s.parent,
                    "active_from": d.active_since(u, day),
                }
            )
        return items, nxt

    def known_classes(
        self, facet: str | None, *, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        d = self.directory
        ids = sorted(u for u, c in d.classes.items() if facet is None or c.facet == facet)
        chunk, nxt = page_of(ids, limit=limit, cursor=cursor)
        items = [
            {
                "facet": d.classes[u].facet,
                **(d.class_ref(u) or {}),
                "active_from": min((x.validity.from_ for x in d.classes[u].timeline), default=None),
            }
            for u in chunk
        ]
        return items, nxt


def unknown_unit(unit: str) -> problems.NotFound:
    return problems.missing("unknown-unit", f"No organisation unit {unit} is known.", unit=unit)
