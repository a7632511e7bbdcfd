"""HTTP API under /api/v1: catalogue CRUD with validity and history, assignments with
approval and exclusions, effective-rights reads, accounts, and held batches."""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from pydantic import BaseModel, ValidationError

from access_rights import domain
from access_rights.engine import AccessService
from access_rights.store import dump
from orgdir import auth, problems
from orgdir.contracts.access import (
    AssignmentSlice,
    AssignmentState,
    ITSystemSlice,
    ITSystemState,
    RoleGroupSlice,
    RoleGroupState,
    RoleSlice,
    RoleState,
)
from orgdir.http import if_match, parse_day, set_etag
from orgdir.scheduler import next_transition_at
from orgdir.store import Change, Doc, Repository, SectionTicket, decode_cursor, encode_cursor, paginate
from orgdir.validity import SliceBase, Validity, apply, at, put, truncate

LIMIT = Query(50, ge=1, le=500)


def parse(model: type[Any], body: Any) -> Any:
    """Validate into ``model``; errors become the same 422 problem FastAPI gives."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        errors = [
            {
                "field": ".".join(str(p) for p in e["loc"]) or "body",
                "message": e["msg"],
                "code": e["type"],
            }
            for e in exc.errors()
        ]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        raise problems.Problem(422, "validation-error", "Invalid request", detail, errors=errors) from exc


@dataclass
class Kind:
    """One catalogue resource: its collection, event prefix, models and rules."""

    name: str
    path: str
    aggregate: str
    what: str
    slice_model: type[SliceBase]
    state_model: type[BaseModel]
    validate: Callable[[BaseModel], None]
    extra: Callable[[list[Any], dict[str, Any]], dict[str, Any]]
    patchable: frozenset[str] | None = None


def _state(kind: Kind, uid: str, version: int, timeline: list[Any], extra: dict[str, Any]) -> BaseModel:
    return parse(
        kind.state_model,
        {"uuid": uid, "version": version, "timeline": [dump(s) for s in timeline], **extra},
    )


def _stored(state: BaseModel) -> dict[str, Any]:
    return {k: v for k, v in dump(state).items() if k not in ("uuid", "version")}


def _out(doc: Doc, day: date, kind: Kind) -> dict[str, Any]:
    state = parse(kind.state_model, {"uuid": doc["_id"], "version": doc["version"], **doc["state"]})
    current = at(state.timeline, day)
    return {**dump(state), "current": dump(current) if current else None}


def build_router(service: AccessService) -> APIRouter:
    router = APIRouter(prefix="/api/v1")
    # Reads and validation take every org event this replica has seen (the read model).
    org, cat, clock = service.view_org, service.cat, service.clock

    def today() -> date:
        return clock.today()

    def check_it_system(state: BaseModel) -> None:
        assert isinstance(state, ITSystemState)
        for s in state.timeline:
            domain.check_username_rule(s.username_rule)

    def check_role(state: BaseModel) -> None:
        assert isinstance(state, RoleState)
        if len({s.it_system for s in state.timeline}) > 1:
            raise problems.rule("it-system-fixed", "A role belongs to one IT system for its whole life.")
        domain.check_role(state.timeline, cat)

    def check_group(state: BaseModel) -> None:
        assert isinstance(state, RoleGroupState)
        domain.check_role_group(state.timeline, cat)

    def check_assignment(state: BaseModel) -> None:
        assert isinstance(state, AssignmentState)
        domain.check_assignment(state, org, cat)

    def role_extra(timeline: list[Any], prev: dict[str, Any]) -> dict[str, Any]:
        return {"it_system": timeline[-1].it_system if timeline else prev.get("it_system", "")}

    def assignment_extra(timeline: list[Any], prev: dict[str, Any]) -> dict[str, Any]:
        return {
            "target": domain.assignment_target(timeline[0]) if timeline else prev.get("target", "person"),
            "requested_by": prev.get("requested_by"),
            "approved_by": prev.get("approved_by"),
            "exclusions": prev.get("exclusions", []),
        }

    kinds = [
        Kind(
            "it_systems",
            "it-systems",
            "it_system",
            "IT system",
            ITSystemSlice,
            ITSystemState,
            check_it_system,
            lambda t, p: {},
        ),
        Kind("roles", "roles", "role", "role", RoleSlice, RoleState, check_role, role_extra),
        Kind(
            "role_groups",
            "role-groups",
            "role_group",
            "role group",
            RoleGroupSlice,
            RoleGroupState,
            check_group,
            lambda t, p: {},
        ),
        Kind(
            "assignments",
            "assignments",
            "assignment",
            "assignment",
            AssignmentSlice,
            AssignmentState,
            check_assignment,
            assignment_extra,
            frozenset({"inherit"}),
        ),
    ]

    def with_status(kind: Kind, timeline: list[Any], extra: dict[str, Any]) -> list[Any]:
        """Person assignments of sensitive roles wait for approval; the status spans all slices."""
        if kind.name != "assignments":
            return timeline
        sensitive = extra.get("target") == "person" and any(domain.is_sensitive(s, cat) for s in timeline)
        status = "active"
        if sensitive:
            status = "approved" if extra.get("approved_by") else "pending"
        return [s.model_copy(update={"status": status}) for s in timeline]

    async def write(
        kind: Kind,
        repo: Repository,
        uid: str,
        doc: Doc | None,
        timeline: list[Any],
        extra: dict[str, Any],
        verb: str,
        request: Request,
        response: Response,
    ) -> dict[str, Any]:
        """Validate the whole new state, write it if it differs, then propagate.

        All inside the ``rights`` section (any replica, one at a time): the
        rules read other aggregates from memory, which is current on entry,
        and the recomputation follows the write before another one starts.
        """
        if not timeline:
            raise problems.rule("empty-timeline", f"The {kind.what} would have no validity left.")

        async def decide_and_write(ticket: SectionTicket) -> tuple[Doc, bool]:
            full_extra = kind.extra(timeline, extra)
            slices = with_status(kind, timeline, full_extra)
            state = _state(kind, uid, (doc["version"] + 1) if doc else 1, slices, full_extra)
            kind.validate(state)
            stored = _stored(state)
            nta = next_transition_at(slices, today(), service.settings.timezone)
            if doc is None:
                new = await repo.insert(uid, Change(stored, f"{kind.aggregate}.created", nta))
            elif stored == doc["state"]:
                return doc, False  # idempotent: nothing changed, no event
            else:
                expected = if_match(request)
                if expected is not None and expected != doc["version"]:
                    raise problems.precondition_failed(doc["version"], expected)
                new = await repo.update(uid, doc["version"], Change(stored, f"{kind.aggregate}.{verb}", nta))
            await service.catalogue_written(ticket, kind.name, new)
            return new, True

        written, changed = await service.in_section(decide_and_write)
        if changed and doc is None:
            response.status_code = 201
        set_etag(response, written["version"])
        return _out(written, today(), kind)

    def slice_body(kind: Kind, body: dict[str, Any], principal: auth.Principal) -> Any:
        body = dict(body)
        if kind.name == "assignments" and "status" in body:
            raise problems.rule("status-by-approval", "The status is set by the approval workflow.")
        return parse(kind.slice_model, body)

    for kind in kinds:
        register(router, service, kind, write, slice_body)

    # ------------------------------------------------------------------ assignment workflow

    repo_a = service.repos["assignments"]
    kind_a = kinds[3]

    @router.post("/assignments/{uid}/approve", tags=["assignments"])
    async def approve(
        uid: str,
        request: Request,
        response: Response,
        principal: auth.Principal = Depends(auth.require("orgdir:approve")),
    ) -> dict[str, Any]:
        doc = await repo_a.require(uid, "assignment")
        state = doc["state"]
        if state.get("requested_by") == principal.subject:
            raise problems.Problem(
                403,
                "self-approval",
                "Self-approval",
                "The requester cannot approve their own assignment.",
            )
        if not state["timeline"] or state["timeline"][0].get("status") != "pending":
            raise problems.rule("not-pending", "Only a pending assignment can be approved.", status=409)
        timeline = [{**s, "status": "approved"} for s in state["timeline"]]
        new = {**state, "timeline": timeline, "approved_by": principal.subject}
        change = Change(new, "assignment.approved", doc.get("next_transition_at"))

        async def approve_and_recompute(ticket: SectionTicket) -> Doc:
            written = await repo_a.update(uid, doc["version"], change)
            await service.catalogue_written(ticket, "assignments", written)
            return written

        written = await service.in_section(approve_and_recompute)
        set_etag(response, written["version"])
        return _out(written, today(), kind_a)

    @router.post("/assignments/{uid}/exclusions", tags=["assignments"])
    async def exclude(
        uid: str,
        request: Request,
        response: Response,
        body: dict[str, Any] = Body(...),
        principal: auth.Principal = Depends(auth.write),
    ) -> dict[str, Any]:
        ex = parse(ExclusionIn, body)
        doc = await repo_a.require(uid, "assignment")
        if doc["state"]["target"] == "person":
            raise problems.rule("not-inherited", "Only unit and job-function assignments have exclusions.")
        if not org.person_known(ex.person):
            raise domain.unknown("person", ex.person)
        others = [x for x in doc["state"].get("exclusions", []) if x.get("person") != ex.person]
        exclusions = sorted(
            [*others, {"person": ex.person, "reason": ex.reason, "by": principal.subject}],
            key=lambda x: x["person"],
        )
        timeline = [AssignmentSlice.model_validate(s) for s in doc["state"]["timeline"]]
        return await write(
            kind_a,
            repo_a,
            uid,
            doc,
            timeline,
            {**doc["state"], "exclusions": exclusions},
            "updated",
            request,
            response,
        )

    @router.delete("/assignments/{uid}/exclusions/{person}", tags=["assignments"])
    async def include(
        uid: str,
        person: str,
        request: Request,
        response: Response,
        principal: auth.Principal = Depends(auth.write),
    ) -> dict[str, Any]:
        doc = await repo_a.require(uid, "assignment")
        exclusions = [x for x in doc["state"].get("exclusions", []) if x.get("person") != person]
        timeline = [AssignmentSlice.model_validate(s) for s in doc["state"]["timeline"]]
        return await write(
            kind_a,
            repo_a,
            uid,
            doc,
            timeline,
            {**doc["state"], "exclusions": exclusions},
            "updated",
            request,
            response,
        )

    # ------------------------------------------------------------------ effective rights

    def named(r: dict[str, Any]) -> dict[str, Any]:
        role = cat.roles.get(r["role"])
        system = cat.it_systems.get(r["it_system"])
        rs = role.timeline[-1] if role and role.timeline else None
        ss = system.timeline[-1] if system and system.timeline else None
        return {
            **r,
            "role_name": rs.name if rs else None,
            "it_system_name": ss.name if ss else None,
        }

    @router.get("/persons/{uid}/rights", tags=["rights"])
    async def person_rights(
        uid: str,
        at_: str | None = Query(None, alias="at"),
        history: bool = False,
        _: auth.Principal = Depends(auth.read),
    ) -> dict[str, Any]:
        """The person's effective rights on ``at`` with reasons (``history=true``: all periods)."""
        day = parse_day(at_, today())
        if not await service.person_exists(uid):
            raise problems.not_found("person", uid)
        rights = service.visible_rights(uid)
        chosen = rights if history else list(domain.held_at(rights, day).values())
        return {"person": uid, "at": day.isoformat(), "rights": [named(dump(r)) for r in chosen]}

    @router.get("/roles/{uid}/holders", tags=["rights"])
    async def holders(
        uid: str,
        at_: str | None = Query(None, alias="at"),
        limit: int = LIMIT,
        cursor: str | None = None,
        _: auth.Principal = Depends(auth.read),
    ) -> dict[str, Any]:
        day = parse_day(at_, today())
        if uid not in cat.roles:
            raise problems.not_found("role", uid)
        candidates: set[str] = set()
        for a in cat.assignments_with_role(uid):
            candidates |= domain.assignment_candidates(cat.assignments[a], org)
        after = decode_cursor(cursor) if cursor else ""
        items: list[dict[str, Any]] = []
        for person in sorted(p for p in candidates if p > after):
            right = domain.held_at(service.visible_rights(person), day).get(uid)
            if right is not None:
                items.append(
                    {
                        "person": person,
                        "validity": right.validity.dump(),
                        "reasons": [dump(r) for r in right.reasons],
                    }
                )
                if len(items) > limit:
                    break
        more = len(items) > limit
        items = items[:limit]
        return {
            "role": uid,
            "at": day.isoformat(),
            "items": items,
            "next_cursor": encode_cursor(items[-1]["person"]) if more else None,
        }

    @router.get("/orgunits/{uid}/rights", tags=["rights"])
    async def unit_rights(
        uid: str, at_: str | None = Query(None, alias="at"), _: auth.Principal = Depends(auth.read)
    ) -> dict[str, Any]:
        """What being a member of the unit confers on ``at``, and who its members are."""
        day = parse_day(at_, today())
        if uid not in org.units:
            raise problems.not_found("unit", uid)
        members = sorted(
            {
                org.engagements[e].person
                for e in org.eng_by_unit.get(uid, ())
                if (s := at(org.engagements[e].timeline, day)) is not None and s.unit == uid
            }
        )
        rights = [named(r) for r in domain.unit_rights(uid, day, org, cat)]
        return {
            "unit": uid,
            "at": day.isoformat(),
            "ancestors": org.chain_at(uid, day)[1:],
            "rights": rights,
            "members": members,
        }

    # ------------------------------------------------------------------ accounts

    @router.get("/accounts", tags=["accounts"])
    async def accounts(
        person: str | None = None,
        it_system: str | None = None,
        status: str | None = None,
        limit: int = LIMIT,
        cursor: str | None = None,
        _: auth.Principal = Depends(auth.read),
    ) -> dict[str, Any]:
        query: dict[str, Any] = {}
        for key, value in (("person", person), ("it_system", it_system), ("status", status)):
            if value:
                query[f"state.{key}"] = value
        docs, nxt = await service.accounts.page(query, limit=limit, cursor=cursor)
        return {
            "items": [{"uuid": d["_id"], "version": d["version"], **d["state"]} for d in docs],
            "next_cursor": nxt,
        }

    @router.get("/accounts/{uid}", tags=["accounts"])
    async def account(uid: str, response: Response, _: auth.Principal = Depends(auth.read)) -> dict[str, Any]:
        d = await service.accounts.require(uid, "account")
        set_etag(response, d["version"])
        return {"uuid": d["_id"], "version": d["version"], **d["state"]}

    # ------------------------------------------------------------------ held batches

    def batch_out(d: Doc, full: bool = False) -> dict[str, Any]:
        out = {k: v for k, v in d.items() if k not in ("_id", "revocations")}
        out["id"] = d["_id"]
        out["counts"] = [named(c) for c in d.get("counts", [])]
        if full:
            out["revocations"] = d.get("revocations", [])
        return out

    @router.get("/held-batches", tags=["held batches"])
    async def batches(
        status: str | None = None,
        limit: int = LIMIT,
        cursor: str | None = None,
        _: auth.Principal = Depends(auth.read),
    ) -> dict[str, Any]:
        docs, nxt = await paginate(
            service.db["held_batches"],
            {"status": status} if status else {},
            limit=limit,
            cursor=cursor,
            projection={"revocations": 0},
        )
        return {"items": [batch_out(d) for d in docs], "next_cursor": nxt}

    @router.get("/held-batches/{bid}", tags=["held batches"])
    async def batch(bid: str, _: auth.Principal = Depends(auth.read)) -> dict[str, Any]:
        d = await service.db["held_batches"].find_one({"_id": bid})
        if d is None:
            raise problems.not_found("held batch", bid)
        return batch_out(d, full=True)

    @router.post("/held-batches/{bid}/release", tags=["held batches"])
    async def release(bid: str, principal: auth.Principal = Depends(auth.admin)) -> dict[str, Any]:
        return batch_out(await service.decide(bid, True, principal.subject))

    @router.post("/held-batches/{bid}/cancel", tags=["held batches"])
    async def cancel(bid: str, principal: auth.Principal = Depends(auth.admin)) -> dict[str, Any]:
        return batch_out(await service.decide(bid, False, principal.subject))

    return router


class ExclusionIn(BaseModel):
    person: str
    reason: str


class TerminateIn(BaseModel):
    to: date | None = None


def register(router: APIRouter, service: AccessService, kind: Kind, write: Any, slice_body: Any) -> None:
    """CRUD with validity and history for one catalogue resource."""
    repo = service.repos[kind.name]
    clock = service.clock
    tags: list[str | Any] = [kind.path]
    path = f"/{kind.path}"

    @router.get(path, tags=tags, name=f"list {kind.path}")
    async def list_(
        request: Request,
        at_: str | None = Query(None, alias="at"),
        limit: int = LIMIT,
        cursor: str | None = None,
        _: auth.Principal = Depends(auth.read),
    ) -> dict[str, Any]:
        day = parse_day(at_, clock.today())
        query: dict[str, Any] = {}
        for key in ("person", "unit", "role", "role_group", "job_function", "it_system", "status"):
            value = request.query_params.get(key)
            if value:
                query[f"state.timeline.{key}"] = value
        docs, nxt = await repo.page(query, limit=limit, cursor=cursor)
        return {"items": [_out(d, day, kind) for d in docs], "next_cursor": nxt}

    @router.post(path, tags=tags, status_code=201, name=f"create {kind.path}")
    async def create(
        request: Request,
        response: Response,
        body: dict[str, Any] = Body(...),
        principal: auth.Principal = Depends(auth.write),
    ) -> dict[str, Any]:
        new = slice_body(kind, body, principal)
        extra = {"requested_by": principal.subject} if kind.name == "assignments" else {}
        return await write(kind, repo, str(uuidlib.uuid4()), None, [new], extra, "created", request, response)

    @router.put(f"{path}/{{uid}}", tags=tags, name=f"put {kind.path}")
    async def put_(
        uid: str,
        request: Request,
        response: Response,
        body: dict[str, Any] = Body(...),
        principal: auth.Principal = Depends(auth.write),
    ) -> dict[str, Any]:
        """Create with this UUID, or set the slice over its period; same body twice: no change."""
        new = slice_body(kind, body, principal)
        doc = await repo.get(uid)
        if doc is None:
            extra = {"requested_by": principal.subject} if kind.name == "assignments" else {}
            return await write(kind, repo, uid, None, [new], extra, "created", request, response)
        timeline = _timeline(kind, doc)
        if kind.name == "assignments":
            new = new.model_copy(update={"status": timeline[0].status if timeline else "active"})
        return await write(kind, repo, uid, doc, put(timeline, new), doc["state"], "updated", request, response)

    @router.get(f"{path}/{{uid}}", tags=tags, name=f"get {kind.path}")
    async def get(
        uid: str,
        response: Response,
        at_: str | None = Query(None, alias="at"),
        _: auth.Principal = Depends(auth.read),
    ) -> dict[str, Any]:
        doc = await repo.require(uid, kind.what)
        set_etag(response, doc["version"])
        return _out(doc, parse_day(at_, clock.today()), kind)

    @router.get(f"{path}/{{uid}}/history", tags=tags, name=f"history {kind.path}")
    async def history(uid: str, _: auth.Principal = Depends(auth.read)) -> dict[str, Any]:
        await repo.require(uid, kind.what)
        return {
            "items": [
                {
                    k: h.get(k)
                    for k in (
                        "version",
                        "registered_at",
                        "registered_by",
                        "event_type",
                        "note",
                        "state",
                    )
                }
                for h in await repo.history(uid)
            ]
        }

    @router.patch(f"{path}/{{uid}}", tags=tags, name=f"patch {kind.path}")
    async def patch(
        uid: str,
        request: Request,
        response: Response,
        body: dict[str, Any] = Body(...),
        _: auth.Principal = Depends(auth.write),
    ) -> dict[str, Any]:
        """Change fields from ``validity.from`` (default today) to ``validity.to`` (or open)."""
        doc = await repo.require(uid, kind.what)
        raw = dict(body.get("validity") or {})
        period = parse(Validity, {"from": raw.get("from") or clock.today().isoformat(), "to": raw.get("to")})
        changes = {k: v for k, v in body.items() if k != "validity"}
        allowed = kind.patchable or frozenset(kind.slice_model.model_fields) - {"validity"}
        bad = sorted(set(changes) - allowed)
        if bad:
            raise problems.rule("not-patchable", f"These fields cannot be changed here: {bad}.", fields=bad)
        timeline = _timeline(kind, doc)
        if not any(s.validity.overlaps(period) for s in timeline):
            raise problems.rule("not-active", f"The {kind.what} does not exist in that period.")
        try:
            new_timeline = apply(timeline, period, changes)
        except ValidationError as exc:
            detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
            raise problems.Problem(422, "validation-error", "Invalid request", detail) from exc
        return await write(kind, repo, uid, doc, new_timeline, doc["state"], "updated", request, response)

    @router.post(f"{path}/{{uid}}/terminate", tags=tags, name=f"terminate {kind.path}")
    async def terminate(
        uid: str,
        request: Request,
        response: Response,
        body: dict[str, Any] | None = Body(None),
        _: auth.Principal = Depends(auth.write),
    ) -> dict[str, Any]:
        """End from ``to`` (the first day it no longer holds; default today)."""
        t = parse(TerminateIn, body or {})
        day = t.to or clock.today()
        doc = await repo.require(uid, kind.what)
        timeline = _timeline(kind, doc)
        new_timeline = truncate(timeline, day)
        if not new_timeline:
            raise problems.rule("terminate-before-start", f"{day} is not after the {kind.what}'s first day.")
        return await write(kind, repo, uid, doc, new_timeline, doc["state"], "terminated", request, response)


def _timeline(kind: Kind, doc: Doc) -> list[Any]:
    return [kind.slice_model.model_validate(s) for s in doc["state"]["timeline"]]
