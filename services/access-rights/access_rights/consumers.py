"""Consumers: projections of the unit tree (orgunits) and of persons and engagements (registry).

The queue is single-active (one replica handles it at a time, with failover;
see ``engine``). Each event updates the stored projection (skipped when stale
by ``sequence``) and the in-memory view, then recomputes exactly the persons
it can affect, all inside the ``rights`` section. The recomputation runs even
for a redelivered event: it is a diff, so it is idempotent.
"""

from __future__ import annotations

from access_rights.engine import AccessService
from orgdir.bus import Router
from orgdir.contracts.orgunits import ClassState, OrgUnitState
from orgdir.contracts.registry import EngagementState, PersonState
from orgdir.events import CloudEvent

CONSUMER = "org"


def build_router(service: AccessService) -> Router:
    router = Router()

    @router.on("orgunit.*")
    async def on_unit(event: CloudEvent, data: OrgUnitState) -> None:
        await service.on_org_event(event, data)

    @router.on("engagement.*")
    async def on_engagement(event: CloudEvent, data: EngagementState) -> None:
        await service.on_org_event(event, data)

    @router.on("person.*")
    async def on_person(event: CloudEvent, data: PersonState) -> None:
        await service.on_org_event(event, data)

    @router.on("class.*")
    async def on_class(event: CloudEvent, data: ClassState) -> None:
        await service.on_org_event(event, data)

    return router
