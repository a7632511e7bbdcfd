"""The outbox relay: publish what writes left in documents' outboxes, then remove it.

Two paths share one publishing routine:

- fast path: a write in this process names its document, and the relay
  publishes it at once (by ``_id``); removing
  what went out is a separate queue, so publishing never waits behind the
  writes that compete for the database (a 2,000-person recompute published
  almost nothing until it had finished writing);
- sweep: every ``relay_sweep_seconds`` it looks for outboxes that have waited
  longer than the sweep period (left by a crash or another replica) and takes
  a lease on each document before publishing, so replicas rarely duplicate.
  It finds them by ``outbox_since`` (sparse index), which a write sets with its
  events and the sweep clears once the outbox is empty: on MongoDB a sweep
  reads what was written since the last one, not the whole collection.

Publish-then-remove means a crash in between publishes again; consumers skip
the repeat by ``sequence``. Nothing is lost.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
from collections import OrderedDict
from datetime import datetime, timedelta
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from orgdir import metrics
from orgdir.bus import Bus
from orgdir.clock import Clock
from orgdir.events import CloudEvent
from orgdir.settings import Settings
from orgdir.store import MAX_BULK, OUTBOX_SINCE, Doc

log = logging.getLogger(__name__)


class OutboxRelay:
    def __init__(
        self, db: AsyncDatabase[Doc], collections: list[str], bus: Bus, settings: Settings, clock: Clock
    ) -> None:
        self.db = db
        self.collections = collections
        self.bus = bus
        self.settings = settings
        self.clock = clock
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{id(self)}"
        self._pending: dict[tuple[str, str], list[dict[str, Any]] | None] = {}
        self._inflight: set[tuple[str, str]] = set()  # taken by the fast path right now
        self._published: dict[tuple[str, str], list[dict[str, Any]]] = {}  # out, not yet pulled
        self._removable = asyncio.Event()
        self._recent: OrderedDict[str, None] = OrderedDict()  # ids published lately
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._slots = asyncio.Semaphore(64)  # bounded in-flight publishes
        self._marked: set[str] = set()  # collections whose older outboxes this process has marked
        self._counted_at = float("-inf")  # loop time of the last backlog count (a throttle, not a truth)
        self.published = 0

    def notify(self, collection: str, uuid: str, outbox: list[dict[str, Any]] | None = None) -> None:
        """Called after every write in this process, with the outbox the write left.

        Passing the outbox spares a read per write.
        """
        self._pending[(collection, uuid)] = outbox
        self._wake.set()

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._fast_loop(), name="relay-fast"),
            asyncio.create_task(self._removal_loop(), name="relay-removal"),
            asyncio.create_task(self._sweep_loop(), name="relay-sweep"),
        ]

    async def stop(self, drain_seconds: float = 5.0) -> None:
        """Stop; first try briefly to pull what was published (else the next sweep republishes it)."""
        if not self._tasks:
            return
        fast, removal, sweep = self._tasks
        fast.cancel()
        sweep.cancel()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_seconds
        while self._published and not removal.done() and loop.time() < deadline:
            await asyncio.sleep(0.02)
        removal.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _fast_loop(self) -> None:
        backoff = 0.2
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, {}
            self._inflight = set(batch)
            failed = await self._fast_round(batch)
            self._inflight = set()
            if failed:
                for key in failed:
                    self._pending.setdefault(key, None)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                self._wake.set()
            else:
                backoff = 0.2

    async def _fast_round(self, batch: dict[tuple[str, str], list[dict[str, Any]] | None]) -> list[tuple[str, str]]:
        """Publish a batch of documents' outboxes and queue what went out for removal."""
        keys = list(batch)
        results = await asyncio.gather(
            *(self._publish_bounded(c, u, batch[(c, u)]) for c, u in keys), return_exceptions=True
        )
        failed: list[tuple[str, str]] = []
        for key, result in zip(keys, results, strict=True):
            if isinstance(result, BaseException):
                metrics.PUBLISH_FAILURES.labels(self.settings.service_name).inc()
                log.warning("outbox publish failed", extra={"doc": key[1], "error": str(result)})
                failed.append(key)
            elif result:
                queued = self._published.setdefault(key, [])
                queued.extend(e for e in result if e not in queued)
                self._removable.set()
        return failed

    async def _removal_loop(self) -> None:
        """Pull published events from their documents, in bulk, until none are left."""
        backoff = 0.2
        while True:
            await self._removable.wait()
            self._removable.clear()
            while self._published:
                chunk = dict(itertools.islice(self._published.items(), MAX_BULK))
                per_collection: dict[str, dict[str, list[dict[str, Any]]]] = {}
                for (collection, uuid), events in chunk.items():
                    per_collection.setdefault(collection, {})[uuid] = list(events)
                try:
                    for collection, per_doc in per_collection.items():
                        await self._remove(collection, per_doc)
                except Exception as exc:
                    log.warning("outbox removal failed", extra={"error": str(exc)})
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                backoff = 0.2
                for collection, per_doc in per_collection.items():
                    for uuid, events in per_doc.items():
                        # Published again meanwhile? Keep only what arrived after this pull started.
                        key = (collection, uuid)
                        rest = [e for e in self._published.get(key, []) if e not in events]
                        if rest:
                            self._published[key] = rest
                        else:
                            self._published.pop(key, None)

    async def _publish_bounded(
        self, collection: str, uuid: str, known: list[dict[str, Any]] | None
    ) -> list[dict[str, Any]]:
        async with self._slots:
            if known is None:
                doc = await self.db[collection].find_one({"_id": uuid}, {"outbox": 1})
                known = list(doc.get("outbox", [])) if doc else []
            return await self._publish_events(known)

    async def _publish_events(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Publish in order; returns what was published (all, unless an exception stops it)."""
        published: list[dict[str, Any]] = []
        for raw in events:
            if raw["id"] not in self._recent:
                await self.bus.publish(CloudEvent.model_validate(raw))
                self._remember(raw["id"])
            published.append(raw)
        return published

    async def _remove(self, collection: str, per_doc: dict[str, list[dict[str, Any]]]) -> None:
        """Pull what was published: one bulk write, ``$pullAll`` of exact entries.

        Exact entries make it safe beside concurrent writers: an event another
        replica pushed meanwhile is not among them and stays. When the pull
        empties the outbox (it holds exactly these events: the usual case) the
        same update clears ``outbox_since``, so the sweep need not write the
        document again; otherwise the second update pulls and the mark stays
        for the sweep.
        """
        ops: list[UpdateOne] = []
        for uuid, events in per_doc.items():
            ids = [e["id"] for e in events]
            pull = {"$pullAll": {"outbox": events}}
            ops.append(
                UpdateOne(
                    {"_id": uuid, "outbox": {"$size": len(events)}, "outbox.id": {"$all": ids}},
                    {**pull, "$unset": {OUTBOX_SINCE: ""}},
                )
            )
            ops.append(UpdateOne({"_id": uuid, "outbox.id": {"$in": ids}}, pull))
        await self.db[collection].bulk_write(ops, ordered=True)
        self.published += sum(len(events) for events in per_doc.values())

    async def _sweep_loop(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception as exc:
                log.warning("outbox sweep failed", extra={"error": str(exc)})
            await asyncio.sleep(self.settings.relay_sweep_seconds)

    async def sweep(self, min_age: timedelta | None = None) -> int:
        """Publish outboxes older than ``min_age``; update the backlog gauges. Returns the backlog."""
        now = self.clock.now()
        cutoff = now - (min_age if min_age is not None else timedelta(seconds=self.settings.relay_sweep_seconds))
        backlog, oldest = 0, now
        for name in self.collections:
            col = self.db[name]
            await self._mark_older(name, now)
            drained: list[str] = []
            async for doc in col.find({OUTBOX_SINCE: {"$exists": True}}, {"outbox": 1}):
                if not doc.get("outbox"):
                    drained.append(doc["_id"])
                    continue
                events = doc.get("outbox", [])
                backlog += len(events)
                first = datetime.fromisoformat(events[0]["time"])
                oldest = min(oldest, first)
                key = (name, doc["_id"])
                # Ours and merely queued: the fast path has it; a sweep would only add writes.
                ours = key in self._pending or key in self._inflight or key in self._published
                if first <= cutoff and not ours:
                    await self._drain_leased(name, doc["_id"])
            for at in range(0, len(drained), MAX_BULK):  # unmarked by _id (still empty): the index holds
                await col.bulk_write(  # only what waits
                    [
                        UpdateOne({"_id": i, "outbox": {"$size": 0}}, {"$unset": {OUTBOX_SINCE: ""}})
                        for i in drained[at : at + MAX_BULK]
                    ],
                    ordered=False,
                )
        self._gauge(backlog, oldest, now)
        return backlog

    async def count_backlog(self, max_age: float = 1.0) -> None:
        """Recount the backlog gauges for a scrape, unless counted within ``max_age`` seconds.

        The sweep runs every 30 s when deployed; a gauge that old would show an
        outbox already drained, or hide one that is growing now. Counting
        publishes nothing, so it is safe on every replica at any time.
        """
        loop = asyncio.get_running_loop()
        if loop.time() - self._counted_at < max_age:
            return
        now = self.clock.now()
        backlog, oldest = 0, now
        for name in self.collections:
            await self._mark_older(name, now)
            async for doc in self.db[name].find({OUTBOX_SINCE: {"$exists": True}}, {"outbox.time": 1}):
                if events := doc.get("outbox"):
                    backlog += len(events)
                    oldest = min(oldest, datetime.fromisoformat(events[0]["time"]))
        self._gauge(backlog, oldest, now)

    async def _mark_older(self, name: str, now: datetime) -> None:
        """Outboxes written before ``outbox_since`` existed: marked once per process and collection."""
        if name in self._marked:
            return
        await self.db[name].update_many(
            {"outbox.0": {"$exists": True}, OUTBOX_SINCE: {"$exists": False}}, {"$set": {OUTBOX_SINCE: now}}
        )
        self._marked.add(name)

    def _gauge(self, backlog: int, oldest: datetime, now: datetime) -> None:
        self._counted_at = asyncio.get_running_loop().time()
        metrics.OUTBOX_BACKLOG.labels(self.settings.service_name).set(backlog)
        metrics.OUTBOX_OLDEST_AGE.labels(self.settings.service_name).set(
            max(0.0, (now - oldest).total_seconds()) if backlog else 0.0
        )

    async def _drain_leased(self, collection: str, uuid: str) -> None:
        """Sweep path: claim a lease with a conditional write, publish only if the claim won.

        The filter matches only a document with no live lease, so of two
        replicas sweeping at once exactly one gets ``modified_count == 1``.
        """
        col = self.db[collection]
        now = self.clock.now()
        claim = await col.update_one(
            {
                "_id": uuid,
                "$or": [{"relay_lease_until": None}, {"relay_lease_until": {"$lt": now}}],
            },
            {
                "$set": {
                    "relay_lease_until": now + timedelta(seconds=self.settings.relay_lease_seconds),
                    "relay_owner": self.owner,
                }
            },
        )
        if claim.modified_count != 1:
            return  # gone, or another replica holds the lease
        published: list[dict[str, Any]] = []
        try:
            doc = await col.find_one({"_id": uuid}, {"outbox": 1})
            published = await self._publish_events(list(doc.get("outbox", [])) if doc else [])
        except Exception as exc:
            metrics.PUBLISH_FAILURES.labels(self.settings.service_name).inc()
            log.warning("outbox publish failed", extra={"doc": uuid, "error": str(exc)})
        finally:
            update: dict[str, Any] = {"$unset": {"relay_lease_until": "", "relay_owner": ""}}
            if published:
                update["$pullAll"] = {"outbox": published}
            await col.update_one({"_id": uuid, "relay_owner": self.owner}, update)
            self.published += len(published)

    def _remember(self, event_id: str) -> None:
        self._recent[event_id] = None
        if len(self._recent) > 10_000:
            self._recent.popitem(last=False)
