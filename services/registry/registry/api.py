"""HTTP API of the registry under /api/v1.

The five aggregates share one set of routes built by ``crud_router``:
list (``?at=``, filters, cursor), get (``?at=``), ``/history``, POST, PUT
with a client UUID (idempotent), PATCH from a date, terminate from a date.
"""

# No ``from __future__ import annotations`` here: the CRUD routes are built per
# kind, and FastAPI must see the body model classes themselves, not strings.

import uuid as uuidlib
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response

from orgdir import auth, problems
from orgdir.http import if_match, parse_day, set_etag
from orgdir.validity import at, periods
from registry import domain
from registry.domain import KINDS, PERSON, Kind
from registry.service import Registry, not_in_force
from registry.store import page_filtered, page_of

READ_CPR = "orgdir:read:cpr"


def registry_of(request: Request) -> Registry:
    reg: Registry = request.app.state.registry
    return reg


def _route(request: Request) -> str:
    route = request.scope.get("route")
    return f"{request.method} {getattr(route, 'path', request.url.path)}"


async def audited(request: Request, principal: auth.Principal, persons: list[str]) -> bool:
    """Record the read when the caller may see CPR numbers; returns whether to reveal them."""
    if not principal.has(READ_CPR):
        return False
    reg = registry_of(request)
    await reg.audit.record(actor=principal.subject, persons=persons, endpoint=_route(request), when=reg.clock.now())
    return True


def crud_router(kind: Kind) -> APIRouter:
    router = APIRouter(prefix=f"/api/v1/{kind.plural}", tags=[kind.plural])
    In = kind.input
    Patch = kind.patch
    base = f"/api/v1/{kind.plural}"

    async def respond(
        request: Request,
        response: Response,
        principal: auth.Principal,
        agg: Any,
        status: int | None = None,
    ) -> dict[str, Any]:
        reg = registry_of(request)
        today = reg.clock.today()
        s = at(agg.timeline, today) or (agg.timeline[-1] if agg.timeline else None)
        reveal = await audited(request, principal, [agg.uuid]) if kind is PERSON else False
        set_etag(response, agg.version)
        if status:
            response.status_code = status
        out = reg.render(kind, agg, s, reveal_cpr=reveal) if s else {"uuid": agg.uuid, "version": agg.version}
        out["timeline"] = [x.model_dump(mode="json", by_alias=True) for x in agg.timeline]
        return out

    @router.get("", summary=f"List {kind.plural} in force on a day")
    async def list_(
        request: Request,
        at_: str | None = Query(None, alias="at"),
        person: str | None = Query(None),
        unit: str | None = Query(None),
        engagement: str | None = Query(None),
        limit: int = Query(50, ge=1, le=500),
        cursor: str | None = Query(None),
        principal: auth.Principal = Depends(auth.read),
    ) -> dict[str, Any]:
        reg = registry_of(request)
        day = parse_day(at_, reg.clock.today())
        mem = reg.memory
        filters = {"person": person, "unit": unit, "engagement": engagement}
        for name, value in filters.items():
            if value is not None and name not in kind.filters:
                raise problems.Problem(
                    400,
                    "invalid-filter",
                    "Invalid filter",
                    f"{kind.plural} cannot be filtered by {name}.",
                )
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
        reveal = await audited(request, principal, chunk) if kind is PERSON else False
        items = []
        for u in chunk:
            s = at(aggs[u].timeline, day)
            assert s is not None
            items.append(reg.render(kind, aggs[u], s, reveal_cpr=reveal))
        return {"items": items, "next_cursor": nxt}

    @router.post("", status_code=201, summary=f"Create a {kind.what} with a new uuid")
    async def create(
        request: Request,
        response: Response,
        body: In,  # type: ignore[valid-type]
        principal: auth.Principal = Depends(auth.write),
    ) -> dict[str, Any]:
        agg, _ = await registry_of(request).save(kind, str(uuidlib.uuid4()), body)
        response.headers["Location"] = f"{base}/{agg.uuid}"
        return await respond(request, response, principal, agg)

    @router.put("/{uuid}", summary=f"Create or replace a {kind.what} (idempotent imports)")
    async def put_(
        request: Request,
        response: Response,
        uuid: str,
        body: In,  # type: ignore[valid-type]
        principal: auth.Principal = Depends(auth.write),
    ) -> dict[str, Any]:
        _check_uuid(uuid)
        agg, created = await registry_of(request).save(kind, uuid, body, if_match=if_match(request))
        return await respond(request, response, principal, agg, 201 if created else 200)

    @router.patch("/{uuid}", summary=f"Change a {kind.what} from validity.from (default today)")
    async def patch(
        request: Request,
        response: Response,
        uuid: str,
        body: Patch,  # type: ignore[valid-type]
        principal: auth.Principal = Depends(auth.write),
    ) -> dict[str, Any]:
        agg = await registry_of(request).patch(kind, uuid, body, if_match=if_match(request))
        return await respond(request, response, principal, agg)

    @router.post(
        "/{uuid}/terminate",
        summary=f"End a {kind.what} from a date (the first day it no longer holds)",
    )
    async def terminate(
        request: Request,
        response: Response,
        uuid: str,
        body: domain.Terminate | None = None,
        principal: auth.Principal = Depends(auth.write),
    ) -> dict[str, Any]:
        reg = registry_of(request)
        day = (body or domain.Terminate()).day(reg.clock.today())
        agg = await reg.terminate(kind, uuid, day, if_match=if_match(request))
        return await respond(request, response, principal, agg)

    @router.get("/{uuid}", summary=f"A {kind.what} as it is on a day")
    async def get(
        request: Request,
        response: Response,
        uuid: str,
        at_: str | None = Query(None, alias="at"),
        principal: auth.Principal = Depends(auth.read),
    ) -> dict[str, Any]:
        reg = registry_of(request)
        day = parse_day(at_, reg.clock.today())
        agg = reg.memory.get(kind.agg, uuid)
        if agg is None:
            raise problems.not_found(kind.what, uuid)
        s = at(agg.timeline, day)
        if s is None:
            raise not_in_force(kind.what, uuid, day, agg)
        reveal = await audited(request, principal, [uuid]) if kind is PERSON else False
        set_etag(response, agg.version)
        return reg.render(kind, agg, s, reveal_cpr=reveal)

    @router.get("/{uuid}/history", summary=f"Every slice and every registration of a {kind.what}")
    async def history(
        request: Request,
        response: Response,
        uuid: str,
        principal: auth.Principal = Depends(auth.read),
    ) -> dict[str, Any]:
        reg = registry_of(request)
        doc = await reg.repos[kind.agg].get_full(uuid)
        if doc is None:
            raise problems.not_found(kind.what, uuid)
        out: dict[str, Any] = {
            "uuid": uuid,
            "version": doc["version"],
            "timeline": doc["state"].get("timeline", []),
            "registrations": [
                {k: r.get(k) for k in ("version", "registered_at", "registered_by", "event_type", "note")}
                for r in doc.get("registrations", [])
            ],
        }
        if kind is PERSON:
            reveal = await audited(request, principal, [uuid])
            cpr = doc["state"].get("cpr")
            out["has_cpr"] = bool(cpr)
            out["cpr"] = domain.format_cpr(cpr, reveal=reveal) if cpr else None
        set_etag(response, doc["version"])
        return out

    return router


def _check_uuid(value: str) -> None:
    try:
        uuidlib.UUID(value)
    except ValueError as exc:
        raise problems.Problem(400, "invalid-uuid", "Invalid UUID", f"{value!r} is not a UUID.") from exc


def reads_router() -> APIRouter:
    router = APIRouter(prefix="/api/v1")

    @router.get("/persons/{uuid}/overview", tags=["persons"], summary="Everything about a person on a day")
    async def overview(
        request: Request,
        uuid: str,
        at_: str | None = Query(None, alias="at"),
        principal: auth.Principal = Depends(auth.read),
    ) -> dict[str, Any]:
        reg = registry_of(request)
        day = parse_day(at_, reg.clock.today())
        if reg.memory.get("person", uuid) is None:
            raise problems.not_found("person", uuid)
        reveal = await audited(request, principal, [uuid])
        return reg.overview(uuid, day, reveal_cpr=reveal)

    @router.get(
        "/orgunits/{uuid}/people",
        tags=["orgunits"],
        summary="Who is engaged in a unit (or its subtree)",
    )
    async def people(
        request: Request,
        uuid: str,
        at_: str | None = Query(None, alias="at"),
        subtree: bool = Query(False),
        limit: int = Query(100, ge=1, le=1000),
        cursor: str | None = Query(None),
        _: auth.Principal = Depends(auth.read),
    ) -> dict[str, Any]:
        reg = registry_of(request)
        day = parse_day(at_, reg.clock.today())
        rows = reg.people(uuid, day, subtree=subtree)
        by_id = dict(rows)
        chunk, nxt = page_of([k for k, _ in rows], limit=limit, cursor=cursor)
        return {"items": [by_id[k] for k in chunk], "next_cursor": nxt}

    @router.get(
        "/orgunits/{uuid}/manager",
        tags=["orgunits"],
        summary="The responsible manager (inherited when vacant)",
    )
    async def manager(
        request: Request,
        uuid: str,
        at_: str | None = Query(None, alias="at"),
        _: auth.Principal = Depends(auth.read),
    ) -> dict[str, Any]:
        reg = registry_of(request)
        day = parse_day(at_, reg.clock.today())
        if uuid not in reg.directory.units:
            raise problems.rule("unknown-unit", f"No organisation unit {uuid} is known.", status=404, unit=uuid)
        if reg.directory.unit_at(uuid, day) is None:
            raise problems.rule("unit-not-active", f"Unit {uuid} is not active on {day}.", status=404, unit=uuid)
        found = reg.manager_of(uuid, day)
        if found is None:
            raise problems.rule(
                "no-manager",
                f"No filled manager position in {uuid} or any unit above it on {day}.",
                status=404,
            )
        return found

    @router.get(
        "/search",
        tags=["address book"],
        summary="Address book: names, nicknames, e-mails, phones, units",
    )
    async def search(
        request: Request,
        q: str = Query(..., min_length=1, max_length=200),
        limit: int = Query(20, ge=1, le=100),
        _: auth.Principal = Depends(auth.read),
    ) -> dict[str, Any]:
        items = registry_of(request).search(q, limit)
        return {"items": items, "next_cursor": None}

    @router.get("/audit", tags=["audit"], summary="Reads of person records by CPR-privileged tokens")
    async def audit(
        request: Request,
        person: str | None = Query(None),
        limit: int = Query(100, ge=1, le=1000),
        cursor: str | None = Query(None),
        _: auth.Principal = Depends(auth.admin),
    ) -> dict[str, Any]:
        docs, nxt = await registry_of(request).audit.page(person=person, limit=limit, cursor=cursor)
        items = [
            {
                "id": d["_id"],
                "at": d["at"].isoformat(),
                "actor": d["actor"],
                "person": d["person"],
                "endpoint": d["endpoint"],
                "action": d["action"],
            }
            for d in docs
        ]
        return {"items": items, "next_cursor": nxt}

    @router.get(
        "/projection/orgunits",
        tags=["projection"],
        summary="Units this service knows (from orgunits events)",
    )
    async def known_units(
        request: Request,
        at_: str | None = Query(None, alias="at"),
        limit: int = Query(500, ge=1, le=5000),
        cursor: str | None = Query(None),
        _: auth.Principal = Depends(auth.read),
    ) -> dict[str, Any]:
        reg = registry_of(request)
        day = parse_day(at_, reg.clock.today())
        d = reg.directory
        ids = sorted(u for u in d.units if d.unit_at(u, day) is not None)
        chunk, nxt = page_of(ids, limit=limit, cursor=cursor)
        items = []
        for u in chunk:
            s = d.unit_at(u, day)
            assert s is not None
            since = next(p.from_ for p in periods(d.units[u]) if p.contains(day))
            items.append(
                {
                    "uuid": u,
                    "name": s.name,
                    "user_key": s.user_key,
                    "parent": s.parent,
                    "active_from": since.isoformat(),
                }
            )
        return {"items": items, "next_cursor": nxt}

    @router.get("/projection/classes", tags=["projection"], summary="Classes this service knows, by facet")
    async def known_classes(
        request: Request,
        facet: str | None = Query(None),
        limit: int = Query(500, ge=1, le=5000),
        cursor: str | None = Query(None),
        _: auth.Principal = Depends(auth.read),
    ) -> dict[str, Any]:
        d = registry_of(request).directory
        ids = sorted(u for u, c in d.classes.items() if facet is None or c.facet == facet)
        chunk, nxt = page_of(ids, limit=limit, cursor=cursor)
        return {
            "items": [
                {
                    "facet": d.classes[u].facet,
                    **(d.class_ref(u) or {}),
                    "active_from": min((x.validity.from_.isoformat() for x in d.classes[u].timeline), default=None),
                }
                for u in chunk
            ],
            "next_cursor": nxt,
        }

    return router


def routers() -> list[APIRouter]:
    return [reads_router(), *(crud_router(k) for k in KINDS.values())]
