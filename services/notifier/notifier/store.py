"""Notifier's own collections: subscriptions, the delivery log, seen streams and SCIM id maps.

Any number of replicas share these collections. Every write that two
replicas could make at once is conditional (a subscription's ``version``, a
delivery's lease), so none rests on a process-local lock. ``INDEXES`` lists
every index the queries below (and ``readmodel``'s) need.

The seen-streams cache belongs to the replica that handles ``notifier.all``
(a single-active queue; the replica that takes it over reloads it first).
The projections of other services' aggregates are in ``readmodel``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError
from pymongo.operations import InsertOne, UpdateOne

from notifier.readmodel import PROJECTED
from orgdir import crypto, problems
from orgdir.clock import Clock
from orgdir.events import CloudEvent
from orgdir.store import BulkWriter, Doc, Index, MongoSeenStore, index, paginate

# Every index notifier's queries need, created by every replica at start.
INDEXES: list[Index] = [
    # take-over load (all pending, oldest first) and the orphan sweep (pending, lease run out)
    index("deliveries", "status", "created_at"),
    index("deliveries", "status", "lease_until"),
    # a subscription's backlog, its deletion, and the re-read of whole streams after a sweep
    index("deliveries", "subscription", "status", "stream", "sequence"),
    # replay since an instant
    index("deliveries", "subscription", "event_time"),
    # GET /deliveries filters (paged by _id)
    index("deliveries", "subject"),
    index("deliveries", "event_type"),
    # a replica's release of its leases at a graceful stop
    index("deliveries", "owner", "status"),
    # a User checked after it lands: the person's accounts as stored (``Projections.reread_accounts``)
    index("p_accounts", "person"),
    # a replica not handling notifier.all catches its projections up (``Projections.catch_up``)
    *(index(collection, "applied_at") for collection in PROJECTED.values()),
]


def _now() -> datetime:
    """Wall-clock time for leases: every replica compares against the same clock."""
    return datetime.now(UTC)


SEALED_FIELDS = ("secret", "token")  # a webhook's signing secret, a SCIM target's bearer token


class Subscriptions:
    """Plain collection keyed by uuid, with a version for ETag/If-Match (compare-and-swap).

    The webhook secret and the SCIM token are stored sealed (``orgdir.crypto``):
    this class seals on write and opens on read, so the rest of notifier sees
    plain values and a database dump sees none.
    """

    def __init__(self, db: AsyncDatabase[Doc], clock: Clock, keyring: Callable[[], crypto.Keyring]) -> None:
        self.col: AsyncCollection[Doc] = db["subscriptions"]
        self.clock = clock
        self.keyring = keyring

    def _sealed(self, doc: Doc) -> Doc:
        return {k: self.keyring().seal(v) if k in SEALED_FIELDS and v else v for k, v in doc.items()}

    def _opened(self, doc: Doc | None) -> Doc | None:
        if doc is None:
            return None
        return {k: self.keyring().open(v) if k in SEALED_FIELDS and crypto.is_sealed(v) else v for k, v in doc.items()}

    def _opened_all(self, docs: list[Doc]) -> list[Doc]:
        return [d for d in map(self._opened, docs) if d is not None]

    async def all(self) -> list[Doc]:
        return self._opened_all([d async for d in self.col.find({}).sort("_id", 1)])

    async def get(self, uuid: str) -> Doc | None:
        return self._opened(await self.col.find_one({"_id": uuid}))

    async def page(self, *, limit: int, cursor: str | None) -> tuple[list[Doc], str | None]:
        docs, nxt = await paginate(self.col, {}, limit=limit, cursor=cursor)
        return self._opened_all(docs), nxt

    async def require(self, uuid: str) -> Doc:
        doc = await self.get(uuid)
        if doc is None:
            raise problems.not_found("subscription", uuid)
        return doc

    async def put(self, uuid: str, cfg: dict[str, Any], expected: int | None) -> tuple[Doc, bool]:
        """Create or replace; unchanged config keeps the version. Returns (doc, created).

        Each write is conditional (insert, or replace at the version read), so
        of two replicas writing one subscription at once exactly one wins;
        the other re-reads (no If-Match) or gets 412 (If-Match).
        """
        for _ in range(10):
            current = await self.get(uuid)
            now = self.clock.now()
            if current is None:
                if expected is not None:
                    raise problems.not_found("subscription", uuid)
                doc = {"_id": uuid, "version": 1, **cfg, "created_at": now, "updated_at": now}
                try:
                    await self.col.insert_one(self._sealed(doc))
                except DuplicateKeyError:
                    continue  # created meanwhile by another request: decide again
                return doc, True
            if expected is not None and current["version"] != expected:
                raise problems.precondition_failed(current["version"], expected)
            if all(current.get(k) == v for k, v in cfg.items()):
                return current, False
            doc = {**current, **cfg, "version": current["version"] + 1, "updated_at": now}
            res = await self.col.replace_one({"_id": uuid, "version": current["version"]}, self._sealed(doc))
            if res.matched_count == 1:
                return doc, False
            if expected is not None:
                latest = await self.get(uuid)
                raise problems.precondition_failed(latest["version"] if latest else -1, expected)
        raise problems.conflict(f"subscription {uuid} is being changed concurrently; try again")

    async def delete(self, uuid: str, expected: int | None) -> None:
        for _ in range(10):
            current = await self.require(uuid)
            if expected is not None and current["version"] != expected:
                raise problems.precondition_failed(current["version"], expected)
            res = await self.col.delete_one({"_id": uuid, "version": current["version"]})
            if res.deleted_count == 1:
                return
        raise problems.conflict(f"subscription {uuid} is being changed concurrently; try again")


def delivery_id(subscription: str, event_id: str) -> str:
    return f"{subscription}:{event_id}"


class Deliveries:
    """The delivery log: one document per (subscription, event), ``_id`` = ``sub:event``.

    A pending delivery is sent only by the replica holding its lease
    (``owner``, ``lease_until``): the replica that records it holds it from the
    start; any other replica takes it only with a conditional write once it is
    released or its lease has run out (see ``claim``).
    """

    def __init__(self, db: AsyncDatabase[Doc], clock: Clock) -> None:
        self.col: AsyncCollection[Doc] = db["deliveries"]
        self.clock = clock
        self.writer = BulkWriter(self.col)  # concurrent inserts and outcomes go out together

    async def create(
        self, sub: Mapping[str, Any], event: CloudEvent, stream: str, owner: str, lease: float
    ) -> tuple[Doc | None, bool]:
        """Record a delivery, leased to ``owner``. Returns (doc, created).

        A redelivered event finds its delivery recorded already: then the
        stored one comes back (created False), so the caller can still queue it
        in order when it is pending (the previous handler may have died between
        recording it and queueing it).
        """
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
            "created_by": owner,
            "owner": owner,
            "lease_until": _now() + timedelta(seconds=lease),
            "horizon_start": now,
            "updated_at": now,
            "delivered_at": None,
            "last_status": None,
            "last_error": None,
        }
        try:
            await self.writer.write(InsertOne(doc))
        except DuplicateKeyError:
            return await self.get(doc["_id"]), False
        return doc, True

    async def get(self, did: str) -> Doc | None:
        return await self.col.find_one({"_id": did})

    async def peek(self, did: str) -> Doc | None:
        """Just what a worker needs to decide whether to wait for another replica's lease."""
        return await self.col.find_one({"_id": did}, {"status": 1, "owner": 1, "lease_until": 1})

    @staticmethod
    def claimable(owner: str, now: datetime) -> dict[str, Any]:
        """Pending, and held by ``owner`` already, or by nobody, or by a lease that ran out."""
        return {
            "status": "pending",
            "$or": [{"owner": owner}, {"owner": None}, {"lease_until": {"$lt": now}}],
        }

    async def claim(self, did: str, owner: str, lease: float) -> Doc | None:
        """Take (or renew) the lease: one conditional write; None when another replica holds it
        or the delivery is no longer pending. Of two replicas claiming at once, one gets it."""
        now = _now()
        return await self.col.find_one_and_update(
            {"_id": did, **self.claimable(owner, now)},
            {"$set": {"owner": owner, "lease_until": now + timedelta(seconds=lease)}},
            projection={"event": 0},
            return_document=ReturnDocument.AFTER,
        )

    async def finish(self, did: str, owner: str, fields: dict[str, Any]) -> None:
        """A final outcome (delivered, failed), stored only while ``owner`` still holds the lease."""
        update = {**fields, "owner": None, "lease_until": None, "updated_at": self.clock.now()}
        await self.writer.write(UpdateOne({"_id": did, "owner": owner}, {"$set": update}))

    async def reschedule(
        self, did: str, owner: str, fields: dict[str, Any], next_attempt: datetime, lease: float
    ) -> bool:
        """A retry: keep the lease until the next attempt (plus a lease); False if it was lost."""
        update = {
            **fields,
            "next_attempt_at": next_attempt,
            "lease_until": next_attempt + timedelta(seconds=lease),
            "updated_at": self.clock.now(),
        }
        res = await self.col.update_one({"_id": did, "owner": owner}, {"$set": update})
        return res.matched_count == 1

    async def supersede(self, did: str, owner: str) -> bool:
        """A newer state replaced this undelivered one; only if no other replica holds it."""
        res = await self.col.update_one(
            {"_id": did, **self.claimable(owner, _now())},
            {
                "$set": {
                    "status": "superseded",
                    "last_error": "a newer state replaced it",
                    "owner": None,
                    "lease_until": None,
                    "updated_at": self.clock.now(),
                }
            },
        )
        return res.modified_count == 1

    async def replay(self, did: str, owner: str, lease: float) -> Doc | None:
        """A final delivery back to pending, leased to ``owner``; None when it is pending already."""
        now = self.clock.now()
        return await self.col.find_one_and_update(
            {"_id": did, "status": {"$ne": "pending"}},
            {
                "$set": {
                    "status": "pending",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "horizon_start": now,
                    "replayed_at": now,
                    "last_error": None,
                    "owner": owner,
                    "lease_until": _now() + timedelta(seconds=lease),
                    "updated_at": now,
                }
            },
            return_document=ReturnDocument.AFTER,
        )

    async def fail_pending_of(self, sub: str, reason: str) -> int:
        res = await self.col.update_many(
            {"subscription": sub, "status": "pending"},
            {
                "$set": {
                    "status": "failed",
                    "last_error": reason,
                    "owner": None,
                    "lease_until": None,
                    "updated_at": self.clock.now(),
                }
            },
        )
        return res.modified_count

    async def release(self, owner: str) -> int:
        """A replica stopping hands its pending deliveries back at once (no wait for the lease)."""
        res = await self.col.update_many(
            {"owner": owner, "status": "pending"}, {"$set": {"owner": None, "lease_until": None}}
        )
        return res.modified_count

    async def pending(self) -> list[Doc]:
        """Everything still to send, oldest first (a replica taking over the consumer)."""
        return [d async for d in self.col.find({"status": "pending"}).sort("created_at", 1)]

    async def orphaned_streams(self) -> list[tuple[str, str, str]]:
        """(id, subscription, stream) of each pending delivery nobody holds."""
        q = {"status": "pending", "$or": [{"owner": None}, {"lease_until": {"$lt": _now()}}]}
        return [
            (d["_id"], d["subscription"], d["stream"])
            async for d in self.col.find(q, {"subscription": 1, "stream": 1})
        ]

    async def pending_of_streams(self, streams: set[tuple[str, str]]) -> list[Doc]:
        """Every pending delivery of those streams, so a replica sends them in order."""
        subs = sorted({s for s, _ in streams})
        names = sorted({n for _, n in streams})
        q = {"status": "pending", "subscription": {"$in": subs}, "stream": {"$in": names}}
        docs = [d async for d in self.col.find(q)]
        return sorted(
            (d for d in docs if (d["subscription"], d["stream"]) in streams),
            key=lambda d: (d["sequence"], d["created_at"]),
        )

    async def backlogs(self, subs: list[str]) -> dict[str, int]:
        """Pending deliveries per subscription, as the database has them (same on every replica)."""
        if not subs:
            return {}
        out = dict.fromkeys(subs, 0)
        async for d in self.col.find(
            {"status": "pending", "subscription": {"$in": subs}}, {"subscription": 1}
        ):
            out[d["subscription"]] = out.get(d["subscription"], 0) + 1
        return out

    async def of_subscription_since(
        self, sub: str, since: datetime, statuses: list[str]
    ) -> list[Doc]:
        q = {"subscription": sub, "event_time": {"$gte": since}, "status": {"$in": statuses}}
        return [d async for d in self.col.find(q, {"event": 0})]

    async def page(
        self, query: dict[str, Any], *, limit: int, cursor: str | None
    ) -> tuple[list[Doc], str | None]:
        return await paginate(self.col, query, limit=limit, cursor=cursor, projection={"event": 0})


class StreamSeen(MongoSeenStore):
    """The platform's seen-store, cached in memory.

    The consumer hands a stream's events over one at a time (``in_order``), so
    one subject's deliveries are recorded in sequence order. That order is this
    process's: ``notifier.all`` is single-active, so one replica handles the
    stream at a time, and a replica taking it over reloads the cache first
    (``load``). The stored sequence is written with ``$max``, so even a stale
    handler cannot lower it.
    """

    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        super().__init__(db, "_seen_streams")
        self.cache: dict[str, int] = {}

    async def load(self) -> None:
        async for d in self.col.find({}):
            k = d["_id"]
            self.cache[k] = max(self.cache.get(k, 0), int(d["sequence"]))

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

    async def get_many(self, sub: str, kind: str, keys: list[str]) -> dict[str, str]:
        """Key -> SCIM id for those of ``keys`` that have one: one query for a group's members."""
        ids = {f"{sub}:{kind}:{key}": key for key in keys}
        found: dict[str, str] = {}
        async for doc in self.col.find({"_id": {"$in": list(ids)}}, {"scim_id": 1}):
            found[ids[doc["_id"]]] = str(doc["scim_id"])
        return found

    async def set(self, sub: str, kind: str, key: str, scim_id: str) -> None:
        await self.col.replace_one(
            {"_id": f"{sub}:{kind}:{key}"},
            {"scim_id": scim_id, "sub": sub, "kind": kind},
            upsert=True,
        )

    async def drop(self, sub: str, kind: str, key: str) -> None:
        await self.col.delete_one({"_id": f"{sub}:{kind}:{key}"})

    async def claim_creation(self, sub: str, kind: str, key: str, owner: str, seconds: float) -> bool:
        """The right to create the resource ``key`` at the target, for ``seconds``: True for one
        claimant at a time on any replica (the insert's ``_id`` admits one; an expired claim, left
        by a sender that died, is taken over by a conditional write)."""
        cid, now = f"{sub}:{kind}:{key}:creating", _now()
        until = now + timedelta(seconds=seconds)
        try:
            await self.col.insert_one({"_id": cid, "owner": owner, "until": until})
            return True
        except DuplicateKeyError:
            taken = await self.col.update_one(
                {"_id": cid, "until": {"$lt": now}}, {"$set": {"owner": owner, "until": until}}
            )
            return taken.modified_count == 1

    async def release_creation(self, sub: str, kind: str, key: str, owner: str) -> None:
        await self.col.delete_one({"_id": f"{sub}:{kind}:{key}:creating", "owner": owner})
