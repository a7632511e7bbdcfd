"""HTTP API of the registry under /api/v1: parse, call ``registry.service``, shape.

The five aggregates share one set of routes, added to ``router`` per kind by
``_add_crud``: list (``?at=``, filters, cursor), get (``?at=``), ``/history``,
POST, PUT with a client UUID (idempotent), PATCH from a date, terminate.
"""

# No ``from __future__ import annotations`` here: the CRUD routes are added per
# kind, and FastAPI must see the body and response model classes themselves.

import uuid as uuidlib
from enum import Enum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel

from orgdir import auth, problems
from orgdir.http import (
    BATCH_DOC,
    AtDay,
    BatchIn,
    BatchOperation,
    BatchOut,
    IfMatch,
    Page,
    PageQuery,
    RegisteredAt,
    ReturnMinimal,
    batch_target,
    minimal,
    prebuilt,
    run_batch,
    set_etag,
)
from orgdir.schemas import History, TerminateIn
from registry import schemas
from registry.domain import KINDS, PERSON, Kind, ceiling_of
from registry.service import Registry


async def _registry(request: Request) -> Registry:
    reg: Registry = request.app.state.registry
    return reg


async def _endpoint(request: Request) -> str:
    """``GET /api/v1/persons/{uuid}``: the route template, as the audit log records it."""
    route = request.scope.get("route")
    return f"{request.method} {getattr(route, 'path', request.url.path)}"


async def _client_uuid(uuid: str) -> str:
    """A PUT names its own UUID: it must be one (400 ``invalid-uuid``)."""
    try:
        uuidlib.UUID(uuid)
    except ValueError as exc:
        raise problems.bad_request("invalid-uuid", f"{uuid!r} is not a UUID.") from exc
    return uuid


Svc = Annotated[Registry, Depends(_registry)]
Endpoint = Annotated[str, Depends(_endpoint)]
ClientUuid = Annotated[str, Depends(_client_uuid)]

router = APIRouter(prefix="/api/v1")

# kind → (the aggregate on a day, a write's answer with the whole timeline)
RESPONSES: dict[str, tuple[type[BaseModel], type[BaseModel]]] = {
    "person": (schemas.PersonOut, schemas.PersonWritten),
    "engagement": (schemas.EngagementOut, schemas.EngagementWritten),
    "manager": (schemas.ManagerOut, schemas.ManagerWritten),
    "association": (schemas.AssociationOut, schemas.AssociationWritten),
    "leave": (schemas.LeaveOut, schemas.LeaveWritten),
}


def _add_crud(kind: Kind) -> None:
    base = f"/{kind.plural}"
    tags: list[str | Enum] = [kind.plural]
    In = kind.input
    Patch = kind.patch
    Out, Written = RESPONSES[kind.agg]

    @router.get(base, tags=tags, response_model=Page[Out], summary=f"List {kind.plural} in force on a day")  # type: ignore[valid-type]
    async def list_(
        reg: Svc,
        principal: auth.Reader,
        endpoint: Endpoint,
        day: AtDay,
        registered_at: RegisteredAt,
        paging: PageQuery,
        person: Annotated[str | None, Query()] = None,
        unit: Annotated[str | None, Query()] = None,
        engagement: Annotated[str | None, Query()] = None,
    ) -> dict[str, Any]:
        filters = {"person": person, "unit": unit, "engagement": engagement}
        reg = await reg.as_registered(registered_at)
        items, nxt = await reg.list_in_force(
            kind, day, filters, principal, endpoint, limit=paging.limit, cursor=paging.cursor
        )
        return {"items": items, "next_cursor": nxt}

    @router.post(
        base, tags=tags, status_code=201, response_model=Written, summary=f"Create a {kind.what} with a new uuid"
    )
    async def create(
        reg: Svc,
        principal: auth.ScopedWriter,
        endpoint: Endpoint,
        response: Response,
        body: In,  # type: ignore[valid-type]
    ) -> dict[str, Any]:
        agg, _ = await reg.save(kind, str(uuidlib.uuid4()), body, ceiling=ceiling_of(principal.roles))
        response.headers["Location"] = f"{router.prefix}{base}/{agg.uuid}"
        set_etag(response, agg.version)
        return await reg.written(kind, agg, principal, endpoint)

    @router.put(
        f"{base}/{{uuid}}",
        tags=tags,
        response_model=Written,
        responses={201: {"model": Written, "description": "Created"}},
        summary=f"Create or replace a {kind.what} (idempotent imports)",
    )
    async def put_(
        reg: Svc,
        principal: auth.ScopedWriter,
        endpoint: Endpoint,
        response: Response,
        uuid: ClientUuid,
        body: In,  # type: ignore[valid-type]
        if_match: IfMatch,
        return_minimal: ReturnMinimal,
    ) -> dict[str, Any] | Response:
        agg, created = await reg.save(kind, uuid, body, if_match=if_match, ceiling=ceiling_of(principal.roles))
        if return_minimal:
            return minimal(agg.version, created)
        response.status_code = 201 if created else 200
        set_etag(response, agg.version)
        return await reg.written(kind, agg, principal, endpoint)

    @router.patch(
        f"{base}/{{uuid}}",
        tags=tags,
        response_model=Written,
        summary=f"Change a {kind.what} from validity.from (default today)",
    )
    async def patch(
        reg: Svc,
        principal: auth.ScopedWriter,
        endpoint: Endpoint,
        response: Response,
        uuid: str,
        body: Patch,  # type: ignore[valid-type]
        if_match: IfMatch,
    ) -> dict[str, Any]:
        agg = await reg.patch(kind, uuid, body, if_match=if_match, ceiling=ceiling_of(principal.roles))
        set_etag(response, agg.version)
        return await reg.written(kind, agg, principal, endpoint)

    @router.post(
        f"{base}/{{uuid}}/terminate",
        tags=tags,
        response_model=Written,
        summary=f"End a {kind.what}: `to` is the first day it no longer holds (default today)",
    )
    async def terminate(
        reg: Svc,
        principal: auth.ScopedWriter,
        endpoint: Endpoint,
        response: Response,
        uuid: str,
        if_match: IfMatch,
        body: TerminateIn | None = None,
    ) -> dict[str, Any]:
        day = (body or TerminateIn()).day(reg.clock.today())
        agg = await reg.terminate(kind, uuid, day, if_match=if_match)
        set_etag(response, agg.version)
        return await reg.written(kind, agg, principal, endpoint)

    @router.get(f"{base}/{{uuid}}", tags=tags, response_model=Out, summary=f"A {kind.what} as it is on a day")
    async def get(
        reg: Svc,
        principal: auth.Reader,
        endpoint: Endpoint,
        response: Response,
        uuid: str,
        day: AtDay,
        registered_at: RegisteredAt,
    ) -> dict[str, Any]:
        out, version = await (await reg.as_registered(registered_at)).read(kind, uuid, day, principal, endpoint)
        set_etag(response, version)
        return out

    @router.get(
        f"{base}/{{uuid}}/history",
        tags=tags,
        response_model=schemas.PersonHistory if kind is PERSON else History,
        summary=f"Every slice and every registration of a {kind.what}",
    )
    async def history(reg: Svc, principal: auth.Reader, endpoint: Endpoint, response: Response, uuid: str) -> History:
        hist = await reg.history(kind, uuid, principal, endpoint)
        set_etag(response, hist.version)
        return hist


for _kind in KINDS.values():
    _add_crud(_kind)

_BY_PLURAL = {k.plural: k for k in KINDS.values()}


@router.post(
    "/batch", tags=["batch"], response_model=BatchOut, summary="Several PUTs in one request", description=BATCH_DOC
)
async def batch(reg: Svc, principal: auth.ScopedWriter, body: BatchIn) -> BatchOut:
    ceiling = ceiling_of(principal.roles)

    async def put(op: BatchOperation) -> tuple[bool, int]:
        plural, uuid = batch_target(op.path, list(_BY_PLURAL))
        kind = _BY_PLURAL[plural]
        agg, created = await reg.save(
            kind, uuid, kind.input.model_validate(op.body), if_match=op.if_match, ceiling=ceiling
        )
        return created, agg.version

    return await run_batch(body.operations, put)


@router.get(
    "/persons/{uuid}/overview",
    tags=["persons"],
    response_model=schemas.Overview,
    summary="Everything about a person on a day",
)
async def overview(
    reg: Svc, principal: auth.Reader, endpoint: Endpoint, uuid: str, day: AtDay, registered_at: RegisteredAt
) -> dict[str, Any]:
    return await (await reg.as_registered(registered_at)).person_overview(uuid, day, principal, endpoint)


@router.get(
    "/orgunits/{uuid}/people",
    tags=["orgunits"],
    response_model=Page[schemas.UnitPerson],
    summary="Who is engaged in a unit (or its subtree)",
)
async def people(
    reg: Svc,
    _: auth.Reader,
    uuid: str,
    day: AtDay,
    registered_at: RegisteredAt,
    paging: PageQuery,
    subtree: Annotated[bool, Query()] = False,
    hierarchy: Annotated[
        str | None,
        Query(
            max_length=100,
            description="Only units of this unit_hierarchy class (UUID or user_key, e.g. linje, med); "
            "default the unit's own hierarchy (422 `unknown-hierarchy` when unknown).",
        ),
    ] = None,
) -> Response:
    reg = await reg.as_registered(registered_at)
    items, nxt = reg.people_page(
        uuid, day, subtree=subtree, limit=paging.limit, cursor=paging.cursor, hierarchy=hierarchy
    )
    return prebuilt({"items": items, "next_cursor": nxt})  # a unit's 1,000 people: validating was a third


@router.get(
    "/orgunits/{uuid}/manager",
    tags=["orgunits"],
    response_model=schemas.UnitManager,
    summary="The responsible manager (inherited when vacant)",
)
async def manager(reg: Svc, _: auth.Reader, uuid: str, day: AtDay, registered_at: RegisteredAt) -> dict[str, Any]:
    return (await reg.as_registered(registered_at)).unit_manager(uuid, day)


@router.get(
    "/search",
    tags=["address book"],
    response_model=schemas.SearchResults,
    summary="Address book: names, nicknames, e-mails, phones, units",
)
async def search(
    reg: Svc,
    principal: auth.Reader,
    q: Annotated[str, Query(min_length=1, max_length=200)],
    limit: Annotated[int, Query(ge=1, le=100, description="The best matches to return.")] = 20,
) -> dict[str, Any]:
    """Secret addresses are shown only with orgdir:read:secret, and are never search terms."""
    return {"items": reg.search(q, limit, ceiling_of(principal.roles)), "next_cursor": None}


@router.get(
    "/audit",
    tags=["audit"],
    response_model=Page[schemas.AuditEntry],
    summary="Reads of person records by CPR-privileged tokens",
)
async def audit(
    reg: Svc, _: auth.Admin, paging: PageQuery, person: Annotated[str | None, Query()] = None
) -> dict[str, Any]:
    items, nxt = await reg.audit_page(person, limit=paging.limit, cursor=paging.cursor)
    return {"items": items, "next_cursor": nxt}


@router.get(
    "/projection/orgunits",
    tags=["projection"],
    response_model=Page[schemas.ProjectedUnit],
    summary="Units this service knows (from orgunits events)",
)
async def known_units(
    reg: Svc, _: auth.Reader, day: AtDay, registered_at: RegisteredAt, paging: PageQuery
) -> dict[str, Any]:
    reg = await reg.as_registered(registered_at)
    items, nxt = reg.known_units(day, limit=paging.limit, cursor=paging.cursor)
    return {"items": items, "next_cursor": nxt}


@router.get(
    "/projection/classes",
    tags=["projection"],
    response_model=Page[schemas.ProjectedClass],
    summary="Classes this service knows, by facet",
)
async def known_classes(
    reg: Svc, _: auth.Reader, paging: PageQuery, facet: Annotated[str | None, Query()] = None
) -> dict[str, Any]:
    items, nxt = reg.known_classes(facet, limit=paging.limit, cursor=paging.cursor)
    return {"items": items, "next_cursor": nxt}
