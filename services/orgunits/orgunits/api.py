"""HTTP API under /api/v1: facets, classes, units and the tree.

Reads come from the in-memory read model (``readmodel``); writes go through
``OrgUnits``, which checks the rules in ``domain`` and stores with the
version guard. ``?at=YYYY-MM-DD`` defaults to today in Europe/Copenhagen;
``?registered_at=`` answers from a read model built as things were registered
then. Unit writes accept a writer scoped to a subtree (``auth.ScopedWriter``:
the service checks every unit the write touches); the vocabulary needs admin.
Unit addresses above the caller's visibility ceiling are left out of every answer.
"""

from __future__ import annotations

import uuid as uuidlib
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response

from orgdir import auth, visibility
from orgdir.http import AtDay, IfMatch, PageQuery, RegisteredAt, ReturnMinimal, minimal, problem_responses, set_etag
from orgdir.tree import LINE, Hierarchy, hierarchy_filter
from orgunits.domain import LINE_HIERARCHY
from orgunits.schemas import (
    ClassOut,
    ClassPatch,
    ClassState,
    ClassWrite,
    FacetOut,
    FacetPatch,
    FacetState,
    FacetWrite,
    History,
    MoveIn,
    OrgUnitState,
    Page,
    RelatedUnitIn,
    RelatedUnitState,
    TerminateIn,
    Tree,
    TreeNode,
    UnitOut,
    UnitPatch,
    UnitWrite,
)
from orgunits.service import OrgUnits

router = APIRouter(prefix="/api/v1")


async def service(request: Request) -> OrgUnits:
    svc: OrgUnits = request.app.state.orgunits
    return svc


async def fresh(request: Request) -> OrgUnits:
    """The service, after re-reading anything this process's schedulers wrote."""
    svc: OrgUnits = request.app.state.orgunits
    if svc.dirty:
        await svc.fresh()
    return svc


Svc = Annotated[OrgUnits, Depends(service)]  # writes catch up inside the tree section
Fresh = Annotated[OrgUnits, Depends(fresh)]  # reads

ALL = "*"
HierarchyRef = Annotated[
    str | None,
    Query(
        max_length=100,
        description="A unit_hierarchy class (UUID or user_key: linje, med, projekt …); `*` for every hierarchy. "
        "Default: the line organisation for the tree and unit lists, the named unit's own hierarchy where a unit "
        "is named (parent, children, subtree). 422 `unknown-hierarchy` when unknown.",
    ),
]


def _hierarchy(s: OrgUnits, ref: str | None, default: str | None) -> Hierarchy | None:
    """The accepted ``hierarchy`` values of a read; ``*`` (or no ref and no default) means every hierarchy."""
    if ref is None and default == LINE:
        return LINE_ONLY  # also as registered before the vocabulary was seeded
    ref = ref if ref is not None else default
    return None if ref is None or ref == ALL else hierarchy_filter(ref, s.vocab.classes, s.vocab.class_by_key)


LINE_ONLY: Hierarchy = frozenset({LINE_HIERARCHY, None})


def _written(doc: dict[str, Any], created: bool, response: Response) -> dict[str, Any]:
    """A write's answer: the aggregate's full state (as in its event), 201 when it was created."""
    response.status_code = 201 if created else 200
    set_etag(response, doc["version"])
    return {"uuid": doc["_id"], "version": doc["version"], **doc["state"]}


def _unit_written(
    s: OrgUnits, principal: auth.Principal, doc: dict[str, Any], created: bool, response: Response
) -> dict[str, Any]:
    """A unit write's answer, with the addresses its writer may not see left out."""
    response.status_code = 201 if created else 200
    set_etag(response, doc["version"])
    return s.shown(doc, visibility.ceiling_of(principal.roles))


# ---------------------------------------------------------------------------- facets


@router.get("/facets", tags=["vocabulary"], response_model=Page[FacetOut])
async def list_facets(_: auth.Reader, s: Fresh, paging: PageQuery) -> Page[FacetOut]:
    return s.vocab.facets_page(paging)


@router.get("/facets/{ref}", tags=["vocabulary"], response_model=FacetOut)
async def get_facet(_: auth.Reader, ref: str, response: Response, s: Fresh) -> FacetOut:
    """A facet by UUID or user_key."""
    f = s.vocab.facet(ref)
    set_etag(response, f.version)
    return s.vocab.facet_out(f)


@router.post("/facets", status_code=201, tags=["vocabulary"], response_model=FacetState)
async def create_facet(_: auth.Admin, body: FacetWrite, response: Response, s: Svc) -> dict[str, Any]:
    doc, created = await s.write_facet(str(uuidlib.uuid4()), body.user_key, body.description, None, False)
    return _written(doc, created, response)


@router.put("/facets/{uid}", tags=["vocabulary"], response_model=FacetState, responses={201: {"model": FacetState}})
async def put_facet(
    _: auth.Admin, uid: UUID, body: FacetWrite, version: IfMatch, response: Response, s: Svc, rm: ReturnMinimal
) -> dict[str, Any] | Response:
    doc, created = await s.write_facet(str(uid), body.user_key, body.description, version, False)
    return minimal(doc["version"], created) if rm else _written(doc, created, response)


@router.patch("/facets/{uid}", tags=["vocabulary"], response_model=FacetState)
async def patch_facet(
    _: auth.Admin, uid: UUID, body: FacetPatch, version: IfMatch, response: Response, s: Svc
) -> dict[str, Any]:
    """Only the description can change: classes refer to a facet by its user_key."""
    doc = await s.patch_facet(str(uid), body.description, version)
    return _written(doc, False, response)


# ---------------------------------------------------------------------------- classes


@router.get("/classes", tags=["vocabulary"], response_model=Page[ClassOut], responses=problem_responses(404))
async def list_classes(
    _: auth.Reader,
    s: Fresh,
    day: AtDay,
    registered_at: RegisteredAt,
    paging: PageQuery,
    facet: Annotated[str | None, Query(description="Facet user_key or UUID (404 when unknown).")] = None,
    all: Annotated[bool, Query(description="Include classes not active on the day.")] = False,
) -> Page[ClassOut]:
    return (await s.as_registered(registered_at)).vocab.classes_page(day, facet, all, paging)


@router.get("/classes/{uid}", tags=["vocabulary"], response_model=ClassOut)
async def get_class(
    _: auth.Reader, uid: UUID, response: Response, day: AtDay, registered_at: RegisteredAt, s: Fresh
) -> ClassOut:
    out = (await s.as_registered(registered_at)).vocab.class_at(str(uid), day)
    set_etag(response, out.version)
    return out


@router.post("/classes", status_code=201, tags=["vocabulary"], response_model=ClassState)
async def create_class(_: auth.Admin, body: ClassWrite, response: Response, s: Svc) -> dict[str, Any]:
    doc, created = await s.put_class(str(uuidlib.uuid4()), body, None)
    return _written(doc, created, response)


@router.put("/classes/{uid}", tags=["vocabulary"], response_model=ClassState, responses={201: {"model": ClassState}})
async def put_class(
    _: auth.Admin, uid: UUID, body: ClassWrite, version: IfMatch, response: Response, s: Svc, rm: ReturnMinimal
) -> dict[str, Any] | Response:
    doc, created = await s.put_class(str(uid), body, version)
    return minimal(doc["version"], created) if rm else _written(doc, created, response)


@router.patch("/classes/{uid}", tags=["vocabulary"], response_model=ClassState)
async def patch_class(
    _: auth.Admin, uid: UUID, body: ClassPatch, version: IfMatch, response: Response, s: Svc
) -> dict[str, Any]:
    return _written(await s.patch_class(str(uid), body, version), False, response)


@router.post("/classes/{uid}/terminate", tags=["vocabulary"], response_model=ClassState)
async def terminate_class(
    _: auth.Admin, uid: UUID, body: TerminateIn, version: IfMatch, response: Response, s: Svc
) -> dict[str, Any]:
    """End the class: ``to`` is the first day it no longer holds (default today)."""
    return _written(await s.terminate_class(str(uid), body, version), False, response)


# ---------------------------------------------------------------------------- units: reads


@router.get("/orgunits", tags=["orgunits"], response_model=Page[UnitOut])
async def list_units(
    principal: auth.Reader,
    s: Fresh,
    day: AtDay,
    registered_at: RegisteredAt,
    paging: PageQuery,
    q: Annotated[
        str | None,
        Query(
            max_length=200,
            description="Part of a name or user_key; insensitive to case, accents and æ/ae, ø/oe/o, å/aa"
            " (orgdir.text.fold).",
        ),
    ] = None,
    parent: Annotated[UUID | None, Query(description="Only the children of this unit.")] = None,
    roots: Annotated[bool, Query(description="Only root units.")] = False,
    hierarchy: HierarchyRef = None,
) -> Page[UnitOut]:
    """Units active on the day (of the line organisation unless ``hierarchy`` or ``parent`` says otherwise), by name."""
    s = await s.as_registered(registered_at)
    h = _hierarchy(s, hierarchy, None if parent else LINE)
    sight = s.sight(visibility.ceiling_of(principal.roles))
    return s.cache.search(day, q, str(parent) if parent else None, roots, paging, h, sight)


@router.get("/tree", tags=["orgunits"], response_model=Tree)
async def tree(
    _: auth.Reader, s: Fresh, day: AtDay, registered_at: RegisteredAt, hierarchy: HierarchyRef = None
) -> Response:
    """The units of one hierarchy active on the day (default the line organisation; ``*`` all), nested under
    their parents, in one response (pre-rendered per day and hierarchy)."""
    s = await s.as_registered(registered_at)
    return Response(s.cache.tree_json(day, _hierarchy(s, hierarchy, LINE)), media_type="application/json")


@router.get("/orgunits/{uid}", tags=["orgunits"], response_model=UnitOut)
async def get_unit(
    principal: auth.Reader, uid: UUID, response: Response, day: AtDay, registered_at: RegisteredAt, s: Fresh
) -> UnitOut:
    """The unit as of the day: 404 ``not-active`` (with its periods) on a day it does not exist (and
    ``not-found`` as registered before it was)."""
    s = await s.as_registered(registered_at)
    out = s.cache.unit_at(str(uid), day, s.sight(visibility.ceiling_of(principal.roles)))
    set_etag(response, out.version)
    return out


@router.get("/orgunits/{uid}/history", tags=["orgunits"], response_model=History)
async def unit_history(principal: auth.Reader, uid: UUID, s: Fresh) -> History:
    """Every slice of the unit's life, and every registration: when, by whom, what it said."""
    return await s.unit_history(str(uid), visibility.ceiling_of(principal.roles))


@router.get("/orgunits/{uid}/children", tags=["orgunits"], response_model=Page[UnitOut])
async def children(
    principal: auth.Reader,
    uid: UUID,
    day: AtDay,
    registered_at: RegisteredAt,
    paging: PageQuery,
    s: Fresh,
    hierarchy: HierarchyRef = None,
) -> Page[UnitOut]:
    """The unit's children on the day; 404 ``not-in-hierarchy`` when ``hierarchy`` is not the unit's."""
    s = await s.as_registered(registered_at)
    sight = s.sight(visibility.ceiling_of(principal.roles))
    return s.cache.children(str(uid), day, paging, _hierarchy(s, hierarchy, None), sight)


@router.get("/orgunits/{uid}/subtree", tags=["orgunits"], response_model=TreeNode, response_model_exclude_unset=True)
async def subtree(
    _: auth.Reader,
    uid: UUID,
    day: AtDay,
    registered_at: RegisteredAt,
    s: Fresh,
    depth: Annotated[int | None, Query(ge=0, le=100, description="Levels below the unit; default all.")] = None,
    hierarchy: HierarchyRef = None,
) -> dict[str, Any]:
    """The unit and the units below it; ``children`` is absent below ``depth``."""
    s = await s.as_registered(registered_at)
    return s.cache.subtree(str(uid), day, depth, _hierarchy(s, hierarchy, None))


@router.get("/orgunits/{uid}/ancestors", tags=["orgunits"], response_model=Page[UnitOut])
async def ancestors(
    principal: auth.Reader, uid: UUID, day: AtDay, registered_at: RegisteredAt, s: Fresh
) -> Page[UnitOut]:
    """The path from the unit's parent up to its root, in one page."""
    s = await s.as_registered(registered_at)
    return s.cache.ancestors(str(uid), day, s.sight(visibility.ceiling_of(principal.roles)))


# ---------------------------------------------------------------------------- units: writes


@router.post("/orgunits", status_code=201, tags=["orgunits"], response_model=OrgUnitState)
async def create_unit(principal: auth.ScopedWriter, body: UnitWrite, response: Response, s: Svc) -> dict[str, Any]:
    """Create a unit; a writer scoped to a subtree needs the parent in it (a root needs the role everywhere)."""
    doc, _ = await s.put_unit(str(uuidlib.uuid4()), body, None, visibility.ceiling_of(principal.roles))
    return _unit_written(s, principal, doc, True, response)


@router.put("/orgunits/{uid}", tags=["orgunits"], response_model=OrgUnitState, responses={201: {"model": OrgUnitState}})
async def put_unit(
    principal: auth.ScopedWriter,
    uid: UUID,
    body: UnitWrite,
    version: IfMatch,
    response: Response,
    s: Svc,
    return_minimal: ReturnMinimal,
) -> dict[str, Any] | Response:
    """Create or replace from ``validity.from``: the same body twice stores nothing new. Addresses the writer
    may not see (secret ones without orgdir:read:secret) stay as stored."""
    doc, created = await s.put_unit(str(uid), body, version, visibility.ceiling_of(principal.roles))
    if return_minimal:
        return minimal(doc["version"], created)
    return _unit_written(s, principal, doc, created, response)


@router.patch("/orgunits/{uid}", tags=["orgunits"], response_model=OrgUnitState)
async def patch_unit(
    principal: auth.ScopedWriter, uid: UUID, body: UnitPatch, version: IfMatch, response: Response, s: Svc
) -> dict[str, Any]:
    doc = await s.patch_unit(str(uid), body, version, visibility.ceiling_of(principal.roles))
    return _unit_written(s, principal, doc, False, response)


@router.post("/orgunits/{uid}/move", tags=["orgunits"], response_model=OrgUnitState)
async def move_unit(
    principal: auth.ScopedWriter, uid: UUID, body: MoveIn, version: IfMatch, response: Response, s: Svc
) -> dict[str, Any]:
    """Move the unit under ``parent``; a writer scoped to a subtree needs both the unit and the new parent in it."""
    return _unit_written(s, principal, await s.move_unit(str(uid), body, version), False, response)


@router.post("/orgunits/{uid}/terminate", tags=["orgunits"], response_model=OrgUnitState)
async def terminate_unit(
    principal: auth.ScopedWriter, uid: UUID, body: TerminateIn, version: IfMatch, response: Response, s: Svc
) -> dict[str, Any]:
    """End the unit: ``to`` is the first day it no longer exists (default today)."""
    return _unit_written(s, principal, await s.terminate_unit(str(uid), body, version), False, response)


# ---------------------------------------------------------------------------- related units


@router.get("/related-units", tags=["related units"], response_model=Page[RelatedUnitState])
async def list_related(
    _: auth.Reader,
    s: Fresh,
    day: AtDay,
    registered_at: RegisteredAt,
    paging: PageQuery,
    unit: Annotated[UUID | None, Query(description="Only the relations of this unit.")] = None,
    all: Annotated[bool, Query(description="Include relations not holding on the day.")] = False,
) -> Page[RelatedUnitState]:
    """Relations between two units holding on the day (or all of them), by UUID."""
    s = await s.as_registered(registered_at)
    return s.cache.related.page(day, str(unit) if unit else None, all, paging)


@router.get("/related-units/{uid}", tags=["related units"], response_model=RelatedUnitState)
async def get_related(_: auth.Reader, uid: UUID, response: Response, s: Fresh) -> RelatedUnitState:
    state = s.cache.related.get(str(uid))
    set_etag(response, state.version)
    return state


@router.get("/related-units/{uid}/history", tags=["related units"], response_model=History)
async def related_history(_: auth.Reader, uid: UUID, s: Fresh) -> History:
    return await s.related_history(str(uid))


@router.post("/related-units", status_code=201, tags=["related units"], response_model=RelatedUnitState)
async def create_related(_: auth.ScopedWriter, body: RelatedUnitIn, response: Response, s: Svc) -> dict[str, Any]:
    """Relate two units from ``validity.from`` (default today); both must exist over the whole period."""
    doc, created = await s.put_related(str(uuidlib.uuid4()), body, None)
    return _written(doc, created, response)


@router.put(
    "/related-units/{uid}",
    tags=["related units"],
    response_model=RelatedUnitState,
    responses={201: {"model": RelatedUnitState}},
)
async def put_related(
    _: auth.ScopedWriter,
    uid: UUID,
    body: RelatedUnitIn,
    version: IfMatch,
    response: Response,
    s: Svc,
    rm: ReturnMinimal,
) -> dict[str, Any] | Response:
    """Create with this UUID, or set the relation over ``validity``; the two units never change."""
    doc, created = await s.put_related(str(uid), body, version)
    return minimal(doc["version"], created) if rm else _written(doc, created, response)


@router.post("/related-units/{uid}/terminate", tags=["related units"], response_model=RelatedUnitState)
async def terminate_related(
    _: auth.ScopedWriter, uid: UUID, body: TerminateIn, version: IfMatch, response: Response, s: Svc
) -> dict[str, Any]:
    """End the relation: ``to`` is the first day it no longer holds (default today)."""
    return _written(await s.terminate_related(str(uid), body, version), False, response)
