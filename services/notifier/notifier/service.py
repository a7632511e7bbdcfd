"""Notifier's use cases and the state they share on one replica.

The consumer (``notifier.all``, bound to ``#``) hands every event to
``Notifier.handle``: update the projections, then durably record one
delivery per matching active subscription (``_id`` = ``subscription:event
id``, so a redelivered event adds nothing) and only then ack. Handling of one
stream (aggregate + subject) is serialised so its records are created in
sequence order; an event older than what was already handled for its stream
is skipped.

Replicas. ``notifier.all`` is single-active (RabbitMQ hands it to one
replica at a time and fails over to another): the projections and the
seen-streams cache are that replica's, and a replica that takes the queue
over reloads them, and queues every pending delivery, before it handles its
first message (``load_for_takeover``). Delivery workers run on every replica
(see ``notifier.delivery``); subscriptions are in every replica's memory,
kept current by notices (``Runtime.signals``): a write through the API is
applied on the answering replica at once and on the others within moments.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from notifier import domain
from notifier.delivery import Dispatcher, SenderFactory, WebhookSender
from notifier.readmodel import Projections
from notifier.schemas import (
    DeliveryOut,
    ReplayOut,
    SubscriptionIn,
    SubscriptionOut,
    SubscriptionPatch,
    SubscriptionStatus,
)
from notifier.scim import ScimSender
from notifier.settings import NotifierSettings
from notifier.store import INDEXES, SEALED_FIELDS, Deliveries, Doc, ScimIds, StreamSeen, Subscriptions
from orgdir import metrics, problems, visibility
from orgdir.bus import Consumer
from orgdir.clock import Clock
from orgdir.events import CloudEvent
from orgdir.service import Runtime

log = logging.getLogger(__name__)

CONSUMER = "all"  # the queue notifier.all (``consumers.routes``); also the seen streams' key


class Notifier:
    """Everything notifier keeps between requests and events on one replica, and its use cases."""

    def __init__(self, runtime: Runtime, settings: NotifierSettings, clock: Clock) -> None:
        db = runtime.db
        self.runtime = runtime
        self.replica = runtime.replica
        self.settings = settings
        self.clock = clock
        runtime.declare(*INDEXES)
        self.subscriptions = Subscriptions(db, clock, lambda: runtime.keyring)
        runtime.sealed("subscriptions", fields=SEALED_FIELDS)
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
        self.events: Consumer | None = None  # notifier.all's consumer (set by the app)
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

    # ------------------------------------------------------------------ use cases: subscriptions

    async def list_subscriptions(self, *, limit: int, cursor: str | None) -> tuple[list[SubscriptionOut], str | None]:
        docs, nxt = await self.subscriptions.page(limit=limit, cursor=cursor)
        return await self._subs_out(docs), nxt

    async def get_subscription(self, sid: str) -> SubscriptionOut:
        return (await self._subs_out([await self.subscriptions.require(domain.parse_uuid(sid))]))[0]

    async def create_subscription(self, body: SubscriptionIn) -> tuple[SubscriptionOut, bool]:
        return await self._write(str(uuid.uuid4()), domain.new_config(body), None)

    async def put_subscription(
        self, sid: str, body: SubscriptionIn, if_match: int | None
    ) -> tuple[SubscriptionOut, bool]:
        """Create or replace under a client's uuid; the same body twice makes no new version."""
        sid = domain.parse_uuid(sid)
        previous = await self.subscriptions.get(sid)
        return await self._write(sid, domain.new_config(body, previous), if_match)

    async def patch_subscription(
        self, sid: str, body: SubscriptionPatch, if_match: int | None
    ) -> SubscriptionOut:
        previous = await self.subscriptions.require(domain.parse_uuid(sid))
        if if_match is not None and if_match != previous["version"]:
            raise problems.precondition_failed(previous["version"], if_match)
        cfg = domain.patched_config(previous, body)
        out, _ = await self._write(previous["_id"], cfg, previous["version"])
        return out

    async def delete_subscription(self, sid: str, if_match: int | None) -> None:
        """Removes the target; its undelivered deliveries become ``failed`` (still listed,
        replayable only after re-creating a subscription with the same uuid)."""
        sid = domain.parse_uuid(sid)
        await self.subscriptions.delete(sid, if_match)
        await self.subscription_changed(sid)  # every replica stops its worker
        await self.deliveries.fail_pending_of(sid, "subscription deleted")

    async def _write(self, sid: str, cfg: dict[str, Any], expected: int | None) -> tuple[SubscriptionOut, bool]:
        doc, created = await self.subscriptions.put(sid, cfg, expected)
        await self.subscription_changed(sid)  # this replica at once, the others within moments
        return (await self._subs_out([doc]))[0], created

    async def _subs_out(self, docs: list[Doc]) -> list[SubscriptionOut]:
        backlogs = await self.deliveries.backlogs([d["_id"] for d in docs])
        return [
            SubscriptionOut(
                **domain.public_view(d),
                status=SubscriptionStatus(
                    **self.dispatcher.status(d["_id"]), backlog=backlogs.get(d["_id"], 0)
                ),
            )
            for d in docs
        ]

    # ------------------------------------------------------------------ use cases: deliveries

    async def list_deliveries(
        self,
        *,
        status: str | None,
        subscription: str | None,
        subject: str | None,
        event_type: str | None,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[DeliveryOut], str | None]:
        q: dict[str, Any] = {}
        if status is not None:
            q["status"] = domain.check_status(status)
        if subscription:
            q["subscription"] = domain.parse_uuid(subscription)
        if subject:
            q["subject"] = subject
        if event_type:
            q["event_type"] = event_type
        docs, nxt = await self.deliveries.page(q, limit=limit, cursor=cursor)
        return [DeliveryOut.of(d) for d in docs], nxt

    async def get_delivery(self, did: str, ceiling: visibility.Level = "internal") -> DeliveryOut:
        """One delivery with the event sent; a reader without ``orgdir:read:secret`` sees no secret
        address in it (a target allowed secrets got them)."""
        doc = await self._delivery(did)
        if doc.get("event") and ceiling != "secret":
            event = domain.redact(
                CloudEvent.model_validate(doc["event"]), ceiling, self.projections.visibility_user_key
            )
            doc = {**doc, "event": event.model_dump(mode="json")}
        return DeliveryOut.of(doc)

    async def replay_delivery(self, did: str) -> DeliveryOut:
        """Queue a delivery again (any final state)."""
        doc = await self._delivery(did)
        domain.check_replayable(doc, await self.subscriptions.get(doc["subscription"]) is not None)
        return DeliveryOut.of(await self._requeue(did))

    async def replay_subscription(self, sid: str, since: datetime, statuses: list[str]) -> ReplayOut:
        """Send again everything this target got (or failed to get) since a time, in order."""
        sub = await self.subscriptions.require(domain.parse_uuid(sid))
        domain.check_replay_statuses(statuses)
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        docs = await self.deliveries.of_subscription_since(sub["_id"], since, statuses)
        docs.sort(key=lambda d: (d["stream"], d["sequence"]))
        for d in docs:
            await self._requeue(d["_id"])
        return ReplayOut(subscription=sub["_id"], replayed=len(docs))

    async def _delivery(self, did: str) -> Doc:
        doc = await self.deliveries.get(did)
        if doc is None:
            raise problems.not_found("delivery", did)
        return doc

    async def _requeue(self, did: str) -> Doc:
        """Back to pending, leased to this replica, which sends it (a conditional write: of two
        replays at once, one puts it back; the other finds it pending already)."""
        doc = await self.deliveries.replay(did, self.replica, self.settings.lease_seconds)
        if doc is None:
            doc = await self._delivery(did)
        self.dispatcher.add(doc)
        return doc

    # ------------------------------------------------------------------ projections for SCIM

    async def ensure_fresh(self) -> None:
        """Projections at least as new as the database, before the SCIM connector reads them
        (to build what it sends, or to check what landed).

        The replica handling ``notifier.all`` applied every stored copy itself, after
        reloading at its takeover. Any other one, sending a delivery it recorded while
        it held the queue, one it took over, or a replay, catches up first: built from
        an older picture, a Group replace landing after a newer one undid it for good.
        """
        if self.events is not None and self.events.holds():
            return
        await self.projections.catch_up()

    # ------------------------------------------------------------------ the consumer

    def matching(self, event: CloudEvent) -> list[Doc]:
        """Active subscriptions for this event; a unit filter that cannot decide yet raises
        ``UnitNotYetKnown``, so the event is retried rather than dropped."""
        out = []
        units: set[str] | None = None
        for sub in self.subs.values():
            if not sub.get("active", True) or not domain.matches(sub["event_types"], event.type):
                continue
            if sub.get("unit"):
                if units is None:
                    units = self.projections.units_of(event)
                if not domain.in_subtree(units, sub["unit"], self.projections.tree):
                    continue
            out.append(sub)
        return out

    async def handle(self, event: CloudEvent) -> None:
        """One stream's events come one at a time, in arrival order (``consumers.routes``, ``in_order``)."""
        self._handling += 1
        self._idle.clear()
        try:
            await self._handle(event)
        finally:
            self._handling -= 1
            if self._handling == 0:
                self._idle.set()

    async def _handle(self, event: CloudEvent) -> None:
        if await self.seen.is_stale(CONSUMER, event):
            # Another replica applied it (this one took the queue over while that one still
            # worked): memory may have been loaded just before its copy was stored.
            await self.projections.reread(event.type.split(".", 1)[0], event.subject)
            metrics.EVENTS_CONSUMED.labels(
                self.settings.service_name, self.settings.queue(CONSUMER), event.type, "stale"
            ).inc()
            return
        await self.projections.apply(event)
        stream = domain.stream_of(event.type, event.subject)
        subs = self.matching(event)
        if any(domain.ceiling_of(sub) != "secret" for sub in subs):
            unknown = domain.unprojected_classes(event, self.projections.has_class)
            if unknown:
                raise domain.ClassNotYetKnown(f"visibility classes not yet known: {', '.join(sorted(unknown))}")
        for sub in subs:
            # What the target may not see of addresses is left out before the delivery is stored:
            # neither the payload nor the delivery log holds it.
            sent = domain.redact(event, domain.ceiling_of(sub), self.projections.visibility_user_key)
            doc, _ = await self.deliveries.create(
                sub, sent, stream, self.replica, self.settings.lease_seconds
            )
            if doc is not None:
                self.dispatcher.add(doc)  # a redelivered one too, if still pending: in order
        await self.seen.mark(CONSUMER, event)
