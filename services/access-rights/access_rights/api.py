"""HTTP API under /api/v1: catalogue CRUD with validity and history, assignments with
approval and exclusions, effective-rights reads, accounts, and held batches.

Handlers parse, call ``AccessService`` and shape. (No ``from __future__ import
annotations``: the catalogue route factory annotates with its arguments, which
FastAPI must see as objects, not names.)
"""

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel

from access_rights.schemas import (
    AssignmentIn,
    AssignmentOut,
    AssignmentPatch,
    ExclusionIn,
    HeldBatch,
    HeldBatchDetail,
    Holders,
    ITSystemIn,
    ITSystemOut,
    ITSystemPatch,
    PatchIn,
    PersonRights,
    RejectIn,
    RoleGroupIn,
    RoleGroupOut,
    RoleGroupPatch,
    RoleIn,
    RoleOut,
    RolePatch,
    SliceIn,
    UnitRights,
    catalogue_out,
)
from access_rights.service import ASSIGNMENTS, IT_SYSTEMS, ROLE_GROUPS, ROLES, AccessService, Kind, Written
from orgdir import auth
from orgdir.contracts.access import AccountState
from orgdir.http import AtDay, IfMatch, Page, PageQuery, RegisteredAt, ReturnMinimal, minimal, set_etag
from orgdir.schemas import History, TerminateIn

router = APIRouter(prefix="/api/v1")


async def _service(request: Request) -> AccessService:
    service: AccessService = request.app.state.access
    return service


Svc = Annotated[AccessService, Depends(_service)]


def _q(what: str) -> Any:
    return Query(description=f"Only those whose timeline names this {what}.")


# ---------------------------------------------------------------------------- list filters


async def no_filters() -> dict[str, str | None]:
    return {}


async def role_filters(it_system: Annotated[str | None, _q("IT system")] = None) -> dict[str, str | None]:
    return {"it_system": it_system}


async def assignment_filters(
    person: Annotated[str | None, _q("person")] = None,
    unit: Annotated[str | None, _q("unit")] = None,
    role: Annotated[str | None, _q("role")] = None,
    role_group: Annotated[str | None, _q("role group")] = None,
    job_function: Annotated[str | None, _q("job function")] = None,
    status: Annotated[
        Literal["pending", "approved", "active", "rejected"] | None,
        Query(description="Only those with this status (`pending` leaves out rejected requests)."),
    ] = None,
) -> dict[str, str | None]:
    return {
        "person": person,
        "unit": unit,
        "role": role,
        "role_group": role_group,
        "job_function": job_function,
        "status": status,
    }


# ---------------------------------------------------------------------------- catalogue


def _written(s: AccessService, out: type[BaseModel], w: Written, response: Response) -> Any:
    if w.created:
        response.status_code = 201
    set_etag(response, w.doc["version"])
    return catalogue_out(out, w.doc, s.clock.today())


def catalogue_routes(
    kind: Kind,
    path: str,
    body_in: type[SliceIn],
    patch_in: type[PatchIn],
    out: type[BaseModel],
    filters: Callable[..., Awaitable[dict[str, str | None]]],
    scoped: bool = False,
) -> None:
    """CRUD with validity and history for one catalogue resource, on ``router``.

    ``scoped``: writes accept a writer scoped to unit subtrees (the service checks the units).
    """
    tags: list[Any] = [path]
    Who = Annotated[auth.Principal, Depends(auth.require("orgdir:write", scoped=True) if scoped else auth.write)]
    Filters = Annotated[dict[str, str | None], Depends(filters)]
    created: dict[int | str, dict[str, Any]] = {201: {"model": out, "description": "Created."}}

    @router.get(f"/{path}", tags=tags, name=f"list {path}", response_model=Page[out])  # type: ignore[valid-type]
    async def list_(
        s: Svc, day: AtDay, registered_at: RegisteredAt, paging: PageQuery, where: Filters, _: auth.Reader
    ) -> Any:
        docs, nxt = await (await s.as_registered(registered_at)).page(kind, where, paging)
        return {"items": [catalogue_out(out, d, day) for d in docs], "next_cursor": nxt}

    @router.post(f"/{path}", tags=tags, status_code=201, name=f"create {path}", response_model=out)
    async def create(s: Svc, body: body_in, response: Response, who: Who) -> Any:  # type: ignore[valid-type]
        return _written(s, out, await s.create(kind, body, who.actor), response)

    @router.put(f"/{path}/{{uid}}", tags=tags, name=f"put {path}", response_model=out, responses=created)
    async def put_(
        s: Svc, uid: str, body: body_in, response: Response, version: IfMatch, who: Who, return_minimal: ReturnMinimal  # type: ignore[valid-type]
    ) -> Any:
        """Create with this UUID, or set the slice over its period; the same body twice changes nothing."""
        w = await s.put(kind, uid, body, who.actor, version)
        if return_minimal:
            return minimal(w.doc["version"], w.created)
        return _written(s, out, w, response)

    @router.get(f"/{path}/{{uid}}", tags=tags, name=f"get {path}", response_model=out)
    async def get(s: Svc, uid: str, response: Response, day: AtDay, registered_at: RegisteredAt, _: auth.Reader) -> Any:
        doc = await (await s.as_registered(registered_at)).get(kind, uid)
        set_etag(response, doc["version"])
        return catalogue_out(out, doc, day)

    @router.get(f"/{path}/{{uid}}/history", tags=tags, name=f"history {path}", response_model=History)
    async def history(s: Svc, uid: str, _: auth.Reader) -> History:
        return await s.history(kind, uid)

    @router.patch(f"/{path}/{{uid}}", tags=tags, name=f"patch {path}", response_model=out)
    async def patch(s: Svc, uid: str, body: patch_in, response: Response, version: IfMatch, _: Who) -> Any:  # type: ignore[valid-type]
        """Change the named fields from ``validity.from`` (default today) to ``validity.to`` (or open)."""
        return _written(s, out, await s.patch(kind, uid, body, version), response)

    @router.post(f"/{path}/{{uid}}/terminate", tags=tags, name=f"terminate {path}", response_model=out)
    async def terminate(
        s: Svc, uid: str, response: Response, version: IfMatch, _: Who, body: TerminateIn | None = None
    ) -> Any:
        """End from ``to`` (the first day it no longer holds; default today)."""
        day = (body or TerminateIn()).day(s.clock.today())
        return _written(s, out, await s.terminate(kind, uid, day, version), response)


catalogue_routes(IT_SYSTEMS, "it-systems", ITSystemIn, ITSystemPatch, ITSystemOut, no_filters)
catalogue_routes(ROLES, "roles", RoleIn, RolePatch, RoleOut, role_filters)
catalogue_routes(ROLE_GROUPS, "role-groups", RoleGroupIn, RoleGroupPatch, RoleGroupOut, no_filters)
catalogue_routes(
    ASSIGNMENTS, "assignments", AssignmentIn, AssignmentPatch, AssignmentOut, assignment_filters, scoped=True
)


# ---------------------------------------------------------------------------- assignment workflow


@router.post("/assignments/{uid}/approve", tags=["assignments"], response_model=AssignmentOut)
async def approve(s: Svc, uid: str, response: Response, who: auth.Approver) -> Any:
    """Approve a pending assignment of a sensitive role (not by its requester: 403 ``self-approval``)."""
    doc = await s.approve(uid, who.actor)
    set_etag(response, doc["version"])
    return catalogue_out(AssignmentOut, doc, s.clock.today())


@router.post("/assignments/{uid}/reject", tags=["assignments"], response_model=AssignmentOut)
async def reject(s: Svc, uid: str, response: Response, who: auth.Approver, body: RejectIn | None = None) -> Any:
    """Reject a pending assignment: it never grants anything (409 ``not-pending`` otherwise; not by its
    requester: 403 ``self-approval``). Published as ``assignment.rejected``; ``rejected_by`` says so."""
    doc = await s.reject(uid, who.actor, (body or RejectIn()).reason)
    set_etag(response, doc["version"])
    return catalogue_out(AssignmentOut, doc, s.clock.today())


@router.post("/assignments/{uid}/exclusions", tags=["assignments"], response_model=AssignmentOut)
async def exclude(
    s: Svc, uid: str, body: ExclusionIn, response: Response, version: IfMatch, who: auth.ScopedWriter
) -> Any:
    """Exempt a person from a unit or job-function assignment."""
    return _written(s, AssignmentOut, await s.exclude(uid, body, who.actor, version), response)


@router.delete("/assignments/{uid}/exclusions/{person}", tags=["assignments"], response_model=AssignmentOut)
async def include(s: Svc, uid: str, person: str, response: Response, version: IfMatch, _: auth.ScopedWriter) -> Any:
    """Undo an exclusion."""
    return _written(s, AssignmentOut, await s.include(uid, person, version), response)


# ---------------------------------------------------------------------------- effective rights


@router.get("/persons/{uid}/rights", tags=["rights"])
async def person_rights(
    s: Svc, uid: str, day: AtDay, registered_at: RegisteredAt, _: auth.Reader, history: bool = False
) -> PersonRights:
    """The person's effective rights on ``at`` with reasons (``history=true``: all periods), as registered
    at ``registered_at`` (default: now)."""
    return await (await s.as_registered(registered_at)).person_rights(uid, day, history)


@router.get("/roles/{uid}/holders", tags=["rights"])
async def holders(
    s: Svc, uid: str, day: AtDay, registered_at: RegisteredAt, paging: PageQuery, _: auth.Reader
) -> Holders:
    """Who holds the role on ``at``, and why (as registered at ``registered_at``)."""
    return await (await s.as_registered(registered_at)).holders(uid, day, paging)


@router.get("/orgunits/{uid}/rights", tags=["rights"])
async def unit_rights(s: Svc, uid: str, day: AtDay, registered_at: RegisteredAt, _: auth.Reader) -> UnitRights:
    """What being a member of the unit confers on ``at``, and who its members are (as registered at
    ``registered_at``)."""
    return await (await s.as_registered(registered_at)).unit_rights(uid, day)


# ---------------------------------------------------------------------------- accounts


@router.get("/accounts", tags=["accounts"])
async def accounts(
    s: Svc,
    paging: PageQuery,
    _: auth.Reader,
    person: str | None = None,
    it_system: str | None = None,
    status: Literal["requested", "active", "disabled", "deleted"] | None = None,
) -> Page[AccountState]:
    return await s.account_page({"person": person, "it_system": it_system, "status": status}, paging)


@router.get("/accounts/{uid}", tags=["accounts"])
async def account(s: Svc, uid: str, response: Response, _: auth.Reader) -> AccountState:
    found = await s.account(uid)
    set_etag(response, found.version)
    return found


# ---------------------------------------------------------------------------- held batches


@router.get("/held-batches", tags=["held batches"])
async def batches(
    s: Svc, paging: PageQuery, _: auth.Reader, status: Literal["held", "released", "cancelled"] | None = None
) -> Page[HeldBatch]:
    return await s.batch_page(status, paging)


@router.get("/held-batches/{bid}", tags=["held batches"])
async def batch(s: Svc, bid: str, _: auth.Reader) -> HeldBatchDetail:
    return await s.batch(bid)


@router.post("/held-batches/{bid}/release", tags=["held batches"])
async def release(s: Svc, bid: str, who: auth.Admin) -> HeldBatch:
    """The held revocations go out."""
    return await s.decide_batch(bid, True, who.actor)


@router.post("/held-batches/{bid}/cancel", tags=["held batches"])
async def cancel(s: Svc, bid: str, who: auth.Admin) -> HeldBatch:
    """The held revocations never go out; the rights stay."""
    return await s.decide_batch(bid, False, who.actor)
