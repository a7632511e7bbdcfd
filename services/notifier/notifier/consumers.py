"""The one consumer ``notifier.all`` (bound to ``#``) and the state it feeds.

For each event: update the projections, then durably record one delivery per
matching active subscription (``_id`` = ``subscription:event id``, so a
redelivered event adds nothing) and only then ack. Handling of one stream
(aggregate + subject) is serialised so its records are created in sequence
order; an event older than what was already handled for its stream is skipped.
"""

from __future__ import annotations

import logging
from typing import Any

from notifier import domain
from notifier.delivery import Dispatcher, SenderFactory, WebhookSender
from notifier.scim import ScimSender
from notifier.settings import NotifierSettings
from notifier.store import Deliveries, Doc, Projections, ScimIds, StreamSeen, Subscriptions
from orgdir import metrics
from orgdir.bus import Router
from orgdir.clock import Clock
from orgdir.events import CloudEvent
from orgdir.service import Runtime

log = logging.getLogger(__name__)

CONSUMER = "all"


class Core:
    """Everything notifier keeps between requests and events."""

    def __init__(self, runtime: Runtime, settings: NotifierSettings, clock: Clock) -> None:
        db = runtime.db
        self.settings = settings
        self.clock = clock
        self.subscriptions = Subscriptions(db, clock)
        self.deliveries = Deliveries(db, clock)
        self.projections = Projections(db)
        self.seen = StreamSeen(db)
        self.scim_ids = ScimIds(db)
        senders: dict[str, SenderFactory] = {
            "webhook": lambda sub: WebhookSender(settings),
            "scim": lambda sub: ScimSender(settings, self.projections, self.scim_ids, clock),
        }
        self.dispatcher = Dispatcher(settings, self.deliveries, senders)
        self.subs: list[Doc] = []

    async def load(self) -> None:
        await self.projections.load()
        await self.seen.load()
        self.subs = await self.subscriptions.all()

    async def start(self) -> None:
        await self.dispatcher.start(self.subs)

    async def stop(self) -> None:
        await self.dispatcher.stop()

    async def reload(self) -> None:
        """Re-read subscriptions (after an API write, and periodically)."""
        self.subs = await self.subscriptions.all()
        self.dispatcher.sync(self.subs)

    def matching(self, event: CloudEvent) -> list[Doc]:
        out = []
        units: set[str] | None = None
        parents: dict[str, set[str]] | None = None
        for sub in self.subs:
            if not sub.get("active", True) or not domain.matches(sub["event_types"], event.type):
                continue
            if sub.get("unit"):
                if units is None:
                    units, parents = self.projections.units_of(event), self.projections.parents()
                assert parents is not None
                if not domain.in_subtree(units, sub["unit"], parents):
                    continue
            out.append(sub)
        return out

    async def handle(self, event: CloudEvent) -> None:
        async with self.seen.lock(CONSUMER, event):
            if await self.seen.is_stale(CONSUMER, event):
                metrics.EVENTS_CONSUMED.labels(
                    self.settings.service_name, self.settings.queue(CONSUMER), event.type, "stale"
                ).inc()
                return
            await self.projections.apply(event)
            stream = domain.stream_of(event.type, event.subject)
            for sub in self.matching(event):
                doc = await self.deliveries.create(sub, event, stream)
                if doc is not None:
                    self.dispatcher.add(doc)
            await self.seen.mark(CONSUMER, event)


def build_router(core: Core) -> Router:
    router = Router()

    @router.on("#")
    async def on_event(event: CloudEvent, data: Any) -> None:
        await core.handle(event)

    return router
