"""Notifier's own state: subscriptions, the delivery log, projections and SCIM id maps.

Hot paths go by ``_id`` only (FerretDB scans everything else); whatever needs a
walk (unit tree, role holders) is held in memory and loaded once at start.
Notifier is meant to run as ONE active replica: the delivery workers keep the
pending queue in memory (rebuilt from the database on start).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError
from pymongo.operations import InsertOne, ReplaceOne, UpdateOne

from orgdir import problems
from orgdir.clock import Clock
from orgdir.events import CloudEvent
from orgdir.store import BulkWriter, Doc, MongoSeenStore, doc_lock, key_lock, paginate


class Subscriptions:
    """Plain collection keyed by uuid, with a version for ETag/If-Match."""

    def __init__(self, db: AsyncDatabase[Doc], clock: Clock) -> None:
        self.col: AsyncCollection[Doc] = db["subscriptions"]
        self.clock = clock

    async def all(self) -> list[Doc]:
        return [d async for d in self.col.find({}).sort("_id", 1)]

    async def get(self, uuid: str) -> Doc | None:
        return await self.col.find_one({"_id": uuid})

    async def require(self, uuid: str) -> Doc:
        doc = await self.get(uuid)
        if doc is None:
            raise problems.not_found("subscription", uuid)
        return doc

    async def put(self, uuid: str, cfg: dict[str, Any], expected: int | None) -> tuple[Doc, bool]:
        """Create or replace; unchanged config keeps the version. Returns (doc, created)."""
        async with doc_lock(self.col, uuid):
            current = await self.get(uuid)
            now = self.clock.now()
            if current is None:
                if expected is not None:
                    raise problems.not_found("subscription", uuid)
                doc = {"_id": uuid, "version": 1, **cfg, "created_at": now, "updated_at": now}
                try:
                    await self.col.insert_one(doc)
                except DuplicateKeyError as exc:
                    raise problems.conflict(f"subscription {uuid} already exists") from exc
                return doc, True
            if expected is not None and current["version"] != expected:
                raise problems.precondition_failed(current["version"], expected)
            if all(current.get(k) == v for k, v in cfg.items()):
                return current, False
            doc = {**current, **cfg, "version": current["version"] + 1, "updated_at": now}
            await self.col.replace_one({"_id": uuid}, doc)
            return doc, False

    async def delete(self, uuid: str, expected: int | None) -> None:
        async with doc_lock(self.col, uuid):
            current = await self.require(uuid)
            if expected is not None and current["version"] != expected:
                raise problems.precondition_failed(current["version"], expected)
            await self.col.delete_one({"_id": uuid})


def delivery_id(subscription: str, event_id: str) -> str:
    return f"{subscription}:{event_id}"


class Deliveries:
    """The delivery log: one document per (subscription, event), ``_id`` = ``sub:event``."""

    def __init__(self, db: AsyncDatabase[Doc], clock: Clock) -> None:
        self.col: AsyncCollection[Doc] = db["deliveries"]
        self.clock = clock
        self.writer = BulkWriter(self.col)  # a busy target's outcomes go out together

    async def create(self, sub: Mapping[str, Any], event: CloudEvent, stream: str) -> Doc | None:
        """Record a delivery; None when it exists already (a redelivered event)."""
        now = self.clock.now()
        doc: Doc = {
            "_id": delivery_id(sub["_id"], event.id),
            "subscription": sub["_id"],
            "kind": sub["kind"],
            "event_id": event.id,
            "event_type": event.type,
            "subject": event.subject,
            "stream": stream,
            "sequence": event.sequence,
            "event_time": event.time,
            "event": event.model_dump(mode="json"),
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
            "horizon_start": now,
            "updated_at": now,
            "delivered_at": None,
            "last_status": None,
            "last_error": None,
        }
        try:
            async with key_lock(self.col, doc["_id"]):
                await self.writer.write(InsertOne(doc))
        except DuplicateKeyError:
            return None
        return doc

    async def get(self, did: str) -> Doc | None:
        return await self.col.find_one({"_id": did})

    async def set(self, did: str, fields: dict[str, Any]) -> None:
        async with key_lock(self.col, did):
            await self.writer.write(
                UpdateOne({"_id": did}, {"$set": {**fields, "updated_at": self.clock.now()}})
            )

    async def pending(self) -> list[Doc]:
        """Everything still to send (start-up: rebuilds the in-memory queues)."""
        return [d async for d in self.col.find({"status": "pending"}).sort("created_at", 1)]

    async def of_subscription_since(
        self, sub: str, since: datetime, statuses: list[str]
    ) -> list[Doc]:
        q = {"subscription": sub, "event_time": {"$gte": since}, "status": {"$in": statuses}}
        return [d async for d in self.col.find(q, {"event": 0})]

    async def page(
        self, query: dict[str, Any], *, limit: int, cursor: str | None
    ) -> tuple[list[Doc], str | None]:
        return await paginate(self.col, query, limit=limit, cursor=cursor, projection={"event": 0})


class ProjectionCache:
    """Another service's aggregates, newest sequence wins; in memory, persisted by ``_id``."""

    def __init__(self, db: AsyncDatabase[Doc], collection: str) -> None:
        self.col: AsyncCollection[Doc] = db[collection]
        self.items: dict[str, Doc] = {}
        self.writer = BulkWriter(self.col)

    async def load(self) -> None:
        self.items = {d["_id"]: d async for d in self.col.find({})}

    def get(self, key: str) -> Doc | None:
        return self.items.get(key)

    async def apply(self, key: str, sequence: int, body: dict[str, Any]) -> bool:
        async with key_lock(self.col, key):
            current = self.items.get(key)
            if current is not None and int(current["sequence"]) >= sequence:
                return False
            doc = {**body, "_id": key, "sequence": sequence}
            await self.writer.write(ReplaceOne({"_id": key}, doc, upsert=True))
            self.items[key] = doc
            return True


class StreamSeen(MongoSeenStore):
    """The platform's seen-store, cached in memory, with a lock per stream.

    The consumer holds the stream's lock from the stale check to the mark, so
    one subject's deliveries are created in sequence order. The cache is
    loaded at start: notifier runs one active consumer.
    """

    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        super().__init__(db, "_seen_streams")
        self.cache: dict[str, int] = {}
        self.locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    async def load(self) -> None:
        self.cache = {d["_id"]: int(d["sequence"]) async for d in self.col.find({})}

    def lock(self, consumer: str, event: CloudEvent) -> asyncio.Lock:
        k = self.key(consumer, event)
        lock = self.locks.get(k)
        if lock is None:
            lock = self.locks[k] = asyncio.Lock()
        return lock

    async def is_stale(self, consumer: str, event: CloudEvent) -> bool:
        return self.cache.get(self.key(consumer, event), 0) >= event.sequence

    async def mark(self, consumer: str, event: CloudEvent) -> None:
        await super().mark(consumer, event)
        k = self.key(consumer, event)
        self.cache[k] = max(self.cache.get(k, 0), event.sequence)


class ScimIds:
    """Which SCIM resource id stands for which person/role at which target."""

    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.col: AsyncCollection[Doc] = db["scim_ids"]

    async def get(self, sub: str, kind: str, key: str) -> str | None:
        doc = await self.col.find_one({"_id": f"{sub}:{kind}:{key}"})
        return None if doc is None else str(doc["scim_id"])

    async def set(self, sub: str, kind: str, key: str, scim_id: str) -> None:
        await self.col.replace_one(
            {"_id": f"{sub}:{kind}:{key}"},
            {"scim_id": scim_id, "sub": sub, "kind": kind},
            upsert=True,
        )

    async def drop(self, sub: str, kind: str, key: str) -> None:
        await self.col.delete_one({"_id": f"{sub}:{kind}:{key}"})


PROJECTED = {
    "orgunit": "p_units",
    "person": "p_persons",
    "engagement": "p_engagements",
    "manager": "p_managers",
    "account": "p_accounts",
    "access": "p_rights",
    "role": "p_roles",
}


class Projections:
    """Notifier-side copies of what the filters and the SCIM connector need."""

    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.caches = {agg: ProjectionCache(db, col) for agg, col in PROJECTED.items()}
        self.engagements_of: dict[str, set[str]] = {}
        self.accounts_of: dict[str, set[str]] = {}

    async def load(self) -> None:
        for cache in self.caches.values():
            await cache.load()
        for uid, doc in self.caches["engagement"].items.items():
            self.engagements_of.setdefault(str(doc.get("person")), set()).add(uid)
        for uid, doc in self.caches["account"].items.items():
            self.accounts_of.setdefault(str(doc.get("person")), set()).add(uid)

    def __getitem__(self, aggregate: str) -> ProjectionCache:
        return self.caches[aggregate]

    async def apply(self, event: CloudEvent) -> None:
        aggregate = event.type.split(".", 1)[0]
        cache = self.caches.get(aggregate)
        if cache is None:
            return
        body: dict[str, Any] = {"data": event.data, "type": event.type}
        if aggregate == "engagement":
            body["person"] = event.data.get("person")
            self.engagements_of.setdefault(str(event.data.get("person")), set()).add(event.subject)
        if aggregate == "account":
            body["person"] = event.data.get("person")
            self.accounts_of.setdefault(str(event.data.get("person")), set()).add(event.subject)
        await cache.apply(event.subject, event.sequence, body)

    def parents(self) -> dict[str, set[str]]:
        """Every parent a unit's timeline names (a move keeps the old tree reachable)."""
        out: dict[str, set[str]] = {}
        for uid, doc in self.caches["orgunit"].items.items():
            out[uid] = {s["parent"] for s in doc["data"].get("timeline", []) if s.get("parent")}
        return out

    def units_of_person(self, person: str) -> set[str]:
        units: set[str] = set()
        for eid in self.engagements_of.get(person, ()):
            doc = self.caches["engagement"].get(eid)
            if doc:
                units |= {s["unit"] for s in doc["data"].get("timeline", []) if s.get("unit")}
        return units

    def units_of(self, event: CloudEvent) -> set[str]:
        """The units an event is about, for a subscription's subtree filter."""
        aggregate = event.type.split(".", 1)[0]
        data = event.data
        if aggregate == "orgunit":
            return {event.subject}
        units = {
            s["unit"] for s in data.get("timeline", []) if isinstance(s, dict) and s.get("unit")
        }
        if isinstance(data.get("unit"), str):
            units.add(data["unit"])
        if aggregate == "access":
            units |= {r["unit"] for r in data.get("reasons", []) if r.get("unit")}
        person = data.get("person") if isinstance(data.get("person"), str) else None
        if aggregate == "person":
            person = event.subject
        if person:
            units |= self.units_of_person(person)
        return units
