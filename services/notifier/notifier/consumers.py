"""The one consumer queue ``notifier.all``: every event (``#``), one replica at a time.

Single-active: RabbitMQ hands the queue to one replica and fails over to
another, which reloads the projections and seen streams first
(``Notifier.load_for_takeover``, bound in ``app``). Stale events are skipped
by the service per stream (aggregate + subject), not by the runtime; the
runtime hands over one stream's events in arrival order, one at a time
(``in_order``), each through all its retries.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from notifier import domain
from notifier.service import CONSUMER, Notifier
from orgdir.bus import Routes
from orgdir.events import CloudEvent

# In order per stream: an event held through an outage is never overtaken by a newer one of its
# stream, which would make it stale and leave it undelivered (a grant seen only as its revocation).
routes: Routes[Notifier] = Routes(
    "notifier", CONSUMER, single_active=True, in_order=lambda e: domain.stream_of(e.type, e.subject)
)


@routes.on("#")
async def on_event(svc: Notifier, event: CloudEvent, data: BaseModel) -> None:
    await svc.handle(event)


QUEUES: list[Routes[Any]] = [routes]
