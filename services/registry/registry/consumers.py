"""Consumer ``registry.orgunits``: the local projection of units, classes and facets.

Each event carries the full state; the projection stores it only when its
``sequence`` is newer than what it holds (the bus also skips stale events),
then the in-memory copy used for validation and tree walks is updated.
Competing consumers: with several replicas each event is handled by one of
them; every other replica updates its in-memory copy from the same event
through its view feed (``Directory.apply_event``), newer ``sequence`` only.
"""

from __future__ import annotations

from typing import Any

from orgdir.bus import Routes
from orgdir.contracts.orgunits import ClassState, FacetState, OrgUnitState
from orgdir.events import CloudEvent
from registry.service import Registry

routes: Routes[Registry] = Routes("registry", "orgunits")


@routes.on("orgunit.*")
async def on_unit(reg: Registry, event: CloudEvent, data: OrgUnitState) -> None:
    await reg.project_unit(event.subject, event.sequence, data)


@routes.on("class.*")
async def on_class(reg: Registry, event: CloudEvent, data: ClassState) -> None:
    await reg.project_class(event.subject, event.sequence, data)


@routes.on("facet.*")
async def on_facet(reg: Registry, event: CloudEvent, data: FacetState) -> None:
    await reg.project_facet(event.subject, event.sequence, data)


QUEUES: list[Routes[Any]] = [routes]
