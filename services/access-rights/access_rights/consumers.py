"""Consumers: projections of the unit tree (orgunits) and of persons and engagements (registry).

The queue is single-active (one replica handles it at a time, with failover;
see ``service``). Each event updates the stored projection (skipped when stale
by ``sequence``) and the in-memory view, then recomputes exactly the persons
it can affect, all inside the ``rights`` section. The recomputation runs even
for a redelivered event: it is a diff, so it is idempotent.
"""

from __future__ import annotations

from typing import Any

from access_rights.service import AccessService
from orgdir.bus import Routes
from orgdir.contracts.orgunits import ClassState, OrgUnitState
from orgdir.contracts.registry import EngagementState, PersonState
from orgdir.events import CloudEvent

routes: Routes[AccessService] = Routes("access-rights", "org", single_active=True)


@routes.on("orgunit.*")
async def on_unit(svc: AccessService, event: CloudEvent, data: OrgUnitState) -> None:
    await svc.on_org_event(event, data)


@routes.on("engagement.*")
async def on_engagement(svc: AccessService, event: CloudEvent, data: EngagementState) -> None:
    await svc.on_org_event(event, data)


@routes.on("person.*")
async def on_person(svc: AccessService, event: CloudEvent, data: PersonState) -> None:
    await svc.on_org_event(event, data)


@routes.on("class.*")
async def on_class(svc: AccessService, event: CloudEvent, data: ClassState) -> None:
    await svc.on_org_event(event, data)


QUEUES: list[Routes[Any]] = [routes]
