"""The one consumer queue ``notifier.all``: every event (``#``), one replica at a time.

Single-active: RabbitMQ hands the queue to one replica and fails over to
another, which reloads the projections and seen streams first
(``Notifier.load_for_takeover``, bound in ``app``). Stale events are skipped
by the service per stream (aggregate + subject), not by the runtime.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from notifier.service import CONSUMER, Notifier
from orgdir.bus import Routes
from orgdir.events import CloudEvent

routes: Routes[Notifier] = Routes("notifier", CONSUMER, single_active=True)


@routes.on("#")
async def on_event(svc: Notifier, event: CloudEvent, data: BaseModel) -> None:
    await svc.handle(event)


QUEUES: list[Routes[Any]] = [routes]
