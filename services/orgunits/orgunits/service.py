"""The orgunits use cases: the write paths, and keeping the read model (``readmodel``) current.

The tree rules (parent active, no cycles, user_key unique on every day,
children covered) span units, so every write holds the service's ``tree``
section, a lease in the database shared by all replicas: on entry the
replica re-reads what other replicas wrote since it last held it, so the
rules see exactly what the database holds, and no other replica writes
until this one is done. Each write is still guarded by the document's
version (a 409/412, never a lost update). Between writes, every replica's
in-memory model follows the service's own events (``Runtime.view``).
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any

from orgdir import auth, problems, visibility
from orgdir.contracts.orgunits import (
    ClassSlice,
    ClassState,
    FacetSlice,
    OrgUnitSlice,
    OrgUnitState,
    RelatedUnitSlice,
)
from orgdir.contracts.registry import EngagementSlice
from orgdir.events import CloudEvent
from orgdir.scheduler import EffectiveScheduler, next_transition_at
from orgdir.schemas import History, TerminateIn
from orgdir.service import Runtime
from orgdir.store import Change, Doc, Repository, StaleVersion
from orgdir.validity import SliceBase, Validity, apply, normalize, put, truncate
from orgunits import domain, schemas, vocabulary
from orgunits.readmodel import Sight, UnitCache, Vocabulary, everything
from orgunits.settings import OrgunitsSettings
from orgunits.store import NO_HISTORY, class_state, engagement_body, engagements_in, facet_state, related_state

log = logging.getLogger(__name__)

Decide = Callable[[list[OrgUnitSlice]], tuple[list[OrgUnitSlice], str]]


def _dump(timeline: list[Any]) -> list[dict[str, Any]]:
    return [s.model_dump(mode="json", by_alias=True) for s in timeline]


class OrgUnits:
    def __init__(self, runtime: Runtime, settings: OrgunitsSettings) -> None:
        self.runtime = runtime
        self.settings = settings
        self.clock = runtime.clock
        self.units_repo = runtime.repository("orgunits")
        self.facets_repo = runtime.repository("facets")
        self.classes_repo = runtime.repository("classes")
        self.related_repo = runtime.repository("related_units")
        self.engagements = runtime.projection("engagements")
        self.cache = UnitCache(max_days=settings.tree_cache_days)
        self.vocab = Vocabulary()
        self.section = runtime.section("tree", self.refresh_one, self.load)
        runtime.view(["orgunit.*", "class.*", "facet.*", "related_unit.*"], self.on_event, self.load)
        runtime.loaders.append(self.start)
        self.dirty: set[tuple[str, str]] = set()
        for repo in (self.units_repo, self.facets_repo, self.classes_repo, self.related_repo):
            self._track(repo)
        self.scheduler = EffectiveScheduler(
            self.units_repo,
            "orgunit",
            lambda state: list(
                OrgUnitState.model_validate({"uuid": "-", "version": 1, **state}).timeline
            ),
            self.clock,
            settings.timezone,
        )
        self.class_scheduler = EffectiveScheduler(
            self.classes_repo,
            "class",
            lambda state: list(
                ClassState.model_validate({"uuid": "-", "version": 1, **state}).timeline
            ),
            self.clock,
            settings.timezone,
        )

    def _track(self, repo: Repository) -> None:
        """Every write in this process (the schedulers' too) marks the document for re-reading."""
        notify = repo.on_write

        def on_write(collection: str, uuid: str, *rest: Any) -> None:
            notify(collection, uuid, *rest)
            self.dirty.add((collection, uuid))

        repo.on_write = on_write

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load the caches (one scan each) and seed the default vocabulary."""
        await self.section.baseline()
        await self.load()
        if self.settings.seed_vocabulary:
            await self.seed()

    async def load(self) -> None:
        """Everything from the database; only newer versions replace what memory holds."""
        await self.vocab.load(self.facets_repo.col, self.classes_repo.col)
        n = await self.cache.load(self.units_repo.col)
        r = await self.cache.related.load(self.related_repo.col)
        log.info("units loaded", extra={"units": n, "related_units": r})

    async def on_event(self, event: CloudEvent) -> None:
        """The view feed: any replica's write, re-read by ``_id`` unless memory holds that version already."""
        kind = event.type.split(".", 1)[0]
        models: dict[str, dict[str, Any]] = {
            "orgunit": self.cache.units,
            "class": self.vocab.classes,
            "facet": self.vocab.facets,
            "related_unit": self.cache.related.relations,
        }
        held = models[kind].get(event.subject)
        if held is not None and held.version >= event.sequence:
            return  # this replica's own write, or already re-read
        collection = {
            "orgunit": self.units_repo.name,
            "class": self.classes_repo.name,
            "facet": self.facets_repo.name,
            "related_unit": self.related_repo.name,
        }
        await self.refresh_one(collection[kind], event.subject)

    async def seed(self) -> int:
        """Create missing default facets and classes; idempotent, safe with several replicas.

        The section is taken only when something is missing: a replica restarted
        after its predecessor died holding the section must not wait out that
        lease (usually everything is seeded already).
        """
        facets = [(k, d) for k, d in vocabulary.FACETS.items() if vocabulary.facet_uuid(k) not in self.vocab.facets]
        seeds: list[tuple[str, str, str, Any, str | None]] = [
            (facet, key, name, scope, None)
            for facet, rows in vocabulary.CLASSES.items()
            for key, name, scope in rows
        ]
        kle_csv = Path(self.settings.kle_csv) if self.settings.kle_csv else vocabulary.KLE_CSV
        seeds += [  # parents first
            ("kle", r.number, r.title, None, vocabulary.kle_uuid(r.parent) if r.parent else None)
            for r in vocabulary.kle_rows(kle_csv)
        ]
        classes = [row for row in seeds if vocabulary.class_uuid(row[0], row[1]) not in self.vocab.classes]
        if not facets and not classes:
            return 0
        created = 0
        async with self.section.hold() as ticket:
            for key, description in facets:
                fid = vocabulary.facet_uuid(key)
                if fid in self.vocab.facets:  # re-read on entry: another replica was first
                    continue
                state: dict[str, Any] = {
                    "timeline": _dump(
                        [
                            FacetSlice(
                                validity=Validity(from_=vocabulary.SEED_FROM),
                                user_key=key,
                                description=description,
                            )
                        ]
                    )
                }
                with contextlib.suppress(problems.Problem):  # another replica was first
                    doc = await self.facets_repo.insert(
                        fid, Change(state, "facet.created", note="seeded")
                    )
                    self.vocab.set_facet(facet_state(doc))
                    ticket.wrote(self.facets_repo.name, fid)
                    created += 1
            for facet, key, name, scope, parent in classes:
                cid = vocabulary.class_uuid(facet, key)
                if cid in self.vocab.classes:
                    continue
                s = ClassSlice(
                    validity=Validity(from_=vocabulary.SEED_FROM),
                    user_key=key,
                    name=name,
                    scope=scope,
                    parent=parent,
                )
                state = {
                    "facet": facet,
                    "facet_uuid": vocabulary.facet_uuid(facet),
                    "timeline": _dump([s]),
                }
                with contextlib.suppress(problems.Problem):
                    doc = await self.classes_repo.insert(cid, Change(state, "class.created", note="seeded"))
                    self.vocab.set_class(class_state(doc))
                    ticket.wrote(self.classes_repo.name, cid)
                    created += 1
            self._clean(self.facets_repo.name, self.classes_repo.name)
        return created

    def _clean(self, *collections: str) -> None:
        self.dirty = {d for d in self.dirty if d[0] not in collections}

    async def refresh_one(self, collection: str, uid: str) -> None:
        """Re-read one document into memory (kept only if newer than what is held)."""
        doc = await self.runtime.db[collection].find_one({"_id": uid}, NO_HISTORY)
        if doc is None:
            return
        if collection == self.units_repo.name:
            self.cache.set_doc(doc)
        elif collection == self.classes_repo.name:
            self.vocab.set_class(class_state(doc))
        elif collection == self.facets_repo.name:
            self.vocab.set_facet(facet_state(doc))
        elif collection == self.related_repo.name:
            self.cache.related.set_doc(doc)

    async def fresh(self) -> None:
        """Re-read documents written in this process outside the write paths (the schedulers)."""
        while self.dirty:
            await self.refresh_one(*self.dirty.pop())

    async def tick(self) -> None:
        """Timer: emit ``.effective`` for transitions that are due, then re-read what changed."""
        await self.scheduler.run_due()
        await self.class_scheduler.run_due()
        await self.fresh()

    def today(self) -> date:
        return self.clock.today()

    # ------------------------------------------------------------------ reads

    async def as_registered(self, instant: datetime | None) -> OrgUnits:
        """The service as it had things registered at ``instant`` (transaction time), for one read.

        A shallow copy with read models of its own, built from every document's
        registrations (``Repository.scan_as_registered``): a full scan, meant
        for the occasional "what did we believe then", not for every read.
        """
        if instant is None:
            return self
        snap = copy.copy(self)
        snap.cache = UnitCache(max_days=2)
        snap.vocab = Vocabulary()
        await snap.vocab.load_docs(
            self.facets_repo.scan_as_registered(instant), self.classes_repo.scan_as_registered(instant)
        )
        await snap.cache.load_docs(self.units_repo.scan_as_registered(instant))
        await snap.cache.related.load_docs(self.related_repo.scan_as_registered(instant))
        return snap

    def _user_key_of(self) -> visibility.UserKeyOf:
        return visibility.class_user_key(self.vocab.classes)

    def sight(self, ceiling: visibility.Level) -> Sight:
        """The unit addresses a reader allowed up to ``ceiling`` sees (``orgdir.visibility``)."""
        if ceiling == "secret":
            return everything
        user_key_of = self._user_key_of()
        return lambda addresses: visibility.visible(addresses, ceiling, user_key_of)

    def shown(self, doc: Doc, ceiling: visibility.Level) -> dict[str, Any]:
        """A unit write's answer (its full state) with the addresses above ``ceiling`` left out."""
        state = dict(doc["state"])
        if ceiling != "secret":
            state["timeline"] = visibility.strip_timeline(state["timeline"], ceiling, self._user_key_of())
        return {"uuid": doc["_id"], "version": doc["version"], **state}

    # ------------------------------------------------------------------ units: writes

    async def write_unit(
        self,
        uid: str,
        decide: Decide,
        *,
        if_match: int | None,
        must_exist: bool,
        since: date,
        note: str | None = None,
        after_rules: Callable[[list[OrgUnitSlice]], Awaitable[None]] | None = None,
    ) -> tuple[Doc, bool]:
        """Decide a new timeline, check the caller's scope and every rule, store it; ``(doc, created)``.

        ``since`` is the day the write takes effect: a writer scoped to subtrees
        must hold every unit it touches on that day (``domain.units_touched``).
        A result equal to the stored timeline stores nothing (idempotent PUT).
        """
        async with self.section.hold() as ticket:
            await self.fresh()
            for _ in range(3):
                state = self.cache.get(uid)
                if state is None and must_exist:
                    raise problems.not_found("organisation unit", uid)
                if if_match is not None and (state is None or state.version != if_match):
                    raise problems.precondition_failed(state.version if state else 0, if_match)
                current = list(state.timeline) if state else []
                new, event_type = decide(current)
                tree = self.cache.tree
                auth.check_scope(tree, domain.units_touched(uid, current, new, since), since)
                if state is not None and domain.same_timeline(current, new):
                    return _as_doc(state), False
                domain.check_unit(uid, new, tree.units, tree.children.get(uid, ()), self.cache.holders)
                if after_rules is not None:
                    await after_rules(new)
                change = Change(
                    {"timeline": _dump(new)},
                    event_type,
                    next_transition_at(new, self.today(), self.settings.timezone),
                    note,
                )
                try:
                    if state is None:
                        stored = await self.units_repo.insert(uid, change)
                    else:
                        stored = await self.units_repo.update(uid, state.version, change)
                except (StaleVersion, problems.Problem) as exc:
                    # Another replica wrote this unit since our cache saw it: re-read, decide again.
                    if isinstance(exc, problems.Problem) and exc.kind != "conflict":
                        raise
                    if if_match is not None:
                        raise problems.precondition_failed(getattr(exc, "current", 0), if_match) from exc
                    doc = await self.units_repo.get(uid)
                    if doc is not None:
                        self.cache.set_doc(doc, force=True)
                    continue
                ticket.wrote(self.units_repo.name, uid)
                stored = {k: v for k, v in stored.items() if k not in ("outbox", "registrations")}
                self.cache.set_doc(stored)
                self.dirty.discard((self.units_repo.name, uid))
                return stored, state is None
            raise problems.conflict(f"organisation unit {uid} is being changed concurrently; try again")

    def _slice(self, body: schemas.UnitFields, validity: Validity) -> OrgUnitSlice:
        v = self.vocab
        unit_type = (
            domain.resolve_class(
                body.unit_type, "unit_type", v.classes, v.class_by_key, "unit_type"
            ).uuid
            if body.unit_type
            else None
        )
        unit_level = (
            domain.resolve_class(
                body.unit_level, "unit_level", v.classes, v.class_by_key, "unit_level"
            ).uuid
            if body.unit_level
            else None
        )
        addresses = domain.build_addresses(body.addresses, v.classes, v.class_by_key)
        return domain.unit_slice(
            body,
            validity,
            body.parent,
            unit_type,
            unit_level,
            addresses,
            self._hierarchy(body.hierarchy),
            domain.build_kle(body.kle, v.classes, v.class_by_key),
        )

    def _hierarchy(self, ref: str | None) -> str:
        """A unit_hierarchy class by UUID or user_key; none given: the line organisation."""
        if ref is None:
            return domain.LINE_HIERARCHY
        v = self.vocab
        return domain.resolve_class(ref, "unit_hierarchy", v.classes, v.class_by_key, "hierarchy").uuid

    async def put_unit(
        self, uid: str, body: schemas.UnitWrite, if_match: int | None, ceiling: visibility.Level = "secret"
    ) -> tuple[Doc, bool]:
        """Create or replace from ``validity.from``; a writer allowed up to ``ceiling`` keeps what it cannot see."""
        new_slice = self._slice(body, body.validity.resolve(self.today()))

        def decide(current: list[OrgUnitSlice]) -> tuple[list[OrgUnitSlice], str]:
            new = domain.put_timeline(current, new_slice)
            if not current:
                return new, "orgunit.created"
            new = domain.with_hidden_addresses(current, new, new_slice.validity, ceiling, self._user_key_of())
            return new, "orgunit.moved" if domain.parent_changes(
                current, new
            ) else "orgunit.updated"

        return await self.write_unit(
            uid, decide, if_match=if_match, must_exist=False, since=new_slice.validity.from_
        )

    async def patch_unit(
        self, uid: str, body: schemas.UnitPatch, if_match: int | None, ceiling: visibility.Level = "secret"
    ) -> Doc:
        period = body.validity.resolve(self.today())
        v = self.vocab
        changes: dict[str, Any] = {}
        given = body.model_fields_set - {"validity"}
        if "user_key" in given and body.user_key is not None:
            changes["user_key"] = body.user_key.strip()
        if "name" in given and body.name is not None:
            changes["name"] = " ".join(body.name.split())
        for fld in ("unit_type", "unit_level"):
            if fld in given:
                ref = getattr(body, fld)
                changes[fld] = (
                    domain.resolve_class(ref, fld, v.classes, v.class_by_key, fld).uuid
                    if ref
                    else None
                )
        if "parent" in given:
            changes["parent"] = body.parent
        if "addresses" in given:
            changes["addresses"] = [
                a.model_dump()
                for a in domain.build_addresses(body.addresses or [], v.classes, v.class_by_key)
            ]
        if "hierarchy" in given:
            changes["hierarchy"] = self._hierarchy(body.hierarchy)
        if "kle" in given:
            changes["kle"] = [k.model_dump() for k in domain.build_kle(body.kle or [], v.classes, v.class_by_key)]
        if not changes:
            raise problems.rule("nothing-to-change", "The PATCH body names no field to change.")

        def decide(current: list[OrgUnitSlice]) -> tuple[list[OrgUnitSlice], str]:
            new = domain.patch_timeline(current, period, changes)
            if "addresses" in changes:
                new = domain.with_hidden_addresses(current, new, period, ceiling, self._user_key_of())
            return new, "orgunit.moved" if domain.parent_changes(
                current, new
            ) else "orgunit.updated"

        doc, _ = await self.write_unit(uid, decide, if_match=if_match, must_exist=True, since=period.from_)
        return doc

    async def move_unit(self, uid: str, body: schemas.MoveIn, if_match: int | None) -> Doc:
        period = body.validity.resolve(self.today())

        def decide(current: list[OrgUnitSlice]) -> tuple[list[OrgUnitSlice], str]:
            return domain.patch_timeline(current, period, {"parent": body.parent}), "orgunit.moved"

        doc, _ = await self.write_unit(
            uid, decide, if_match=if_match, must_exist=True, since=period.from_, note=f"moved from {period.from_}"
        )
        return doc

    async def terminate_unit(self, uid: str, body: TerminateIn, if_match: int | None) -> Doc:
        day = body.day(self.today())

        def decide(current: list[OrgUnitSlice]) -> tuple[list[OrgUnitSlice], str]:
            return domain.terminate_timeline(current, day), "orgunit.terminated"

        async def engagements(_: list[OrgUnitSlice]) -> None:
            docs = await engagements_in(self.engagements.col, uid)
            domain.check_engagements(uid, day, domain.count_active_engagements(docs, uid, day))

        doc, _ = await self.write_unit(
            uid,
            decide,
            if_match=if_match,
            must_exist=True,
            since=day,
            note=f"terminated from {day}",
            after_rules=engagements,
        )
        return doc

    async def unit_history(self, uid: str, ceiling: visibility.Level) -> History:
        """Every slice of the unit's life and every registration (from the database, not memory),
        with the addresses above ``ceiling`` left out of each."""
        history = await self.units_repo.full_history(uid, "organisation unit")
        if ceiling == "secret":
            return history
        user_key_of = self._user_key_of()
        history.timeline = visibility.strip_timeline(history.timeline, ceiling, user_key_of)
        for r in history.registrations:
            r.timeline = visibility.strip_timeline(r.timeline, ceiling, user_key_of)
        return history

    # ------------------------------------------------------------------ related units

    async def write_related(
        self,
        uid: str,
        pair: list[str] | None,
        decide: Callable[[list[RelatedUnitSlice]], tuple[list[RelatedUnitSlice], str]],
        *,
        if_match: int | None,
        must_exist: bool,
        since: date,
    ) -> tuple[Doc, bool]:
        """Inside the tree section: the units' timelines and the other relations are current.

        A writer scoped to subtrees must hold both units on ``since``, the day the write takes effect.
        """
        async with self.section.hold() as ticket:
            await self.fresh()
            doc = await self.related_repo.get(uid)
            if doc is None and must_exist:
                raise problems.not_found("related unit", uid)
            if if_match is not None and (doc is None or doc["version"] != if_match):
                raise problems.precondition_failed(doc["version"] if doc else 0, if_match)
            existing = related_state(doc) if doc else None
            if existing is not None and pair is not None and pair != existing.units:
                raise problems.rule(
                    "units-fixed", "A relation keeps its two units; end it and create another.", field="units"
                )
            units = existing.units if existing else pair
            assert units is not None
            current = list(existing.timeline) if existing else []
            new, event_type = decide(current)
            auth.check_scope(self.cache.tree, units, since)
            if not new:
                raise problems.rule("empty-timeline", "The relation would have no validity left.")
            if doc is not None and _same(current, new):
                return doc, False
            domain.check_relation(uid, units, new, self.cache.tree.units, self.cache.related.of_pair(units))
            verb = "related_unit.created" if doc is None else event_type
            change = Change({"units": units, "timeline": _dump(new)}, verb)
            stored = (
                await self.related_repo.insert(uid, change)
                if doc is None
                else await self.related_repo.update(uid, doc["version"], change)
            )
            ticket.wrote(self.related_repo.name, uid)
            stored = {k: v for k, v in stored.items() if k not in ("outbox", "registrations")}
            self.cache.related.set_doc(stored)
            self.dirty.discard((self.related_repo.name, uid))
            return stored, doc is None

    async def put_related(self, uid: str, body: schemas.RelatedUnitIn, if_match: int | None) -> tuple[Doc, bool]:
        """Create, or set the relation over ``validity`` (the rest of its history stays)."""
        pair = domain.related_pair(body.units)
        new_slice = RelatedUnitSlice(validity=body.validity.resolve(self.today()))

        def decide(current: list[RelatedUnitSlice]) -> tuple[list[RelatedUnitSlice], str]:
            return put(current, new_slice), "related_unit.updated"

        return await self.write_related(
            uid, pair, decide, if_match=if_match, must_exist=False, since=new_slice.validity.from_
        )

    async def terminate_related(self, uid: str, body: TerminateIn, if_match: int | None) -> Doc:
        day = body.day(self.today())

        def decide(current: list[RelatedUnitSlice]) -> tuple[list[RelatedUnitSlice], str]:
            if current and day <= current[0].validity.from_:
                raise problems.rule(
                    "terminate-before-start", f"The relation starts on {current[0].validity.from_}.", field="to"
                )
            return truncate(current, day), "related_unit.terminated"

        doc, _ = await self.write_related(uid, None, decide, if_match=if_match, must_exist=True, since=day)
        return doc

    async def related_history(self, uid: str) -> History:
        return await self.related_repo.full_history(uid, "related unit")

    # ------------------------------------------------------------------ registry's engagements

    async def apply_engagement(self, uid: str, sequence: int, person: str, timeline: list[EngagementSlice]) -> None:
        """Keep what the termination rule needs: each slice's unit and validity (stale sequences skipped)."""
        await self.engagements.apply(uid, sequence, engagement_body(person, domain.engagement_periods(timeline)))

    # ------------------------------------------------------------------ vocabulary: writes

    async def write_facet(
        self, fid: str, user_key: str, description: str, if_match: int | None, must_exist: bool
    ) -> tuple[Doc, bool]:
        async with self.section.hold() as ticket:
            await self.fresh()
            doc = await self.facets_repo.get(fid)
            if doc is None and must_exist:
                raise problems.not_found("facet", fid)
            if if_match is not None and (doc is None or doc["version"] != if_match):
                raise problems.precondition_failed(doc["version"] if doc else 0, if_match)
            current = list(facet_state(doc).timeline) if doc else []
            domain.check_facet(fid, user_key, self.vocab.facet_by_key.get(user_key), current)
            start = current[0].validity.from_ if current else vocabulary.SEED_FROM
            new = [
                FacetSlice(
                    validity=Validity(from_=start), user_key=user_key, description=description
                )
            ]
            if doc is not None and _same(current, new):
                return doc, False
            change = Change(
                {"timeline": _dump(new)}, "facet.created" if doc is None else "facet.updated"
            )
            stored = (
                await self.facets_repo.insert(fid, change)
                if doc is None
                else await self.facets_repo.update(fid, doc["version"], change)
            )
            ticket.wrote(self.facets_repo.name, fid)
            self.vocab.set_facet(facet_state(stored))
            self.dirty.discard((self.facets_repo.name, fid))
            return stored, doc is None

    async def patch_facet(self, fid: str, description: str, if_match: int | None) -> Doc:
        """Only the description changes: classes refer to a facet by its user_key."""
        key = self.vocab.facet(fid).timeline[-1].user_key
        doc, _ = await self.write_facet(fid, key, description, if_match, True)
        return doc

    async def write_class(
        self,
        cid: str,
        facet_ref: str | None,
        decide: Callable[[list[ClassSlice]], tuple[list[ClassSlice], str]],
        *,
        if_match: int | None,
        must_exist: bool,
    ) -> tuple[Doc, bool]:
        async with self.section.hold() as ticket:
            await self.fresh()
            doc = await self.classes_repo.get(cid)
            if doc is None and must_exist:
                raise problems.not_found("class", cid)
            if if_match is not None and (doc is None or doc["version"] != if_match):
                raise problems.precondition_failed(doc["version"] if doc else 0, if_match)
            existing = class_state(doc) if doc else None
            if existing is not None:
                facet = self.vocab.facet(existing.facet)
                if facet_ref is not None and self.vocab.facet(facet_ref).uuid != facet.uuid:
                    raise problems.rule("facet-immutable", "A class cannot move to another facet.")
            else:
                if facet_ref is None:
                    raise problems.rule("facet-required", "A new class needs a facet.")
                try:
                    facet = self.vocab.facet(facet_ref)
                except problems.NotFound as exc:
                    raise problems.rule("unknown-facet", f"No facet {facet_ref!r}.") from exc
            facet_key = facet.timeline[0].user_key
            current = list(existing.timeline) if existing else []
            new, event_type = decide(current)
            if doc is not None and _same(current, new):
                return doc, False
            domain.check_class(cid, facet_key, new, self.vocab.in_facet(facet_key))
            change = Change(
                {"facet": facet_key, "facet_uuid": facet.uuid, "timeline": _dump(new)},
                "class.created" if doc is None else event_type,
                next_transition_at(new, self.today(), self.settings.timezone),
            )
            stored = (
                await self.classes_repo.insert(cid, change)
                if doc is None
                else await self.classes_repo.update(cid, doc["version"], change)
            )
            ticket.wrote(self.classes_repo.name, cid)
            self.vocab.set_class(class_state(stored))
            self.dirty.discard((self.classes_repo.name, cid))
            return stored, doc is None

    async def put_class(
        self, cid: str, body: schemas.ClassWrite, if_match: int | None
    ) -> tuple[Doc, bool]:
        period = body.validity.resolve(self.today())
        new_slice = ClassSlice(
            validity=period,
            user_key=body.user_key,
            name=body.name,
            scope=body.scope,
            parent=body.parent,
        )

        def decide(current: list[ClassSlice]) -> tuple[list[ClassSlice], str]:
            return put(current, new_slice), "class.updated"

        return await self.write_class(cid, body.facet, decide, if_match=if_match, must_exist=False)

    async def patch_class(self, cid: str, body: schemas.ClassPatch, if_match: int | None) -> Doc:
        period = body.validity.resolve(self.today())
        changes = {k: getattr(body, k) for k in body.model_fields_set - {"validity"}}
        if not changes:
            raise problems.rule("nothing-to-change", "The PATCH body names no field to change.")

        def decide(current: list[ClassSlice]) -> tuple[list[ClassSlice], str]:
            return apply(current, period, changes), "class.updated"

        doc, _ = await self.write_class(cid, None, decide, if_match=if_match, must_exist=True)
        return doc

    async def terminate_class(self, cid: str, body: TerminateIn, if_match: int | None) -> Doc:
        day = body.day(self.today())

        def decide(current: list[ClassSlice]) -> tuple[list[ClassSlice], str]:
            return domain.terminate_class_timeline(current, day), "class.terminated"

        doc, _ = await self.write_class(cid, None, decide, if_match=if_match, must_exist=True)
        return doc


def _as_doc(state: OrgUnitState) -> Doc:
    """The stored shape of a cached unit (for answers that wrote nothing)."""
    return {"_id": state.uuid, "version": state.version, "state": {"timeline": _dump(state.timeline)}}


def _same(a: list[Any], b: list[Any]) -> bool:
    na: list[SliceBase] = normalize(a)
    nb: list[SliceBase] = normalize(b)
    return [s.model_dump() for s in na] == [s.model_dump() for s in nb]
