"""The one consumer ``notifier.all`` (bound to ``#``) and the state it feeds.

For each event: update the projections, then durably record one delivery per
matching active subscription (``_id`` = ``subscription:event id``, so a
redelivered event adds nothing) and only then ack. Handling of one stream
(aggregate + subject) is serialised so its records are created in sequence
order; an event older than what was already handled for its stream is skipped.

Replicas. ``notifier.all`` is single-active (RabbitMQ hands it to one
replica at a time and fails over to another): the projections and the
seen-streams cache are that replica's, and a replica that takes the queue
over reloads them, and queues every pending delivery, before it handles its
first message (``load_for_takeover``). Delivery workers run on every replica
(see ``notifier.delivery``); subscriptions are in every replica's memory,
kept current by notices (``Runtime.signals``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from notifier import domain
from notifier.delivery import Dispatcher, Pending, SenderFactory, WebhookSender
from notifier.scim import ScimSender
from notifier.settings import NotifierSettings
from notifier.store import (
    INDEXES,
    Deliveries,
    Doc,
    Projections,
    ScimIds,
    StreamSeen,
    Subscriptions,
)
from orgdir import metrics
from orgdir.bus import Router
from orgdir.clock import Clock
from orgdir.events import CloudEvent
from orgdir.service import Runtime

log = logging.getLogger(__name__)

CONSUMER = "all"


class Core:
    """Everything notifier keeps between requests and events, on one replica."""

    def __init__(self, runtime: Runtime, settings: NotifierSettings, clock: Clock) -> None:
        db = runtime.db
        self.runtime = runtime
        self.replica = runtime.replica
        self.settings = settings
        self.clock = clock
        runtime.declare(*INDEXES)
        self.subscriptions = Subscriptions(db, clock)
        self.deliveries = Deliveries(db, clock)
        self.projections = Projections(db)
        self.seen = StreamSeen(db)
        self.scim_ids = ScimIds(db)
        senders: dict[str, SenderFactory] = {
            "webhook": lambda sub: WebhookSender(settings),
            "scim": lambda sub: ScimSender(
                settings, self.projections, self.scim_ids, clock, fresh=self.ensure_fresh
            ),
        }
        self.dispatcher = Dispatcher(
            settings, self.deliveries, senders, self.replica, unknown=self.forget_deleted
        )
        self.subs: dict[str, Doc] = {}
        self._subs_lock = asyncio.Lock()  # applies one subscription change at a time in memory
        # Subscriptions are plain documents (no domain events): a write, or a replica handing its
        # deliveries back, is a notice to every replica, which re-reads from the database.
        self.signals = runtime.signals("subscriptions", self.on_signal, self.reload_subscriptions)
        self._fresh_lock = asyncio.Lock()
        self._handling = 0
        self._idle = asyncio.Event()
        self._idle.set()
        runtime.loaders.append(self.load)

    # ------------------------------------------------------------------ lifecycle

    async def load(self) -> None:
        """The runtime's loader (after the signals queue is bound): subscriptions, then the workers.

        Projections and seen streams are loaded when this replica handles its
        first message (a new process is never the recorded holder, so that is
        a takeover), or when a SCIM delivery needs them (``ensure_fresh``).
        """
        await self.reload_subscriptions()
        await self.dispatcher.start(list(self.subs.values()))

    async def on_signal(self, notice: dict[str, Any]) -> None:
        if "released" in notice:
            self.dispatcher.released(str(notice["released"]))
        else:
            await self.refresh_subscription(str(notice["subscription"]))

    async def load_for_takeover(self) -> None:
        """This replica now handles ``notifier.all``: catch up with what the previous one did.

        Reload projections and seen streams, and queue every pending delivery
        (so this replica knows each stream's older deliveries before it
        records newer ones).
        """
        await self.projections.load()
        await self.seen.load()
        queued = await self.dispatcher.load_pending()
        log.info("took over notifier.all", extra={"replica": self.replica, "pending": queued})

    async def stop(self) -> None:
        """Stop taking events, let handlers in progress finish, then stop the workers.

        The workers hand their pending deliveries back at the end, so another
        replica goes on at once instead of after a lease.
        """
        for consumer in self.runtime.consumers:
            with contextlib.suppress(Exception):
                await consumer.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), 10)
        await self.dispatcher.stop()
        try:  # the others take the handed-back deliveries at once, not when the leases run out
            await asyncio.wait_for(self.signals.send_now({"released": self.replica}, attempts=2), 5)
        except TimeoutError:
            log.warning("release notice not sent; the leases run out instead")

    async def ready(self) -> dict[str, bool]:
        checks = await self.runtime.ready()
        checks["subscriptions"] = self.signals.bound.is_set() and self.signals.loaded
        return checks

    # ------------------------------------------------------------------ subscriptions

    async def reload_subscriptions(self) -> None:
        """Every subscription from the database (start, rebind, reconnect)."""
        async with self._subs_lock:
            self.subs = {d["_id"]: d for d in await self.subscriptions.all()}
            self.dispatcher.sync(list(self.subs.values()))

    async def refresh_subscription(self, sid: str) -> None:
        """One subscription changed (on this replica or another): re-read it."""
        async with self._subs_lock:
            doc = await self.subscriptions.get(sid)
            if doc is None:
                self.subs.pop(sid, None)
            else:
                self.subs[sid] = doc
            self.dispatcher.sync(list(self.subs.values()))

    async def forget_deleted(self, sid: str) -> None:
        """Pending deliveries of a deleted subscription (recorded by a replica that had not yet
        heard of the deletion) fail like those the deletion failed itself."""
        if sid not in self.subs and await self.subscriptions.get(sid) is None:
            await self.deliveries.fail_pending_of(sid, "subscription deleted")

    async def subscription_changed(self, sid: str) -> None:
        """After a write through the API: this replica at once, every other one by a notice."""
        await self.refresh_subscription(sid)
        self.signals.send({"subscription": sid})

    # ------------------------------------------------------------------ projections for SCIM

    async def ensure_fresh(self, p: Pending) -> None:
        """Projections at least as new as the delivery, before the SCIM connector reads them.

        The replica that recorded a delivery had applied its event (and all
        before it) first. A delivery this replica took over from another, or
        a replay, is sent with projections re-read after it became pending.
        """
        if p.created_by == self.replica and p.queued_at <= p.order:
            return
        async with self._fresh_lock:
            loaded = self.projections.loaded_at
            if loaded is None or loaded.timestamp() <= p.queued_at:
                await self.projections.load()

    # ------------------------------------------------------------------ the consumer

    def matching(self, event: CloudEvent) -> list[Doc]:
        out = []
        units: set[str] | None = None
        parents: dict[str, set[str]] | None = None
        for sub in self.subs.values():
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
        """Nothing may suspend before the stream lock: messages take it in the order the consumer
        passed them on (arrival order: its takeover check is first-in, first-out)."""
        self._handling += 1
        self._idle.clear()
        try:
            async with self.seen.lock(CONSUMER, event):
                await self._handle(event)
        finally:
            self._handling -= 1
            if self._handling == 0:
                self._idle.set()

    async def _handle(self, event: CloudEvent) -> None:
        if await self.seen.is_stale(CONSUMER, event):
            metrics.EVENTS_CONSUMED.labels(
                self.settings.service_name, self.settings.queue(CONSUMER), event.type, "stale"
            ).inc()
            return
        await self.projections.apply(event)
        stream = domain.stream_of(event.type, event.subject)
        for sub in self.matching(event):
            doc, _ = await self.deliveries.create(
                sub, event, stream, self.replica, self.settings.lease_seconds
            )
            if doc is not None:
                self.dispatcher.add(doc)  # a redelivered one too, if still pending: in order
        await self.seen.mark(CONSUMER, event)


def build_router(core: Core) -> Router:
    router = Router()

    @router.on("#")
    async def on_event(event: CloudEvent, data: Any) -> None:
        await core.handle(event)

    return router
