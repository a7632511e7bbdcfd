"""Consumer ``registry.orgunits``: the local projection of units, classes and facets.

Each event carries the full state; the projection stores it only when its
``sequence`` is newer than what it holds (the bus also skips stale events),
then the in-memory copy used for validation and tree walks is updated.
Competing consumers: with several replicas each event is handled by one of
them; every other replica updates its in-memory copy from the same event
through its view feed (``Directory.apply_event``), newer ``sequence`` only.
"""

from __future__ import annotations

from orgdir.bus import Router
from orgdir.contracts.orgunits import ClassState, FacetState, OrgUnitState
from orgdir.events import CloudEvent
from registry.store import Directory


def orgunits_router(directory: Directory) -> Router:
    router = Router()

    @router.on("orgunit.*")
    async def on_unit(event: CloudEvent, data: OrgUnitState) -> None:
        body = data.model_dump(mode="json", by_alias=True)
        await directory.units_projection.apply(event.subject, event.sequence, body)
        directory.set_unit(data, event.sequence)

    @router.on("class.*")
    async def on_class(event: CloudEvent, data: ClassState) -> None:
        body = data.model_dump(mode="json", by_alias=True)
        await directory.classes_projection.apply(event.subject, event.sequence, body)
        directory.set_class(data, event.sequence)

    @router.on("facet.*")
    async def on_facet(event: CloudEvent, data: FacetState) -> None:
        body = data.model_dump(mode="json", by_alias=True)
        await directory.facets_projection.apply(event.subject, event.sequence, body)
        directory.set_facet(data, event.sequence)

    return router
