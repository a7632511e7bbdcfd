"""Consumers: a projection of the registry's engagements, per unit over time.

Only what the termination rule needs is kept: per engagement, the unit of
each of its slices with the slice's validity. Stale events are skipped by
sequence (the bus's seen-store and the projection both check it).
"""

from __future__ import annotations

from orgdir.bus import Router
from orgdir.contracts.registry import EngagementState
from orgdir.events import CloudEvent
from orgdir.store import Projection
from orgunits.domain import engagement_periods
from orgunits.store import engagement_body


def registry_router(engagements: Projection) -> Router:
    router = Router()

    @router.on("engagement.*")
    async def on_engagement(event: CloudEvent, data: EngagementState) -> None:
        body = engagement_body(data.person, engagement_periods(data.timeline))
        await engagements.apply(event.subject, event.sequence, body)

    return router
