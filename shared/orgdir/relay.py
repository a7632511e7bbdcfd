"""The outbox relay: publish what writes left in documents' outboxes, then remove it.

Two paths share one publishing routine:

- fast path: a write in this process names its document, and the relay
  publishes it at once (by ``_id``, cheap even on FerretDB/SQLite);
- sweep: every ``relay_sweep_seconds`` it scans for outboxes that have waited
  longer than the sweep period (left by a crash or another replica) and takes
  a lease on each document before publishing, so replicas rarely duplicate.

Publish-then-remove means a crash in between publishes again; consumers skip
the repeat by ``sequence``. Nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from datetime import datetime, timedelta
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from orgdir import metrics
from orgdir.bus import Bus
from orgdir.clock import Clock
from orgdir.events import CloudEvent
from orgdir.settings import Settings
from orgdir.store import Doc, doc_lock

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
        self._pending: set[tuple[str, str]] = set()
        self._wake = asyncio.Event()
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.published = 0

    def notify(self, collection: str, uuid: str) -> None:
        """Called after every write in this process."""
        self._pending.add((collection, uuid))
        self._wake.set()

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._fast_loop(), name="relay-fast"),
            asyncio.create_task(self._sweep_loop(), name="relay-sweep"),
        ]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _fast_loop(self) -> None:
        backoff = 0.2
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, set()
            results = await asyncio.gather(
                *(self._drain_one(c, u, lease=False) for c, u in batch), return_exceptions=True
            )
            failed = [key for key, ok in zip(batch, results, strict=True) if ok is not True]
            if failed:
                self._pending.update(failed)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                self._wake.set()
            else:
                backoff = 0.2

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
            async for doc in self.db[name].find({"outbox.0": {"$exists": True}}, {"outbox": 1}):
                events = doc.get("outbox", [])
                backlog += len(events)
                first = datetime.fromisoformat(events[0]["time"])
                oldest = min(oldest, first)
                if first <= cutoff:
                    await self._drain_one(name, doc["_id"], lease=True)
        metrics.OUTBOX_BACKLOG.labels(self.settings.service_name).set(backlog)
        metrics.OUTBOX_OLDEST_AGE.labels(self.settings.service_name).set(
            max(0.0, (now - oldest).total_seconds()) if backlog else 0.0
        )
        return backlog

    async def _drain_one(self, collection: str, uuid: str, *, lease: bool) -> bool:
        """Publish one document's outbox in order; True when it is empty afterwards."""
        lock = self._locks.setdefault((collection, uuid), asyncio.Lock())
        try:
            async with lock:
                return await self._publish_doc(collection, uuid, lease)
        except Exception as exc:
            metrics.PUBLISH_FAILURES.labels(self.settings.service_name).inc()
            log.warning("outbox publish failed", extra={"doc": uuid, "error": str(exc)})
            return False
        finally:
            if not lock.locked():
                self._locks.pop((collection, uuid), None)

    async def _publish_doc(self, collection: str, uuid: str, lease: bool) -> bool:
        col = self.db[collection]
        if lease:
            now = self.clock.now()
            async with doc_lock(col, uuid):
                claimed = await col.update_one(
                    {
                        "_id": uuid,
                        "$or": [{"relay_lease_until": None}, {"relay_lease_until": {"$lt": now}}],
                    },
                    {
                        "$set": {
                            "relay_lease_until": now
                            + timedelta(seconds=self.settings.relay_lease_seconds),
                            "relay_owner": self.owner,
                        }
                    },
                )
            if not claimed.matched_count:
                return True  # another replica owns it
        doc = await col.find_one({"_id": uuid}, {"outbox": 1})
        events: list[dict[str, Any]] = list(doc.get("outbox", [])) if doc else []
        published: list[dict[str, Any]] = []
        try:
            for raw in events:
                await self.bus.publish(CloudEvent.model_validate(raw))
                published.append(raw)
        finally:
            update: dict[str, Any] = {}
            if published:
                update["$pullAll"] = {"outbox": published}
            if lease:
                update["$unset"] = {"relay_lease_until": "", "relay_owner": ""}
            if update:
                async with doc_lock(col, uuid):
                    await col.update_one({"_id": uuid}, update)
        self.published += len(published)
        return True
