"""Consumers: the registry's engagements, per unit over time (for the termination rule).

Stale events are skipped by sequence (the bus's seen-store and the
projection both check it).
"""

from __future__ import annotations

from typing import Any

from orgdir.bus import Routes
from orgdir.contracts.registry import EngagementState
from orgdir.events import CloudEvent
from orgunits.service import OrgUnits

routes: Routes[OrgUnits] = Routes("orgunits", "registry")


@routes.on("engagement.*")
async def on_engagement(svc: OrgUnits, event: CloudEvent, data: EngagementState) -> None:
    await svc.apply_engagement(event.subject, event.sequence, data.person, data.timeline)


QUEUES: list[Routes[Any]] = [routes]
