"""Change propagation: from an input change to exactly the access and account events it causes.

Every input change (an org event, a catalogue write, a day boundary) names the
persons it can affect; those are recomputed with the pure ``domain`` functions,
diffed against what was published for them (``person_rights``), and the
differences are written through the outbox. One asyncio lock serialises
recomputations in this process, so a person's diff is never computed twice at once.
"""

from __future__ import annotations

import asyncio
import logging
import uuid as uuidlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel

from access_rights import domain
from access_rights.settings import AccessRightsSettings
from access_rights.store import (
    account_id,
    dump,
    from_projection,
    from_repository,
    load_all,
    reserve_username,
)
from orgdir import metrics, problems
from orgdir.clock import Clock, start_of_day
from orgdir.contracts.access import (
    AccessChange,
    AssignmentState,
    ITSystemState,
    Right,
    RoleGroupState,
    RoleState,
)
from orgdir.contracts.orgunits import ClassState, OrgUnitState
from orgdir.contracts.registry import EngagementState, PersonState
from orgdir.events import CloudEvent
from orgdir.scheduler import EffectiveScheduler
from orgdir.service import Runtime
from orgdir.store import Change, Doc, StaleVersion
from orgdir.validity import Validity

log = logging.getLogger(__name__)

CATALOGUE_MODELS: dict[str, type[BaseModel]] = {
    "it_systems": ITSystemState,
    "roles": RoleState,
    "role_groups": RoleGroupState,
    "assignments": AssignmentState,
}


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
        self.org = domain.OrgView()
        self.cat = domain.CatalogueView()
        self.repos = {name: runtime.repository(name) for name in CATALOGUE_MODELS}
        # One write may publish several events (one per changed right): Repository.write_events.
        self.rights = runtime.repository("person_rights")
        self.accounts = runtime.repository("accounts")
        self.projections = {name: runtime.projection(name) for name in ("units", "engagements", "persons", "classes")}
        self.assignment_scheduler = EffectiveScheduler(
            self.repos["assignments"],
            "assignment",
            lambda state: list(AssignmentState.model_validate({"uuid": "x", "version": 1, **state}).timeline),
            clock,
            settings.timezone,
        )
        self.published: dict[str, Published] = {}
        self.account_docs: dict[str, dict[str, Doc]] = {}
        self.pins: dict[str, dict[str, str]] = {}
        self.lock = asyncio.Lock()
        self.username_hints: dict[str, int] = {}

    # ------------------------------------------------------------------ startup

    async def load(self) -> None:
        """Rebuild the in-memory views from the projections and repositories."""
        for doc in await load_all(self.db, "units"):
            self.org.put_unit(from_projection(OrgUnitState, doc))
            self.org.seq[doc["_id"]] = int(doc["sequence"])
        for doc in await load_all(self.db, "engagements"):
            self.org.put_engagement(from_projection(EngagementState, doc))
            self.org.seq[doc["_id"]] = int(doc["sequence"])
        for doc in await load_all(self.db, "persons"):
            self.org.persons[doc["_id"]] = from_projection(PersonState, doc)
            self.org.seq[doc["_id"]] = int(doc["sequence"])
        for doc in await load_all(self.db, "classes"):
            self.org.classes[doc["_id"]] = from_projection(ClassState, doc)
            self.org.seq[doc["_id"]] = int(doc["sequence"])
        for name, model in CATALOGUE_MODELS.items():
            for doc in await load_all(self.db, name):
                self.put_catalogue(name, from_repository(model, doc))
        for doc in await load_all(self.db, "person_rights"):
            held = {r["role"]: Right.model_validate(r) for r in doc["state"]["rights"]}
            self.published[doc["_id"]] = Published(int(doc["version"]), held, doc.get("next_transition_at"))
        for doc in await load_all(self.db, "accounts"):
            self.account_docs.setdefault(doc["state"]["person"], {})[doc["state"]["it_system"]] = doc
        async for batch in self.db["held_batches"].find({"status": "held"}):
            for entry in batch["revocations"]:
                self.pins.setdefault(entry["person"], {})[entry["role"]] = batch["_id"]
        self._gauge()

    def put_catalogue(self, name: str, state: BaseModel) -> None:
        if isinstance(state, ITSystemState):
            self.cat.it_systems[state.uuid] = state
        elif isinstance(state, RoleState):
            self.cat.roles[state.uuid] = state
        elif isinstance(state, RoleGroupState):
            self.cat.role_groups[state.uuid] = state
        elif isinstance(state, AssignmentState):
            self.cat.put_assignment(state)

    # ------------------------------------------------------------------ inputs

    async def on_unit(self, event: CloudEvent, data: OrgUnitState) -> None:
        await self.projections["units"].apply(event.subject, event.sequence, dump(data))
        if self.org.newer(event.subject, event.sequence):
            self.org.put_unit(data)
        affected = self.org.members_any_time(self.org.descendants_any_time(data.uuid))
        await self.recompute(affected, Cause(event.time, event.type))

    async def on_engagement(self, event: CloudEvent, data: EngagementState) -> None:
        await self.projections["engagements"].apply(event.subject, event.sequence, dump(data))
        old = self.org.engagements.get(data.uuid)
        if self.org.newer(event.subject, event.sequence):
            self.org.put_engagement(data)
        affected = {data.person} | ({old.person} if old else set())
        await self.recompute(affected, Cause(event.time, event.type))

    async def on_person(self, event: CloudEvent, data: PersonState) -> None:
        # In memory before the write: an engagement event handled meanwhile must
        # find the person's name for the account's username.
        if self.org.newer(event.subject, event.sequence):
            self.org.persons[data.uuid] = data
        await self.projections["persons"].apply(event.subject, event.sequence, dump(data))

    async def on_class(self, event: CloudEvent, data: ClassState) -> None:
        await self.projections["classes"].apply(event.subject, event.sequence, dump(data))
        if self.org.newer(event.subject, event.sequence):
            self.org.classes[data.uuid] = data

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

    async def catalogue_written(self, name: str, doc: Doc) -> None:
        model = CATALOGUE_MODELS[name]
        new = from_repository(model, doc)
        old: BaseModel | None = {
            "it_systems": self.cat.it_systems,
            "roles": self.cat.roles,
            "role_groups": self.cat.role_groups,
            "assignments": self.cat.assignments,
        }[name].get(new.uuid)  # type: ignore[attr-defined]
        if old is not None and old.version >= new.version:  # type: ignore[attr-defined]
            return
        self.put_catalogue(name, new)
        affected = self.affected_by(name, old, new)
        await self.recompute(affected, Cause(self.clock.now(), f"{name} write"))

    async def tick(self) -> int:
        """The day boundary job: future-dated changes grant and revoke on their day."""
        await self.assignment_scheduler.run_due()
        due = await self.rights.due(self.clock.now(), limit=1_000_000)
        return await self.recompute([d["_id"] for d in due], Cause(None, "day boundary"))

    # ------------------------------------------------------------------ recomputation

    def rights_of(self, person: str) -> list[Right]:
        return domain.compute_rights(person, self.org, self.cat)

    async def recompute(self, persons: Iterable[str], cause: Cause, *, guard: bool = True) -> int:
        """Recompute, diff and publish; returns the number of access events written."""
        wanted = sorted(set(persons))
        if not wanted:
            return 0
        async with self.lock:
            today = self.clock.today()
            plans: dict[str, tuple[list[Right], domain.RightsPlan]] = {}
            for p in wanted:
                rights = self.rights_of(p)
                old = self.published.get(p)
                plans[p] = (
                    rights,
                    domain.plan_rights(old.held if old else {}, rights, today, self.pins.get(p, {})),
                )
            revoking = [p for p in wanted if plans[p][1].revoked]
            if guard and len(revoking) > self.settings.mass_revoke_threshold:
                await self._hold(revoking, {p: plans[p][1] for p in revoking}, cause)
            sem = asyncio.Semaphore(self.settings.recompute_concurrency)

            async def one(p: str) -> int:
                async with sem:
                    return await self._apply(p, plans[p][1], cause, today)

            results = await asyncio.gather(*(one(p) for p in wanted), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]
        return sum(r for r in results if isinstance(r, int))

    async def _apply(self, person: str, plan: domain.RightsPlan, cause: Cause, today: date) -> int:
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
            try:
                version = await self.rights.write_events(person, old.version if old else None, state, events, nta)
            except StaleVersion:
                await self._reload_person(person)
                raise
            self.published[person] = Published(version, dict(plan.held), nta)
        await self._accounts(person, plan.held, today)
        return len(events)

    async def _reload_person(self, person: str) -> None:
        doc = await self.rights.get(person)
        if doc is None:
            self.published.pop(person, None)
        else:
            held = {r["role"]: Right.model_validate(r) for r in doc["state"]["rights"]}
            self.published[person] = Published(int(doc["version"]), held, doc.get("next_transition_at"))

    # ------------------------------------------------------------------ accounts

    async def _accounts(self, person: str, held: dict[str, Right], today: date) -> None:
        systems = sorted({r.it_system for r in held.values()})
        mine = self.account_docs.setdefault(person, {})
        for system in systems:
            acc = mine.get(system)
            if acc is None:
                mine[system] = await self._request_account(person, system, today)
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

    async def _request_account(self, person: str, system: str, today: date) -> Doc:
        it = self.cat.it_systems.get(system)
        rule = it.timeline[-1].username_rule if it and it.timeline else "{given:3}{surname:3}"
        p = self.org.persons.get(person)
        ps = p.timeline[-1] if p and p.timeline else None
        base = domain.username_base(
            rule,
            ps.given_name if ps else "",
            ps.surname if ps else "",
            ps.user_key if ps else None,
            fallback="u" + person.replace("-", "")[:7],
        )
        username = await reserve_username(self.db, system, person, base, self.username_hints)
        end = domain.window_end_after(self.org, self.cat, person, system, today)
        state = {
            "person": person,
            "it_system": system,
            "username": username,
            "status": "requested",
            "disable_at": end.isoformat() if end else None,
        }
        uid = account_id(person, system)
        existing = await self.accounts.get(uid)
        if existing is not None:  # written before a crash: continue from it
            return existing
        return await self.accounts.insert(uid, Change(state, "account.requested"))

    # ------------------------------------------------------------------ mass-change guard

    async def _hold(self, persons: list[str], plans: dict[str, domain.RightsPlan], cause: Cause) -> None:
        batch = str(uuidlib.uuid4())
        entries: list[dict[str, Any]] = []
        counts: dict[tuple[str, str], int] = {}
        for p in persons:
            plan = plans[p]
            for rv in plan.revoked:
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
                plan.held[rv.right.role] = rv.right
                self.pins.setdefault(p, {})[rv.right.role] = batch
            plan.held = dict(sorted(plan.held.items()))
            plan.revoked = []
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
        log.warning("mass revocation held", extra={"batch": batch, "persons": len(persons)})
        self._gauge()

    def _gauge(self) -> None:
        metrics.HELD_REVOCATIONS.set(sum(len(v) for v in self.pins.values()))

    async def decide(self, batch_id: str, release: bool, actor: str) -> Doc:
        doc = await self.db["held_batches"].find_one({"_id": batch_id})
        if doc is None:
            raise problems.not_found("held batch", batch_id)
        if doc["status"] != "held":
            raise problems.rule("batch-decided", f"The batch is already {doc['status']}.", status=409)
        persons = sorted({e["person"] for e in doc["revocations"]})
        for e in doc["revocations"]:
            pins = self.pins.get(e["person"], {})
            if pins.get(e["role"]) == batch_id:
                del pins[e["role"]]
        status = "released" if release else "cancelled"
        await self.db["held_batches"].update_one(
            {"_id": batch_id},
            {"$set": {"status": status, "decided_by": actor, "decided_at": self.clock.now()}},
        )
        self._gauge()
        if release:
            cause = doc.get("cause") or {}
            await self.recompute(persons, Cause(cause.get("time"), f"release {batch_id}"), guard=False)
        updated = await self.db["held_batches"].find_one({"_id": batch_id})
        assert updated is not None
        return updated
