"""HTTP API under /api/v1: facets, classes, units and the tree.

Reads come from the in-memory cache (see ``store``); writes go through
``OrgUnits`` which checks the rules in ``domain`` and stores with the version
guard. ``?at=YYYY-MM-DD`` defaults to today in Europe/Copenhagen.
"""

from __future__ import annotations

import uuid as uuidlib
from datetime import date
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from orgdir import auth, problems
from orgdir.contracts.orgunits import ClassState, FacetState
from orgdir.http import if_match, parse_day, set_etag
from orgdir.text import fold
from orgdir.validity import at as slice_at
from orgunits import domain
from orgunits.service import OrgUnits
from orgunits.store import dump_state, page, slice_view, unit_state

router = APIRouter(prefix="/api/v1")

LIMIT = Query(100, ge=1, le=1000, description="Page size.")
CURSOR = Query(None, description="next_cursor of the previous page.")
AT = Query(None, description="YYYY-MM-DD; default today (Europe/Copenhagen).")


def svc(request: Request) -> OrgUnits:
    service: OrgUnits = request.app.state.orgunits
    return service


async def fresh(request: Request) -> OrgUnits:
    """The service, after re-reading anything this process's schedulers wrote."""
    s = svc(request)
    if s.dirty:
        await s.fresh()
    return s


def _written(doc: dict[str, Any], created: bool, response: Response) -> dict[str, Any]:
    response.status_code = 201 if created else 200
    set_etag(response, doc["version"])
    return {"uuid": doc["_id"], "version": doc["version"], **doc["state"]}


# ---------------------------------------------------------------------------- facets


def _facet_out(f: FacetState) -> dict[str, Any]:
    return dump_state(f) | {
        "user_key": f.timeline[-1].user_key,
        "description": f.timeline[-1].description,
    }


@router.get("/facets", tags=["vocabulary"])
async def list_facets(
    limit: int = LIMIT,
    cursor: str | None = CURSOR,
    s: OrgUnits = Depends(fresh),
    _: auth.Principal = Depends(auth.read),
) -> dict[str, Any]:
    rows = [((f.timeline[-1].user_key, f.uuid), _facet_out(f)) for f in s.vocab.facets.values()]
    return page(rows, limit=limit, cursor=cursor)


@router.get("/facets/{ref}", tags=["vocabulary"])
async def get_facet(
    ref: str,
    response: Response,
    s: OrgUnits = Depends(fresh),
    _: auth.Principal = Depends(auth.read),
) -> dict[str, Any]:
    f = s.vocab.facet(ref)
    set_etag(response, f.version)
    return _facet_out(f)


@router.post("/facets", status_code=201, tags=["vocabulary"])
async def create_facet(
    body: domain.FacetWrite,
    response: Response,
    s: OrgUnits = Depends(svc),
    _: auth.Principal = Depends(auth.admin),
) -> dict[str, Any]:
    doc, created = await s.write_facet(
        str(uuidlib.uuid4()), body.user_key, body.description, None, False
    )
    return _written(doc, created, response)


@router.put("/facets/{uid}", tags=["vocabulary"])
async def put_facet(
    uid: UUID,
    body: domain.FacetWrite,
    request: Request,
    response: Response,
    s: OrgUnits = Depends(svc),
    _: auth.Principal = Depends(auth.admin),
) -> dict[str, Any]:
    doc, created = await s.write_facet(
        str(uid), body.user_key, body.description, if_match(request), False
    )
    return _written(doc, created, response)


@router.patch("/facets/{uid}", tags=["vocabulary"])
async def patch_facet(
    uid: UUID,
    body: domain.FacetPatch,
    request: Request,
    response: Response,
    s: OrgUnits = Depends(svc),
    _: auth.Principal = Depends(auth.admin),
) -> dict[str, Any]:
    """Only the description can change: classes refer to a facet by its user_key."""
    current = s.vocab.facet(str(uid))
    key = current.timeline[-1].user_key
    doc, _created = await s.write_facet(str(uid), key, body.description, if_match(request), True)
    return _written(doc, False, response)


# ---------------------------------------------------------------------------- classes


def _class_out(c: ClassState, day: date) -> dict[str, Any]:
    current = slice_at(c.timeline, day) or (c.timeline[-1] if c.timeline else None)
    flat = current.model_dump(mode="json", by_alias=True) if current else {}
    return dump_state(c) | flat | {"active": slice_at(c.timeline, day) is not None}


@router.get("/classes", tags=["vocabulary"])
async def list_classes(
    request: Request,
    facet: str | None = Query(None, description="Facet user_key or UUID."),
    at: str | None = AT,
    all: bool = Query(False, description="Include classes not active on the day."),
    limit: int = LIMIT,
    cursor: str | None = CURSOR,
    s: OrgUnits = Depends(fresh),
    _: auth.Principal = Depends(auth.read),
) -> dict[str, Any]:
    day = parse_day(at, s.today())
    classes: list[ClassState] = list(s.vocab.classes.values())
    if facet is not None:
        key = s.vocab.facet(facet).timeline[0].user_key
        classes = [c for c in classes if c.facet == key]
    rows = [
        (
            (c.facet, (slice_at(c.timeline, day) or c.timeline[-1]).user_key, c.uuid),
            _class_out(c, day),
        )
        for c in classes
        if c.timeline and (all or slice_at(c.timeline, day) is not None)
    ]
    return page(rows, limit=limit, cursor=cursor)


@router.get("/classes/{uid}", tags=["vocabulary"])
async def get_class(
    uid: UUID,
    response: Response,
    at: str | None = AT,
    s: OrgUnits = Depends(fresh),
    _: auth.Principal = Depends(auth.read),
) -> dict[str, Any]:
    c = s.vocab.classes.get(str(uid))
    if c is None:
        raise problems.not_found("class", uid)
    set_etag(response, c.version)
    return _class_out(c, parse_day(at, s.today()))


@router.post("/classes", status_code=201, tags=["vocabulary"])
async def create_class(
    body: domain.ClassWrite,
    response: Response,
    s: OrgUnits = Depends(svc),
    _: auth.Principal = Depends(auth.admin),
) -> dict[str, Any]:
    doc, created = await s.put_class(str(uuidlib.uuid4()), body, None)
    return _written(doc, created, response)


@router.put("/classes/{uid}", tags=["vocabulary"])
async def put_class(
    uid: UUID,
    body: domain.ClassWrite,
    request: Request,
    response: Response,
    s: OrgUnits = Depends(svc),
    _: auth.Principal = Depends(auth.admin),
) -> dict[str, Any]:
    doc, created = await s.put_class(str(uid), body, if_match(request))
    return _written(doc, created, response)


@router.patch("/classes/{uid}", tags=["vocabulary"])
async def patch_class(
    uid: UUID,
    body: domain.ClassPatch,
    request: Request,
    response: Response,
    s: OrgUnits = Depends(svc),
    _: auth.Principal = Depends(auth.admin),
) -> dict[str, Any]:
    return _written(await s.patch_class(str(uid), body, if_match(request)), False, response)


@router.post("/classes/{uid}/terminate", tags=["vocabulary"])
async def terminate_class(
    uid: UUID,
    body: domain.TerminateIn,
    request: Request,
    response: Response,
    s: OrgUnits = Depends(svc),
    _: auth.Principal = Depends(auth.admin),
) -> dict[str, Any]:
    return _written(await s.terminate_class(str(uid), body, if_match(request)), False, response)


# ---------------------------------------------------------------------------- units: reads


def _unit_at(s: OrgUnits, uid: str, day: date) -> dict[str, Any]:
    state = s.cache.get(uid)
    if state is None:
        raise problems.not_found("organisation unit", uid)
    current = slice_at(state.timeline, day)
    if current is None:
        raise problems.Problem(
            404,
            "not-active",
            "Unit not active on that day",
            f"Unit {uid} does not exist on {day}.",
            periods=[sl.validity.dump() for sl in state.timeline],
        )
    return slice_view(uid, state.version, current)


@router.get("/orgunits", tags=["orgunits"])
async def list_units(
    q: str | None = Query(
        None,
        description="Part of a name or user_key; insensitive to case, accents and æ/ae, ø/oe/o, å/aa"
        " (orgdir.text.fold).",
    ),
    parent: UUID | None = Query(None, description="Only the children of this unit."),
    roots: bool = Query(False, description="Only root units."),
    at: str | None = AT,
    limit: int = LIMIT,
    cursor: str | None = CURSOR,
    s: OrgUnits = Depends(fresh),
    _: auth.Principal = Depends(auth.read),
) -> dict[str, Any]:
    day = parse_day(at, s.today())
    view = s.cache.view(day)
    index = view.search_index()
    needle = fold(q) if q else None
    wanted: set[str] | None = None
    if parent is not None:
        wanted = set(view.kids.get(str(parent), []))
    elif roots:
        wanted = set(view.kids.get(None, []))
    rows = [
        (key, uid)
        for key, uid, text in index
        if (needle is None or needle in text) and (wanted is None or uid in wanted)
    ]
    out = page(rows, limit=limit, cursor=cursor, presorted=True)
    out["items"] = [
        slice_view(uid, s.cache.units[uid].version, view.slices[uid]) for uid in out["items"]
    ]
    return out


@router.get("/tree", tags=["orgunits"])
async def tree(
    at: str | None = AT, s: OrgUnits = Depends(fresh), _: auth.Principal = Depends(auth.read)
) -> Response:
    """Every unit active on the day, nested under its parent, in one response."""
    return Response(
        s.cache.view(parse_day(at, s.today())).tree_json(), media_type="application/json"
    )


@router.get("/orgunits/{uid}", tags=["orgunits"])
async def get_unit(
    uid: UUID,
    response: Response,
    at: str | None = AT,
    s: OrgUnits = Depends(fresh),
    _: auth.Principal = Depends(auth.read),
) -> dict[str, Any]:
    out = _unit_at(s, str(uid), parse_day(at, s.today()))
    set_etag(response, out["version"])
    return out


@router.get("/orgunits/{uid}/history", tags=["orgunits"])
async def unit_history(
    uid: UUID, s: OrgUnits = Depends(fresh), _: auth.Principal = Depends(auth.read)
) -> dict[str, Any]:
    """Every slice of the unit's life, and every registration: when, by whom, what it said."""
    doc = await s.units_repo.get_full(str(uid))
    if doc is None:
        raise problems.not_found("organisation unit", uid)
    state = unit_state(doc)
    return {
        "uuid": state.uuid,
        "version": state.version,
        "timeline": dump_state(state)["timeline"],
        "registrations": [
            {
                "version": r["version"],
                "registered_at": r["registered_at"].isoformat(),
                "registered_by": r["registered_by"],
                "event_type": r["event_type"],
                "note": r.get("note"),
                "timeline": r["state"]["timeline"],
            }
            for r in doc.get("registrations", [])
        ],
    }


@router.get("/orgunits/{uid}/children", tags=["orgunits"])
async def children(
    uid: UUID,
    at: str | None = AT,
    limit: int = LIMIT,
    cursor: str | None = CURSOR,
    s: OrgUnits = Depends(fresh),
    _: auth.Principal = Depends(auth.read),
) -> dict[str, Any]:
    day = parse_day(at, s.today())
    _unit_at(s, str(uid), day)
    view = s.cache.view(day)
    rows = [(view.sort_keys[k], k) for k in view.kids.get(str(uid), [])]
    out = page(rows, limit=limit, cursor=cursor, presorted=True)
    out["items"] = [slice_view(k, s.cache.units[k].version, view.slices[k]) for k in out["items"]]
    return out


@router.get("/orgunits/{uid}/subtree", tags=["orgunits"])
async def subtree(
    uid: UUID,
    at: str | None = AT,
    depth: int | None = Query(
        None, ge=0, le=100, description="Levels below the unit; default all."
    ),
    s: OrgUnits = Depends(fresh),
    _: auth.Principal = Depends(auth.read),
) -> JSONResponse:
    day = parse_day(at, s.today())
    _unit_at(s, str(uid), day)
    return JSONResponse(s.cache.view(day).node(str(uid), depth))


@router.get("/orgunits/{uid}/ancestors", tags=["orgunits"])
async def ancestors(
    uid: UUID,
    at: str | None = AT,
    s: OrgUnits = Depends(fresh),
    _: auth.Principal = Depends(auth.read),
) -> dict[str, Any]:
    """The path from the unit's parent up to its root."""
    day = parse_day(at, s.today())
    _unit_at(s, str(uid), day)
    view = s.cache.view(day)
    items = [
        slice_view(a, s.cache.units[a].version, view.slices[a]) for a in view.ancestors(str(uid))
    ]
    return {"items": items, "next_cursor": None}


# ---------------------------------------------------------------------------- units: writes


@router.post("/orgunits", status_code=201, tags=["orgunits"])
async def create_unit(
    body: domain.UnitWrite,
    response: Response,
    s: OrgUnits = Depends(svc),
    _: auth.Principal = Depends(auth.write),
) -> dict[str, Any]:
    return _written(await s.create_unit(body), True, response)


@router.put("/orgunits/{uid}", tags=["orgunits"])
async def put_unit(
    uid: UUID,
    body: domain.UnitWrite,
    request: Request,
    response: Response,
    s: OrgUnits = Depends(svc),
    _: auth.Principal = Depends(auth.write),
) -> dict[str, Any]:
    """Create or replace from ``validity.from``: the same body twice stores nothing new."""
    doc, created = await s.put_unit(str(uid), body, if_match(request))
    return _written(doc, created, response)


@router.patch("/orgunits/{uid}", tags=["orgunits"])
async def patch_unit(
    uid: UUID,
    body: domain.UnitPatch,
    request: Request,
    response: Response,
    s: OrgUnits = Depends(svc),
    _: auth.Principal = Depends(auth.write),
) -> dict[str, Any]:
    return _written(await s.patch_unit(str(uid), body, if_match(request)), False, response)


@router.post("/orgunits/{uid}/move", tags=["orgunits"])
async def move_unit(
    uid: UUID,
    body: domain.MoveIn,
    request: Request,
    response: Response,
    s: OrgUnits = Depends(svc),
    _: auth.Principal = Depends(auth.write),
) -> dict[str, Any]:
    return _written(await s.move_unit(str(uid), body, if_match(request)), False, response)


@router.post("/orgunits/{uid}/terminate", tags=["orgunits"])
async def terminate_unit(
    uid: UUID,
    body: domain.TerminateIn,
    request: Request,
    response: Response,
    s: OrgUnits = Depends(svc),
    _: auth.Principal = Depends(auth.write),
) -> dict[str, Any]:
    return _written(await s.terminate_unit(str(uid), body, if_match(request)), False, response)
