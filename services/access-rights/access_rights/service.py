"""Use cases of access-rights, and change propagation: from an input change to exactly the access
and account events it causes.

The API and the org consumer call ``AccessService``: catalogue writes (load →
check the ``domain`` rules → write → propagate), the approval workflow,
exclusions, held batches, and the reads of effective rights, accounts and
batches. Every input change (an org event, a catalogue write, a held batch released, a
day boundary) names the persons it can affect; those are recomputed with the
pure ``domain`` functions, diffed against what was published for them
(``person_rights``), and the differences are written through the outbox.

Replicas (any number, all alike; none has to run alone):

- **One critical section for every decision.** Everything that decides
  rights (the handling of an org event, a catalogue write with its rules and
  its recomputation, a batch release, the day-boundary recomputation) runs
  inside the service's ``rights`` section (``orgdir.store.Section``, a lease in
  the database shared by all replicas, renewed while held). No two
  recomputations ever run at once, on one replica or on two. Each
  recomputation has one cause (one org event, one catalogue write, one
  release, one tick) and the mass-change guard counts the revocations of that
  one recomputation, as with one replica: two changes made at once through
  two replicas are counted separately, as they are through one, and one
  change is counted whole and once on whichever replica makes it.
- **Catch-up on entry.** Every document written inside the section is
  recorded on the ticket (org projections, catalogue documents,
  ``person_rights``, accounts, held batches); a replica entering the section
  re-reads what the others wrote since it last held it (``refresh_one``), or
  everything when it has fallen too far behind (``load``), so every input of
  its decision is as current as the database. The org projections are written
  inside the section too, by whichever replica consumes the org queue. Every
  write is still a compare-and-swap (version, unique ``_id``); should one find
  memory stale anyway (a holder that died before logging its writes), that
  person is re-read and planned again.
- **Org events** arrive on the durable queue ``access-rights.org``, which is
  single-active: RabbitMQ gives it to one replica at a time and fails over.
  A replica that takes it over reloads its whole model inside the section
  before its next decision, in case the replica before it died holding the
  section. Handled events and concurrent API writes of one replica queue up
  for one section entry (``in_section``: group commit, pure speed) and run one
  after another.
- **Two org models.** Decisions use ``org``: the org events as consumed (the
  projections), so a recomputation never acts on an org change whose own
  recomputation has not run yet, and the guard counts each revocation with
  the change that caused it. Reads use ``view_org``: the same, plus the org
  events this replica's view feed has seen and the consumer has not handled
  yet. Both hold the same state objects; only the indexes are kept twice.
- **Reads on every replica** (a person's rights, a role's holders, a unit's
  rights, and the rules a catalogue write checks) come from memory, which each
  replica keeps current through its view feed (``Runtime.view``: a per-replica
  auto-delete queue bound to the org events and to the service's catalogue
  events, newer-only by sequence or version), within moments of any replica's
  write; the writing replica updates its memory at once (read-your-writes).
  Accounts, held batches and catalogue documents are read from the database.
  ``person_rights``, accounts and pins (held revocations) in memory are inputs
  of decisions only: caught up on entry to the section, not fed by the view.
- **Half-done recomputations.** A catalogue write is stored before its
  recomputation runs, and the same PUT again changes nothing, so a client's
  retry cannot finish it. A replica whose job failed on the infrastructure
  (the database away half-way) reconciles as soon as it can enter the
  section again; a replica entering after a holder died (its lease ran out)
  reconciles first, and every replica's timer enters a section left so.
  A reconciliation recomputes everyone an assignment reaches and writes only
  differences, under the mass-change guard.
- **Day boundary.** Every replica runs ``tick``: the scheduler's guarded write
  fires each ``assignment.effective`` once (a loser's stale version counts as
  done), and a second recomputation of the same persons finds nothing to do.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import logging
import uuid as uuidlib
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TypeVar, cast

from pydantic import BaseModel

from access_rights import domain
from access_rights.readmodel import CatalogueView, OrgView
from access_rights.schemas import (
    ExclusionIn,
    HeldBatch,
    HeldBatchDetail,
    Holder,
    Holders,
    NamedRight,
    PatchIn,
    PersonRights,
    SliceIn,
    UnitRight,
    UnitRights,
)
from access_rights.settings import AccessRightsSettings
from access_rights.store import (
    INDEXES,
    account_id,
    dump,
    from_projection,
    from_repository,
    load_all,
    reserve_username,
)
from orgdir import auth, metrics, problems
from orgdir.clock import Clock, start_of_day
from orgdir.contracts.access import (
    AccessChange,
    AccountState,
    AssignmentSlice,
    AssignmentState,
    ITSystemSlice,
    ITSystemState,
    Right,
    RoleGroupSlice,
    RoleGroupState,
    RoleSlice,
    RoleState,
)
from orgdir.contracts.orgunits import ClassState, OrgUnitState
from orgdir.contracts.registry import EngagementState, PersonState
from orgdir.events import CloudEvent, EventRejected, typed_data
from orgdir.http import Page, Paging
from orgdir.scheduler import EffectiveScheduler, next_transition_at
from orgdir.schemas import History
from orgdir.service import Runtime
from orgdir.store import (
    Change,
    Doc,
    Projection,
    SectionTicket,
    StaleVersion,
    decode_cursor,
    encode_cursor,
    paginate,
)
from orgdir.validity import SliceBase, Validity, put

log = logging.getLogger(__name__)

T = TypeVar("T")
Job = Callable[[SectionTicket], Coroutine[Any, Any, T]]

CATALOGUE_MODELS: dict[str, type[BaseModel]] = {
    "it_systems": ITSystemState,
    "roles": RoleState,
    "role_groups": RoleGroupState,
    "assignments": AssignmentState,
}
CATALOGUE_KINDS = {"it_system": "it_systems", "role": "roles", "role_group": "role_groups", "assignment": "assignments"}
ORG_MODELS: dict[str, type[BaseModel]] = {
    "units": OrgUnitState,
    "engagements": EngagementState,
    "persons": PersonState,
    "classes": ClassState,
}
ORG_KINDS = {"orgunit": "units", "engagement": "engagements", "person": "persons", "class": "classes"}
# Its own catalogue events reach every replica's view directly; org events arrive as the org consumer's echo.
VIEW_PATTERNS = [f"{kind}.*" for kind in CATALOGUE_KINDS]

HOLD_BUDGET_S = 1.0  # stop starting queued jobs in one section entry after this
STEP_ASIDE_S = 0.1  # after a second of back-to-back entries, let a waiting replica in (it polls every ≤ 75 ms)
async def _every(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """Each result, once every one has finished; the first failure is raised then (not at once:
    the others' writes are not cut off halfway)."""
    results = await asyncio.gather(*awaitables, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return cast(list[T], results)


ORG_BATCH = 64  # org events handled as one batch at most (the queue's prefetch bounds it first)
STALE_ATTEMPTS = 3  # a person's write found memory stale: re-read and recompute that often


@dataclass(frozen=True)
class Kind:
    """One catalogue resource: its collection, event prefix, models and the state beside its timeline."""

    name: str
    aggregate: str
    what: str
    slice_model: type[SliceBase]
    state_model: type[BaseModel]
    fields: Callable[[Sequence[Any], dict[str, Any]], dict[str, Any]]


IT_SYSTEMS = Kind("it_systems", "it_system", "IT system", ITSystemSlice, ITSystemState, lambda t, p: {})
ROLES = Kind("roles", "role", "role", RoleSlice, RoleState, domain.role_fields)
ROLE_GROUPS = Kind("role_groups", "role_group", "role group", RoleGroupSlice, RoleGroupState, lambda t, p: {})
ASSIGNMENTS = Kind(
    "assignments", "assignment", "assignment", AssignmentSlice, AssignmentState, domain.assignment_fields
)


@dataclass
class Written:
    """A catalogue write's outcome: the document, and whether this write created it."""

    doc: Doc
    created: bool


@dataclass
class Cause:
    """What triggered a recomputation; ``time`` is when it was written (None: a day boundary)."""

    time: datetime | None
    what: str


@dataclass
class Published:
    version: int
    held: dict[str, Right]
    next_transition_at: datetime | None


class AccessService:
    def __init__(self, runtime: Runtime, settings: AccessRightsSettings, clock: Clock) -> None:
        self.runtime = runtime
        self.settings = settings
        self.clock = clock
        self.db = runtime.db
        self.org = OrgView()  # decisions: the org events consumed (the projections)
        self.view_org = OrgView()  # reads: also the org events not consumed yet (the view feed)
        self.cat = CatalogueView()
        self.repos = {name: runtime.repository(name) for name in CATALOGUE_MODELS}
        # One write may publish several events (one per changed right): Repository.write_events.
        # Republish/refresh re-send a person's whole set as access.current (the change events carry one right).
        self.rights = runtime.repository("person_rights", current_type="access.current")
        self.accounts = runtime.repository("accounts")
        # With arrival logs, so a read ``as_registered`` knows the organisation as this service knew it then.
        self.projections = {name: Projection(self.db, name, history=True, clock=clock) for name in ORG_MODELS}
        self.registered_at: datetime | None = None  # set on a copy that answers as registered then
        runtime.declare(*INDEXES)
        self.assignment_scheduler = EffectiveScheduler(
            self.repos["assignments"],
            "assignment",
            lambda state: list(AssignmentState.model_validate({"uuid": "x", "version": 1, **state}).timeline),
            clock,
            settings.timezone,
        )
        self.section = runtime.section("rights", self.refresh_one, self.load)
        # Org events reach every replica after the active consumer projected them; the catalogue is ours.
        runtime.view(VIEW_PATTERNS, self.on_view, self.reload_view, handled_by=["org"])
        runtime.loaders.append(self.start)
        # Decision inputs, current whenever this replica holds the section.
        self.published: dict[str, Published] = {}
        self.account_docs: dict[str, dict[str, Doc]] = {}
        self.pins: dict[str, dict[str, str]] = {}
        self._jobs: list[tuple[Job[Any], contextvars.Context, asyncio.Future[Any], bool]] = []
        self._runner: asyncio.Task[None] | None = None
        self._reload_on_entry = False
        self._healing: asyncio.Task[None] | None = None
        self.handled = 0  # org events this replica handled (tests, metrics)
        self.org_batches = 0  # the batches they were handled in

    # ------------------------------------------------------------------ model

    async def start(self) -> None:
        """The runtime's loader: after the view queue is bound, before consumers start."""
        await self.section.baseline()
        await self.load()

    async def load(self) -> None:
        """Everything from the database: at start, and inside the section when fallen behind.

        The org and catalogue models keep what is newer in memory (the view
        feed may be ahead); the decision inputs are replaced by what the
        database holds (only the section's holder writes them).
        """
        for collection in ORG_MODELS:
            for doc in await load_all(self.db, collection):
                self._put_org_doc(collection, doc)
        await self._reload_catalogue()
        published: dict[str, Published] = {}
        for doc in await load_all(self.db, "person_rights"):
            published[doc["_id"]] = self._published(doc)
        accounts: dict[str, dict[str, Doc]] = {}
        for doc in await load_all(self.db, "accounts"):
            accounts.setdefault(doc["state"]["person"], {})[doc["state"]["it_system"]] = doc
        pins: dict[str, dict[str, str]] = {}
        async for batch in self.db["held_batches"].find({"status": "held"}):
            for entry in batch["revocations"]:
                pins.setdefault(entry["person"], {})[entry["role"]] = batch["_id"]
        self.published, self.account_docs, self.pins = published, accounts, pins
        self._gauge()

    async def reload_view(self) -> None:
        """The read model from the database, newer-only: the view feed's reload (outside the section)."""
        for collection in ORG_MODELS:
            for doc in await load_all(self.db, collection):
                self.view_org.put(int(doc["sequence"]), from_projection(ORG_MODELS[collection], doc))
        await self._reload_catalogue()

    async def _reload_catalogue(self) -> None:
        for name, model in CATALOGUE_MODELS.items():
            for doc in await load_all(self.db, name):
                self.cat.put(from_repository(model, doc))

    async def refresh_one(self, collection: str, uid: str) -> None:
        """Re-read one document another replica wrote inside the section."""
        if collection in ORG_MODELS:
            doc = await self.projections[collection].get(uid)
            if doc is not None:
                self._put_org_doc(collection, doc)
        elif collection in CATALOGUE_MODELS:
            doc = await self.repos[collection].get(uid)
            if doc is not None:
                self.cat.put(from_repository(CATALOGUE_MODELS[collection], doc))
        elif collection == "person_rights":
            await self._refresh_published(uid)
        elif collection == "accounts":
            doc = await self.accounts.get(uid)
            if doc is not None:
                self._put_account(doc)
        elif collection == "held_batches":
            batch = await self.db["held_batches"].find_one({"_id": uid})
            if batch is not None:
                self._put_batch(batch)
        else:
            log.warning("unknown collection in the section log", extra={"collection": collection})

    async def on_view(self, event: CloudEvent) -> None:
        """The view feed: an org event, or a catalogue write of any replica; kept if newer."""
        kind = event.type.split(".", 1)[0]
        try:
            data = typed_data(event)
        except EventRejected as exc:
            log.warning("view: event not understood", extra={"type": event.type, "error": str(exc)})
            return
        if kind in ORG_KINDS:  # the read model only: decisions take org events as consumed
            self.view_org.put(event.sequence, data)
        elif kind in CATALOGUE_KINDS:
            self.cat.put(data)

    def _put_org_doc(self, collection: str, doc: Doc) -> None:
        self._put_org(int(doc["sequence"]), from_projection(ORG_MODELS[collection], doc))

    def _put_org(self, sequence: int, state: BaseModel) -> None:
        """A consumed org state: into the decision model and the read model (each newer-only)."""
        self.org.put(sequence, state)
        self.view_org.put(sequence, state)

    @staticmethod
    def _published(doc: Doc) -> Published:
        held = {r["role"]: Right.model_validate(r) for r in doc["state"]["rights"]}
        return Published(int(doc["version"]), held, doc.get("next_transition_at"))

    async def _refresh_published(self, person: str) -> None:
        doc = await self.rights.get(person)
        if doc is None:
            self.published.pop(person, None)
        else:
            self.published[person] = self._published(doc)

    def _put_account(self, doc: Doc) -> None:
        mine = self.account_docs.setdefault(doc["state"]["person"], {})
        old = mine.get(doc["state"]["it_system"])
        if old is None or int(old["version"]) <= int(doc["version"]):
            mine[doc["state"]["it_system"]] = doc

    def _put_batch(self, batch: Doc) -> None:
        for entry in batch["revocations"]:
            pins = self.pins.setdefault(entry["person"], {})
            if batch["status"] == "held":
                pins[entry["role"]] = batch["_id"]
            elif pins.get(entry["role"]) == batch["_id"]:
                del pins[entry["role"]]
        self._gauge()

    async def _reload_person(self, person: str) -> None:
        """Everything decided about one person, from the database (memory was found stale)."""
        await self._refresh_published(person)
        async for doc in self.accounts.col.find({"state.person": person}, {"outbox": 0, "registrations": 0}):
            self._put_account(doc)
        async for batch in self.db["held_batches"].find({"revocations.person": person}):
            self._put_batch(batch)

    async def person_exists(self, person: str) -> bool:
        if self.registered_at is not None:
            if self.view_org.person_known(person):
                return True
            return await self.rights.get_as_registered(person, self.registered_at) is not None
        if self.view_org.person_known(person) or person in self.published:
            return True
        return await self.rights.get(person) is not None

    async def as_registered(self, instant: datetime | None) -> AccessService:
        """The service as it had things registered at ``instant`` (transaction time), for one read.

        A shallow copy with read models of its own: the catalogue from every
        document's registrations, the organisation from the projections'
        arrival logs (what access-rights had learnt by then). A full scan, for
        the occasional "what did we believe then"; it never decides anything.
        """
        if instant is None:
            return self
        snap = copy.copy(self)
        snap.registered_at = instant
        snap.view_org = snap.org = OrgView()
        snap.cat = CatalogueView()
        for name, projection in self.projections.items():
            async for doc in projection.scan_as_registered(instant):
                snap.view_org.put(int(doc["sequence"]), from_projection(ORG_MODELS[name], doc))
        for name, model in CATALOGUE_MODELS.items():
            async for doc in self.repos[name].scan_as_registered(instant):
                snap.cat.put(from_repository(model, doc))
        return snap

    # ------------------------------------------------------------------ the section

    async def in_section(self, job: Job[T], *, patient: bool = False) -> T:
        """Run ``job`` holding the ``rights`` section (on any replica, one holder at a time).

        Jobs queued meanwhile in this replica share one entry (group commit),
        run one after another in the order they came, each in its caller's
        context (actor, correlation id). A job that fails fails alone. When
        the section stays busy (``Section.wait``), a request's job fails with
        503; a ``patient`` one (a consumed event, the timer) waits on, so a
        replica that died holding the lease costs the queue time, not
        delivery attempts (which would dead-letter its events).
        """
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._jobs.append((job, contextvars.copy_context(), future, patient))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run_jobs(), name="access-rights-section")
        return await future

    def _next_job(self) -> tuple[Job[Any], contextvars.Context, asyncio.Future[Any], bool]:
        """The first request waiting, else the first job: a caller waits on a request, while queued
        events and timers wait on nobody (an import's role assignments queued behind thousands of
        person events went at 30/s). Requests keep their order among themselves, events theirs."""
        first_request = next((i for i, queued in enumerate(self._jobs) if not queued[3]), 0)
        return self._jobs.pop(first_request)

    async def _run_jobs(self) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0)  # let the callers woken with us queue their jobs
        current: asyncio.Future[Any] | None = None
        streak = loop.time()
        while self._jobs:
            if loop.time() - streak > HOLD_BUDGET_S:  # busy for a while: the others get their turn
                await asyncio.sleep(STEP_ASIDE_S)
                streak = loop.time()
            entered = False
            try:
                async with self.section.hold() as ticket:
                    entered = True
                    started = loop.time()
                    while self._jobs and loop.time() - started < HOLD_BUDGET_S:
                        if self._reload_on_entry:  # took over the org queue: the one before may have died
                            await self.load()
                            self._reload_on_entry = False
                        if ticket.took_over:  # the holder before died, perhaps half-way through a recomputation
                            ticket.took_over = False
                            try:
                                await self.reconcile(ticket, "the section's holder before died")
                            except Exception:
                                self._heal()
                                raise
                        job, context, current, patient = self._next_job()
                        if current.done():  # the caller went away before it ran
                            continue
                        if isinstance(job, OrgEventJob):  # the org events queued behind it: one batch
                            batch = [(job, context, current)]
                            while self._jobs and len(batch) < ORG_BATCH:
                                more = self._jobs[0][0]
                                if not isinstance(more, OrgEventJob):
                                    break
                                _, more_context, more_future, _ = self._jobs.pop(0)
                                batch.append((more, more_context, more_future))
                            await self._org_batch(ticket, batch)
                            continue
                        try:
                            result = await asyncio.create_task(job(ticket), context=context)
                        except Exception as exc:
                            if not current.done():
                                current.set_exception(exc)
                            if not patient and _maybe_half_done(exc):  # a consumed event is redelivered,
                                self._heal()  # the timer runs again; a request is not retried by itself
                        else:
                            if not current.done():
                                current.set_result(result)
            except Exception as exc:
                if not entered:  # busy, or the catch-up failed: what waits fails (503 / retry)
                    busy = isinstance(exc, problems.Unavailable)
                    jobs, self._jobs = self._jobs, []
                    for queued in jobs:
                        if busy and queued[3]:
                            self._jobs.append(queued)  # patient: try again
                        elif not queued[2].done():
                            queued[2].set_exception(exc)
                else:  # a reload or the release failed; what waits gets the next entry
                    log.warning("rights section failed after entry", extra={"error": str(exc)})
                    await asyncio.sleep(0.1)
            except BaseException:  # cancelled: nobody waits for ever
                jobs, self._jobs = self._jobs, []
                for future in [queued[2] for queued in jobs] + ([current] if current is not None else []):
                    if not future.done():
                        future.cancel()
                raise

    async def taken_over(self) -> None:
        """This replica now consumes the org queue: reload everything on the next entry."""
        log.info("org queue taken over; reloading inside the section before deciding")
        self._reload_on_entry = True

    async def drain(self, timeout: float = 30) -> None:
        """At shutdown: finish the jobs already queued, so the section is not left held."""
        runner = self._runner
        if runner is not None and not runner.done():
            try:
                await asyncio.wait_for(asyncio.shield(runner), timeout)
            except (TimeoutError, Exception) as exc:
                log.warning("section jobs not finished at shutdown", extra={"error": str(exc)})

    # ------------------------------------------------------------------ inputs

    async def on_org_event(self, event: CloudEvent, data: BaseModel) -> None:
        """The single active consumer of the org queue: project, then recompute whom it reaches."""
        self.handled += 1
        await self.in_section(OrgEventJob(self, event, data), patient=True)

    async def _org_batch(
        self, ticket: SectionTicket, batch: list[tuple[OrgEventJob, contextvars.Context, asyncio.Future[Any]]]
    ) -> None:
        """Org events as one batch; when it fails, each again on its own, so one event that cannot
        be handled fails (and is retried, then dead-lettered) alone, not with its neighbours."""
        tries = [batch] if len(batch) == 1 else [batch, *([one] for one in batch)]
        for attempt, part in enumerate(tries):
            try:
                await asyncio.create_task(self._org_events(ticket, [(j, c) for j, c, _ in part]), context=part[0][1])
            except Exception as exc:
                if attempt == 0 and len(batch) > 1:
                    log.warning("org event batch failed; each event again on its own", extra={"error": str(exc)})
                    continue
                for _, _, future in part:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for _, _, future in part:
                    if not future.done():
                        future.set_result(None)
                if attempt == 0:
                    return

    async def _org_events(self, ticket: SectionTicket, batch: list[tuple[OrgEventJob, contextvars.Context]]) -> None:
        """Org events in the order consumed: each into memory in turn (what it reaches is decided
        there, as one by one); then their projection writes at once; then one recomputation per
        event of the persons it was the last to reach, at once, each in its event's context (its
        causation id, its cause for the mass-change guard).

        One event at a time cost its writes' round trips in sequence: access-rights took in
        12 events/s behind a municipality import. The projection is stored before any right
        computed from it: a holder that died after publishing rights from org state the database
        did not hold yet left the next holder to reconcile from the older state, and a person
        lost every right and got them back (the replicas test, a SIGKILL mid-batch)."""
        self.org_batches += 1
        last: dict[str, int] = {}
        for i, (job, _) in enumerate(batch):
            last.update(dict.fromkeys(self._take_in(job.event, job.data), i))
        await _every(self._project(ticket, job.event, job.data) for job, _ in batch)
        reaches: dict[int, list[str]] = {}
        for person, i in last.items():
            reaches.setdefault(i, []).append(person)
        recomputations = [
            asyncio.create_task(
                self.recompute(ticket, persons, Cause(batch[i][0].event.time, batch[i][0].event.type)),
                context=batch[i][1].copy(),
            )
            for i, persons in sorted(reaches.items())
        ]
        await _every(recomputations)

    def _take_in(self, event: CloudEvent, data: BaseModel) -> set[str]:
        """One org event into memory (before its write, which another replica's catch-up then
        re-reads); returns whom it reaches, decided on memory as the event found it."""
        old = self.org.engagements.get(data.uuid) if isinstance(data, EngagementState) else None
        old_unit = self.org.units.get(event.subject) if isinstance(data, OrgUnitState) else None
        fresh = self.org.seq.get(event.subject, 0) < event.sequence  # a redelivery recomputes as much as the first
        self._put_org(event.sequence, data)
        if isinstance(data, OrgUnitState):
            units = domain.units_to_recompute(data.uuid, old_unit if fresh else None, data.timeline, self.org)
            return self.org.members_any_time(units)
        if isinstance(data, EngagementState):
            return {data.person} | ({old.person} if old else set())
        return set()

    async def _project(self, ticket: SectionTicket, event: CloudEvent, data: BaseModel) -> None:
        collection = ORG_KINDS[event.type.split(".", 1)[0]]
        if await self.projections[collection].apply(event.subject, event.sequence, dump(data)):
            ticket.wrote(collection, event.subject)

    def affected_by(self, name: str, old: BaseModel | None, new: BaseModel) -> set[str]:
        """Who a catalogue change can reach (old and new state both count)."""
        assignments: set[str] = set()
        if isinstance(new, AssignmentState):
            out = domain.assignment_candidates(new, self.org)
            if isinstance(old, AssignmentState):
                out |= domain.assignment_candidates(old, self.org)
            return out
        if isinstance(new, RoleState):
            assignments = self.cat.assignments_with_role(new.uuid)
        elif isinstance(new, RoleGroupState):
            assignments = self.cat.assignments_with_group(new.uuid)
        elif isinstance(new, ITSystemState):
            for role in [r.uuid for r in self.cat.roles.values() if r.it_system == new.uuid]:
                assignments |= self.cat.assignments_with_role(role)
        out = set()
        for a in assignments:
            out |= domain.assignment_candidates(self.cat.assignments[a], self.org)
        return out

    async def catalogue_written(self, ticket: SectionTicket, name: str, doc: Doc) -> None:
        """In the section, right after the write: memory at once (read-your-writes), then recompute."""
        ticket.wrote(name, doc["_id"])
        new = from_repository(CATALOGUE_MODELS[name], doc)
        old: BaseModel | None = self.cat.of(name).get(doc["_id"])
        self.cat.put(new)
        affected = self.affected_by(name, old, new)
        await self.recompute(ticket, affected, Cause(self.clock.now(), f"{name} write"))

    async def tick(self) -> int:
        """The day boundary job (every replica): future-dated changes grant and revoke on their day.

        It also enters a section whose holder died and nobody entered since, so
        what that holder left half-done is reconciled without waiting for a write.
        """
        if await self.section.abandoned():
            await self.in_section(_nothing, patient=True)
        await self.assignment_scheduler.run_due()
        due = [d["_id"] for d in await self.rights.due(self.clock.now(), limit=1_000_000)]
        if not due:
            return 0
        return await self.in_section(
            lambda ticket: self.recompute(ticket, due, Cause(None, "day boundary")), patient=True
        )

    # ------------------------------------------------------------------ recomputation

    async def reconcile(self, ticket: SectionTicket, why: str) -> int:
        """Recompute everyone an assignment reaches or who holds rights; only differences are written.

        A catalogue write is stored before its recomputation runs: a holder that
        dies or fails in between leaves people without the rights the stored
        catalogue gives them (and a client's retry of the same PUT changes
        nothing). The next holder reconciles, under the mass-change guard.
        """
        everyone = domain.everyone_reached(self.cat, self.org) | set(self.published)
        log.warning("reconciling every person's rights", extra={"why": why, "persons": len(everyone)})
        return await self.recompute(ticket, everyone, Cause(self.clock.now(), f"reconciliation: {why}"))

    def _heal(self) -> None:
        """After a job failed half-way: reconcile in the section as soon as it can be entered."""
        if self._healing is not None and not self._healing.done():
            return

        async def until_done() -> None:
            pause = 0.5
            while True:
                try:
                    await self.in_section(lambda t: self.reconcile(t, "a recomputation failed"), patient=True)
                    return
                except Exception as exc:
                    log.warning("reconciliation failed; trying again", extra={"error": str(exc)})
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 5.0)

        self._healing = asyncio.create_task(until_done(), name="access-rights-reconcile")

    def rights_of(self, person: str) -> list[Right]:
        """What decisions use: the org events consumed."""
        return domain.compute_rights(person, self.org, self.cat)

    def visible_rights(self, person: str) -> list[Right]:
        """What reads answer: every org event this replica has seen."""
        return domain.compute_rights(person, self.view_org, self.cat)

    def _plan(self, person: str, today: date) -> domain.RightsPlan:
        old = self.published.get(person)
        return domain.plan_rights(old.held if old else {}, self.rights_of(person), today, self.pins.get(person, {}))

    async def recompute(
        self, ticket: SectionTicket, persons: Iterable[str], cause: Cause, *, guard: bool = True
    ) -> int:
        """Recompute, diff and publish (holding the section); returns the number of access events written."""
        wanted = sorted(set(persons))
        if not wanted:
            return 0
        today = self.clock.today()
        plans = {p: self._plan(p, today) for p in wanted}
        revoking = [p for p in wanted if plans[p].revoked]
        if guard and len(revoking) > self.settings.mass_revoke_threshold:
            await self._hold(ticket, revoking, {p: plans[p] for p in revoking}, cause)
        sem = asyncio.Semaphore(self.settings.recompute_concurrency)

        async def one(p: str) -> int:
            async with sem:
                return await self._apply_person(ticket, p, plans[p], cause, today)

        return sum(await _every(one(p) for p in wanted))

    async def _apply_person(
        self, ticket: SectionTicket, person: str, plan: domain.RightsPlan, cause: Cause, today: date
    ) -> int:
        """Write one person's plan; a stale version means memory missed a write: re-read, re-plan."""
        for attempt in range(STALE_ATTEMPTS):
            try:
                return await self._apply(ticket, person, plan, cause, today)
            except StaleVersion:
                if attempt == STALE_ATTEMPTS - 1:
                    raise
                log.warning("stale decision input, re-reading the person", extra={"person": person})
                await self._reload_person(person)
                plan = self._plan(person, today)
        raise AssertionError("unreachable")

    async def _apply(
        self, ticket: SectionTicket, person: str, plan: domain.RightsPlan, cause: Cause, today: date
    ) -> int:
        old = self.published.get(person)
        held = list(plan.held.values())
        state = {"person": person, "rights": [dump(r) for r in held]}
        tz = self.settings.timezone
        events: list[tuple[str, Any]] = []

        def change(r: Right, validity: Validity, effective_at: datetime | None) -> Any:
            return lambda v: dump(
                AccessChange(
                    uuid=person,
                    version=v,
                    person=person,
                    role=r.role,
                    it_system=r.it_system,
                    reasons=r.reasons,
                    validity=validity,
                    rights=held,
                    effective_at=effective_at,
                )
            )

        for r in plan.granted:
            events.append(("access.granted", change(r, r.validity, None)))
        for rv in plan.revoked:
            start = rv.right.validity.from_
            validity = Validity(from_=start, to=max(rv.stop, start + domain.DAY))
            events.append(
                (
                    "access.revoked",
                    change(rv.right, validity, domain.effective_instant(rv.stop, cause.time, tz)),
                )
            )
        transitions = [plan.next_transition] if plan.next_transition else []
        for system, acc in self.account_docs.get(person, {}).items():
            if acc["state"]["status"] in ("requested", "active"):
                end = domain.window_end_after(self.org, self.cat, person, system, today)
                if end:
                    transitions.append(end)
        nta = start_of_day(min(transitions), tz) if transitions else None
        unchanged = (
            old is not None
            and not events
            and [dump(r) for r in old.held.values()] == state["rights"]
            and old.next_transition_at == nta
        )
        nothing = old is None and not events and not held and nta is None
        if not unchanged and not nothing:
            version = await self.rights.write_events(person, old.version if old else None, state, events, nta)
            ticket.wrote(self.rights.name, person)
            self.published[person] = Published(version, dict(plan.held), nta)
        await self._accounts(ticket, person, plan.held, today)
        return len(events)

    # ------------------------------------------------------------------ accounts

    async def _accounts(self, ticket: SectionTicket, person: str, held: dict[str, Right], today: date) -> None:
        systems = sorted({r.it_system for r in held.values()})
        mine = self.account_docs.setdefault(person, {})
        for system in systems:
            acc = mine.get(system)
            if acc is None:
                mine[system] = await self._request_account(ticket, person, system, today)
            elif acc["state"]["status"] in ("disabled", "deleted"):
                status, kind = (
                    ("active", "account.enabled")
                    if acc["state"]["status"] == "disabled"
                    else ("requested", "account.requested")
                )
                mine[system] = await self.accounts.update(
                    acc["_id"],
                    acc["version"],
                    Change({**acc["state"], "status": status, "disable_at": None}, kind),
                )
                ticket.wrote(self.accounts.name, acc["_id"])
        for system, acc in sorted(mine.items()):
            if system in systems or acc["state"]["status"] not in ("requested", "active"):
                continue
            if domain.window_open(self.org, self.cat, person, system, today):
                continue
            it = self.cat.it_systems.get(system)
            offboarding = it.timeline[-1].offboarding if it and it.timeline else "disable"
            status = "disabled" if offboarding == "disable" else "deleted"
            mine[system] = await self.accounts.update(
                acc["_id"],
                acc["version"],
                Change(
                    {**acc["state"], "status": status, "disable_at": today.isoformat()},
                    f"account.{status}",
                ),
            )
            ticket.wrote(self.accounts.name, acc["_id"])

    async def _request_account(self, ticket: SectionTicket, person: str, system: str, today: date) -> Doc:
        uid = account_id(person, system)
        existing = await self.accounts.get(uid)
        if existing is not None:  # written before a crash, or by a replica whose log was lost
            return existing
        it = self.cat.it_systems.get(system)
        rule = it.timeline[-1].username_rule if it and it.timeline else "{given:3}{surname:3}"
        # The freshest name this replica knows (the read model): a person event may be consumed
        # after an engagement event of the same person that it preceded.
        p = self.view_org.persons.get(person)
        ps = p.timeline[-1] if p and p.timeline else None
        base = domain.username_base(
            rule,
            ps.given_name if ps else "",
            ps.surname if ps else "",
            ps.user_key if ps else None,
            fallback="u" + person.replace("-", "")[:7],
        )
        username = await reserve_username(self.db, system, person, base)
        end = domain.window_end_after(self.org, self.cat, person, system, today)
        state = {
            "person": person,
            "it_system": system,
            "username": username,
            "status": "requested",
            "disable_at": end.isoformat() if end else None,
        }
        try:
            doc = await self.accounts.insert(uid, Change(state, "account.requested"))
        except problems.Conflict:  # the unique _id: created meanwhile
            return await self.accounts.require(uid, "account")
        ticket.wrote(self.accounts.name, uid)
        return doc

    # ------------------------------------------------------------------ mass-change guard

    async def _hold(
        self, ticket: SectionTicket, persons: list[str], plans: dict[str, domain.RightsPlan], cause: Cause
    ) -> None:
        batch = str(uuidlib.uuid4())
        entries: list[dict[str, Any]] = []
        counts: dict[tuple[str, str], int] = {}
        for p in persons:
            for rv in plans[p].revoked:
                entries.append(
                    {
                        "person": p,
                        "role": rv.right.role,
                        "it_system": rv.right.it_system,
                        "stop": rv.stop.isoformat(),
                        "validity": rv.right.validity.dump(),
                    }
                )
                counts[(rv.right.role, rv.right.it_system)] = counts.get((rv.right.role, rv.right.it_system), 0) + 1
        # Stored before the pins exist in memory: a re-read never drops a pin of a stored batch.
        await self.db["held_batches"].insert_one(
            {
                "_id": batch,
                "status": "held",
                "created_at": self.clock.now(),
                "cause": {"what": cause.what, "time": cause.time},
                "persons": len(persons),
                "revocation_count": len(entries),
                "counts": [
                    {"role": role, "it_system": system, "count": n} for (role, system), n in sorted(counts.items())
                ],
                "revocations": entries,
            }
        )
        ticket.wrote("held_batches", batch)
        for p in persons:
            plan = plans[p]
            for rv in plan.revoked:
                plan.held[rv.right.role] = rv.right
                self.pins.setdefault(p, {})[rv.right.role] = batch
            plan.held = dict(sorted(plan.held.items()))
            plan.revoked = []
        log.warning("mass revocation held", extra={"batch": batch, "persons": len(persons)})
        self._gauge()

    def _gauge(self) -> None:
        metrics.HELD_REVOCATIONS.set(sum(len(v) for v in self.pins.values()))

    async def decide(self, batch_id: str, release: bool, actor: str) -> Doc:
        return await self.in_section(lambda ticket: self._decide(ticket, batch_id, release, actor))

    async def _decide(self, ticket: SectionTicket, batch_id: str, release: bool, actor: str) -> Doc:
        col = self.db["held_batches"]
        doc = await col.find_one({"_id": batch_id})
        if doc is None:
            raise problems.not_found("held batch", batch_id)
        if doc["status"] != "held":
            raise problems.conflict(f"The batch is already {doc['status']}.", kind="batch-decided")
        status = "released" if release else "cancelled"
        decided = await col.update_one(
            {"_id": batch_id, "status": "held"},
            {"$set": {"status": status, "decided_by": actor, "decided_at": self.clock.now()}},
        )
        if decided.matched_count != 1:
            raise problems.conflict("The batch was decided meanwhile.", kind="batch-decided")
        ticket.wrote("held_batches", batch_id)
        self._put_batch({**doc, "status": status})
        if release:
            persons = sorted({e["person"] for e in doc["revocations"]})
            cause = doc.get("cause") or {}
            await self.recompute(ticket, persons, Cause(cause.get("time"), f"release {batch_id}"), guard=False)
        updated = await col.find_one({"_id": batch_id})
        assert updated is not None
        return updated

    # ------------------------------------------------------------------ catalogue writes

    def _check(self, state: BaseModel) -> None:
        """The rules a catalogue state must keep; they read the read model (every event seen here)."""
        if isinstance(state, ITSystemState):
            domain.check_it_system(state)
        elif isinstance(state, RoleState):
            domain.check_role(state, self.cat)
        elif isinstance(state, RoleGroupState):
            domain.check_role_group(state, self.cat)
        elif isinstance(state, AssignmentState):
            domain.check_assignment(state, self.view_org, self.cat)

    @staticmethod
    def _timeline(kind: Kind, doc: Doc) -> list[Any]:
        return [kind.slice_model.model_validate(s) for s in doc["state"]["timeline"]]

    def _slice(self, kind: Kind, body: SliceIn) -> Any:
        validity = body.validity.resolve(self.clock.today())
        fields = body.fields()
        if fields.get("kle"):
            fields["kle"] = self._kle(fields["kle"])
        return kind.slice_model.model_validate({**fields, "validity": validity})

    def _kle(self, ref: str) -> str:
        """A KLE class by UUID or by its number (user_key); unknown ones are left for the rules to refuse."""
        if ref in self.view_org.classes:
            return ref
        found = [c.uuid for c in self.view_org.classes.values() if c.facet == "kle" and c.timeline[-1].user_key == ref]
        return found[0] if found else ref

    async def _write(
        self,
        kind: Kind,
        uid: str,
        doc: Doc | None,
        timeline: list[Any],
        prev: dict[str, Any],
        verb: str,
        since: date,
        if_match: int | None = None,
    ) -> Written:
        """Validate the whole new state, write it if it differs, then propagate.

        All inside the ``rights`` section (any replica, one at a time): the
        rules read other aggregates from memory, which is current on entry,
        and the recomputation follows the write before another one starts.
        ``If-Match`` counts only when something changes (the same PUT twice is no change).
        ``since`` is the day the write takes effect: a writer scoped to
        subtrees must hold every unit an assignment names from then on.
        """
        domain.require_timeline(timeline, kind.what)
        repo = self.repos[kind.name]
        if kind is ASSIGNMENTS:
            old = self._timeline(kind, doc) if doc is not None else []
            auth.check_scope(self.view_org.tree, domain.assignment_units_touched(old, timeline, since), since)

        async def decide_and_write(ticket: SectionTicket) -> Written:
            fields = kind.fields(timeline, prev)
            slices = domain.with_approval_status(timeline, fields, self.cat) if kind is ASSIGNMENTS else timeline
            state = kind.state_model.model_validate(
                {
                    "uuid": uid,
                    "version": (doc["version"] + 1) if doc else 1,
                    "timeline": [dump(s) for s in slices],
                    **fields,
                }
            )
            self._check(state)
            stored = {k: v for k, v in dump(state).items() if k not in ("uuid", "version")}
            nta = next_transition_at(slices, self.clock.today(), self.settings.timezone)
            if doc is None:
                new = await repo.insert(uid, Change(stored, f"{kind.aggregate}.created", nta))
            elif _same_state(stored, doc["state"]):
                return Written(doc, False)  # idempotent: nothing changed, no event
            elif kind is ASSIGNMENTS and domain.is_rejected(doc["state"]):
                raise problems.conflict(
                    "The assignment was rejected and stays so; request a new one.", kind="assignment-rejected"
                )
            else:
                if if_match is not None and if_match != doc["version"]:
                    raise problems.precondition_failed(doc["version"], if_match)
                new = await repo.update(uid, doc["version"], Change(stored, f"{kind.aggregate}.{verb}", nta))
            await self.catalogue_written(ticket, kind.name, new)
            return Written(new, doc is None)

        return await self.in_section(decide_and_write)

    async def create(self, kind: Kind, body: SliceIn, actor: str) -> Written:
        """A new one with a UUID of ours."""
        new = self._slice(kind, body)
        prev = {"requested_by": actor} if kind is ASSIGNMENTS else {}
        return await self._write(kind, str(uuidlib.uuid4()), None, [new], prev, "created", new.validity.from_)

    async def put(self, kind: Kind, uid: str, body: SliceIn, actor: str, if_match: int | None) -> Written:
        """Create with this UUID, or set the slice over its period; the same body twice changes nothing."""
        new = self._slice(kind, body)
        doc = await self.repos[kind.name].get(uid)
        if doc is None:
            prev = {"requested_by": actor} if kind is ASSIGNMENTS else {}
            return await self._write(kind, uid, None, [new], prev, "created", new.validity.from_)
        timeline = self._timeline(kind, doc)
        if kind is ASSIGNMENTS:
            new = new.model_copy(update={"status": timeline[0].status if timeline else "active"})
        since = new.validity.from_
        return await self._write(kind, uid, doc, put(timeline, new), doc["state"], "updated", since, if_match)

    async def patch(self, kind: Kind, uid: str, body: PatchIn, if_match: int | None) -> Written:
        """Change the named fields from ``validity.from`` (default today) to ``validity.to`` (or open)."""
        doc = await self.repos[kind.name].require(uid, kind.what)
        period = body.validity.resolve(self.clock.today())
        timeline = domain.patched(self._timeline(kind, doc), period, body.changes(), kind.what)
        return await self._write(kind, uid, doc, timeline, doc["state"], "updated", period.from_, if_match)

    async def terminate(self, kind: Kind, uid: str, to: date, if_match: int | None) -> Written:
        """End from ``to``, the first day it no longer holds."""
        doc = await self.repos[kind.name].require(uid, kind.what)
        timeline = domain.terminated(self._timeline(kind, doc), to, kind.what)
        return await self._write(kind, uid, doc, timeline, doc["state"], "terminated", to, if_match)

    async def approve(self, uid: str, approver: str) -> Doc:
        """The four-eyes step: a pending assignment approved by another than its requester, then propagated."""
        repo = self.repos[ASSIGNMENTS.name]
        doc = await repo.require(uid, ASSIGNMENTS.what)
        change = Change(domain.approved(doc["state"], approver), "assignment.approved", doc.get("next_transition_at"))

        async def approve_and_recompute(ticket: SectionTicket) -> Doc:
            written = await repo.update(uid, doc["version"], change)
            await self.catalogue_written(ticket, ASSIGNMENTS.name, written)
            return written

        return await self.in_section(approve_and_recompute)

    async def reject(self, uid: str, rejecter: str, reason: str | None) -> Doc:
        """The other end of the four-eyes step: a pending request turned down, so it never grants.

        Nothing was granted while pending, so nothing is revoked; the write
        still passes the recomputation (memory, read-your-writes). No
        ``assignment.effective`` follows: the request has no future.
        """
        repo = self.repos[ASSIGNMENTS.name]
        doc = await repo.require(uid, ASSIGNMENTS.what)
        rejected = domain.rejected(doc["state"], rejecter, reason, self.clock.now())
        # Stored as every write stores a state (the model's JSON), so an unchanged PUT compares equal.
        as_model = AssignmentState.model_validate({**rejected, "uuid": uid, "version": doc["version"] + 1})
        state = {k: v for k, v in dump(as_model).items() if k not in ("uuid", "version")}
        change = Change(state, "assignment.rejected", None, note=reason)

        async def reject_and_recompute(ticket: SectionTicket) -> Doc:
            try:
                written = await repo.update(uid, doc["version"], change)
            except StaleVersion as exc:
                raise problems.conflict(f"assignment {uid} changed meanwhile; read it and try again") from exc
            await self.catalogue_written(ticket, ASSIGNMENTS.name, written)
            return written

        return await self.in_section(reject_and_recompute)

    async def exclude(self, uid: str, body: ExclusionIn, by: str, if_match: int | None) -> Written:
        """Exempt a person from an inherited assignment (a leave, a conflict of interest)."""
        doc = await self.repos[ASSIGNMENTS.name].require(uid, ASSIGNMENTS.what)
        exclusions = domain.with_exclusion(doc["state"], body.person, body.reason, by, self.view_org)
        timeline = self._timeline(ASSIGNMENTS, doc)
        prev = {**doc["state"], "exclusions": exclusions}
        return await self._write(ASSIGNMENTS, uid, doc, timeline, prev, "updated", self.clock.today(), if_match)

    async def include(self, uid: str, person: str, if_match: int | None) -> Written:
        """Undo an exclusion (none: no change)."""
        doc = await self.repos[ASSIGNMENTS.name].require(uid, ASSIGNMENTS.what)
        prev = {**doc["state"], "exclusions": domain.without_exclusion(doc["state"], person)}
        timeline = self._timeline(ASSIGNMENTS, doc)
        return await self._write(ASSIGNMENTS, uid, doc, timeline, prev, "updated", self.clock.today(), if_match)

    # ------------------------------------------------------------------ catalogue reads

    async def get(self, kind: Kind, uid: str) -> Doc:
        if self.registered_at is None:
            return await self.repos[kind.name].require(uid, kind.what)
        doc = await self.repos[kind.name].get_as_registered(uid, self.registered_at)
        if doc is None:
            raise problems.not_found(kind.what, uid)
        return doc

    async def page(self, kind: Kind, filters: dict[str, str | None], paging: Paging) -> tuple[list[Doc], str | None]:
        """A page of documents whose timeline has a slice with each given field value.

        ``status=pending`` leaves out rejected requests; ``status=rejected`` lists only those.
        """
        wanted = {key: value for key, value in filters.items() if value}
        if self.registered_at is not None:
            return await self._page_as_registered(kind, wanted, paging)
        query: dict[str, Any] = {}
        for key, value in wanted.items():
            if key == "status" and value == "rejected":
                query["state.rejected_by"] = {"$ne": None}
                continue
            if key == "status" and value == "pending":
                query["state.rejected_by"] = None
            query[f"state.timeline.{key}"] = value
        return await self.repos[kind.name].page(query, limit=paging.limit, cursor=paging.cursor)

    async def _page_as_registered(
        self, kind: Kind, wanted: dict[str, str], paging: Paging
    ) -> tuple[list[Doc], str | None]:
        """The same page, filtered in memory over every document as registered then (a full scan)."""
        instant = self.registered_at
        assert instant is not None
        after = decode_cursor(paging.cursor) if paging.cursor else ""
        found = sorted(
            [
                d
                async for d in self.repos[kind.name].scan_as_registered(instant)
                if d["_id"] > after and _matches(d["state"], wanted)
            ],
            key=lambda d: str(d["_id"]),
        )
        page = found[: paging.limit]
        return page, encode_cursor(page[-1]["_id"]) if len(found) > paging.limit else None

    async def history(self, kind: Kind, uid: str) -> History:
        return await self.repos[kind.name].full_history(uid, kind.what)

    # ------------------------------------------------------------------ effective rights (the read model)

    def _named(self, right: dict[str, Any]) -> dict[str, Any]:
        role_name, system_name = self.cat.names(right["role"], right["it_system"])
        return {**right, "role_name": role_name, "it_system_name": system_name}

    async def person_rights(self, person: str, day: date, history: bool) -> PersonRights:
        """The person's effective rights on ``day`` with reasons (``history``: every period)."""
        if not await self.person_exists(person):
            raise problems.not_found("person", person)
        rights = self.visible_rights(person)
        chosen = rights if history else list(domain.held_at(rights, day).values())
        return PersonRights(
            person=person, at=day, rights=[NamedRight.model_validate(self._named(dump(r))) for r in chosen]
        )

    async def holders(self, role: str, day: date, paging: Paging) -> Holders:
        """Who holds the role on ``day``, by person id, a cursor page at a time."""
        if role not in self.cat.roles:
            raise problems.not_found("role", role)
        candidates: set[str] = set()
        for a in self.cat.assignments_with_role(role):
            candidates |= domain.assignment_candidates(self.cat.assignments[a], self.view_org)
        after = decode_cursor(paging.cursor) if paging.cursor else ""
        items: list[Holder] = []
        for person in sorted(p for p in candidates if p > after):
            right = domain.held_at(self.visible_rights(person), day).get(role)
            if right is not None:
                items.append(Holder(person=person, validity=right.validity, reasons=right.reasons))
                if len(items) > paging.limit:
                    break
        more = len(items) > paging.limit
        items = items[: paging.limit]
        return Holders(role=role, at=day, items=items, next_cursor=encode_cursor(items[-1].person) if more else None)

    async def unit_rights(self, unit: str, day: date) -> UnitRights:
        """What being a member of the unit confers on ``day``, and who its members are."""
        org = self.view_org
        if unit not in org.units:
            raise problems.not_found("unit", unit)
        return UnitRights(
            unit=unit,
            at=day,
            ancestors=org.chain_at(unit, day)[1:],
            rights=[UnitRight.model_validate(self._named(r)) for r in domain.unit_rights(unit, day, org, self.cat)],
            members=org.members_at(unit, day),
        )

    # ------------------------------------------------------------------ accounts and held batches

    async def account_page(self, filters: dict[str, str | None], paging: Paging) -> Page[AccountState]:
        query = {f"state.{key}": value for key, value in filters.items() if value}
        docs, nxt = await self.accounts.page(query, limit=paging.limit, cursor=paging.cursor)
        return Page[AccountState](items=[_account(d) for d in docs], next_cursor=nxt)

    async def account(self, uid: str) -> AccountState:
        return _account(await self.accounts.require(uid, "account"))

    def _batch(self, doc: Doc) -> dict[str, Any]:
        out = {k: v for k, v in doc.items() if k != "_id"}
        out["id"] = doc["_id"]
        out["counts"] = [self._named(c) for c in doc.get("counts", [])]
        return out

    async def batch_page(self, status: str | None, paging: Paging) -> Page[HeldBatch]:
        docs, nxt = await paginate(
            self.db["held_batches"],
            {"status": status} if status else {},
            limit=paging.limit,
            cursor=paging.cursor,
            projection={"revocations": 0},
        )
        return Page[HeldBatch](items=[HeldBatch.model_validate(self._batch(d)) for d in docs], next_cursor=nxt)

    async def batch(self, batch_id: str) -> HeldBatchDetail:
        doc = await self.db["held_batches"].find_one({"_id": batch_id})
        if doc is None:
            raise problems.not_found("held batch", batch_id)
        return HeldBatchDetail.model_validate(self._batch(doc))

    async def decide_batch(self, batch_id: str, release: bool, actor: str) -> HeldBatch:
        """Release (the revocations go out) or cancel (they never do) a held batch, once."""
        return HeldBatch.model_validate(self._batch(await self.decide(batch_id, release, actor)))


@dataclass
class OrgEventJob:
    """A consumed org event waiting for the section; those queued together run as one batch."""

    service: AccessService
    event: CloudEvent
    data: BaseModel

    def __call__(self, ticket: SectionTicket) -> Coroutine[Any, Any, None]:
        return self.service._org_events(ticket, [(self, contextvars.copy_context())])


async def _nothing(ticket: SectionTicket) -> None:
    """A job that only enters the section (and so reconciles what a dead holder left)."""


def _maybe_half_done(exc: BaseException) -> bool:
    """A job failed by the infrastructure (not refused by a rule): it may have stored a change
    whose recomputation did not finish."""
    return not isinstance(exc, problems.Problem) or isinstance(exc, problems.Unavailable)


def _same_state(new: dict[str, Any], old: dict[str, Any]) -> bool:
    """Equal, counting a field a later version added (``None``) as equal to its absence."""
    return all(new.get(k) == old.get(k) for k in new.keys() | old.keys())


def _matches(state: dict[str, Any], wanted: dict[str, str]) -> bool:
    """A catalogue list filter on one state: some slice has each value (status: see ``page``)."""
    for key, value in wanted.items():
        if key == "status" and value == "rejected":
            if not state.get("rejected_by"):
                return False
            continue
        if key == "status" and value == "pending" and state.get("rejected_by"):
            return False
        if not any(s.get(key) == value for s in state.get("timeline", [])):
            return False
    return True


def _account(doc: Doc) -> AccountState:
    return AccountState.model_validate({"uuid": doc["_id"], "version": doc["version"], **doc["state"]})
