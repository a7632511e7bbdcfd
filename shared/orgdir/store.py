"""MongoDB-wire storage: aggregates with an embedded outbox, and projections.

One write path on every MongoDB-wire server that really compares-and-swaps
(MongoDB; mongo-java-server locally and in tests): single-document atomic
writes whose filter holds the expected version, no transactions, so any
number of replicas can write at once.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import logging
import random
import uuid as uuidlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from pymongo import AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure
from pymongo.operations import InsertOne, ReplaceOne, UpdateOne

from orgdir import context, problems
from orgdir.clock import Clock
from orgdir.events import CloudEvent, new_event, side_by_side
from orgdir.schemas import History, history_of

log = logging.getLogger(__name__)

Doc = dict[str, Any]


def connect(url: str, timeout_ms: int = 5000) -> AsyncMongoClient[Doc]:
    """A client that fails fast enough for a 503 instead of a hung request."""
    return AsyncMongoClient(
        url,
        tz_aware=True,
        uuidRepresentation="standard",
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        appname="orgdir",
    )


# Statements per bulk write: big enough to amortise a command, small enough to keep one short.
MAX_BULK = 500
#: when a document's outbox last became non-empty; set with the outbox, cleared by the relay's sweep
#: once the outbox is empty. A sparse index on it finds the outboxes to sweep without a collection scan.
OUTBOX_SINCE = "outbox_since"


BulkOp = InsertOne[Doc] | UpdateOne | ReplaceOne[Doc]
Item = TypeVar("Item")
Result = TypeVar("Result")


class Grouped(Generic[Item, Result]):
    """Calls from concurrent tasks, queued and sent together: each caller still gets its own result.

    A database command costs far more than one more statement or key in it,
    so what dozens of requests or events ask for at once goes out as one.
    The command is sent after every caller in it asked (on the next turn of
    the loop), so each sees the database as it was at or after its call. A
    command that fails fails each of its callers.
    """

    name = "grouped"

    def __init__(self) -> None:
        self._queue: list[tuple[Item, asyncio.Future[Result]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.commands = 0  # commands sent (for tests and metrics)

    async def _submit(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name=self.name)
        return await future

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let the callers woken with us join this command
        while self._queue:
            batch, self._queue = self._queue[:MAX_BULK], self._queue[MAX_BULK:]
            try:
                self.commands += 1
                await self._send(batch)
            except BaseException as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc if isinstance(exc, Exception) else RuntimeError("cancelled"))
                if not isinstance(exc, Exception):
                    raise

    async def _send(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        raise NotImplementedError


def _write_error(error: dict[str, Any]) -> Exception:
    """One statement's error of a bulk write, as the single write would have raised it."""
    if error.get("code") == 11000:
        return DuplicateKeyError(str(error.get("errmsg")), 11000, error)
    return OperationFailure(str(error.get("errmsg")), error.get("code"), error)


class BulkWriter(Grouped[BulkOp, None]):
    """Group commit: single-document writes from concurrent tasks go out as shared bulk writes.

    Pure speed: each statement is still its own atomic single-document write,
    and each caller gets its own outcome (``DuplicateKeyError`` included).
    """

    def __init__(
        self, col: AsyncCollection[Doc], matched: Callable[[list[BulkOp], int], None] | None = None
    ) -> None:
        super().__init__()
        self.col = col
        self.name = f"bulk-{col.name}"
        self.matched = matched  # told each command's statements and how many of them matched

    async def write(self, op: BulkOp) -> None:
        await self._submit(op)

    async def _send(self, batch: list[tuple[BulkOp, asyncio.Future[None]]]) -> None:
        errors: dict[int, dict[str, Any]] = {}
        ops = [op for op, _ in batch]
        try:
            result = await self.col.bulk_write(ops, ordered=False)
            matched = result.matched_count
        except BulkWriteError as exc:
            errors = {int(e["index"]): e for e in exc.details.get("writeErrors", [])}
            matched = int(exc.details.get("nMatched", 0))
        if self.matched is not None:
            self.matched(ops, matched)
        for i, (_, future) in enumerate(batch):
            if not future.done():
                error = errors.get(i)
                future.set_result(None) if error is None else future.set_exception(_write_error(error))


class BulkReader(Grouped[Any, Doc | None]):
    """Group fetch: concurrent reads by ``_id`` from many tasks go out as one ``$in`` query.

    Under load a replica reads the documents of hundreds of requests at once,
    and one query with their ids costs little more than one with a single id.
    """

    def __init__(self, col: AsyncCollection[Doc], projection: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.col = col
        self.name = f"fetch-{col.name}"
        self.projection = projection

    async def get(self, key: Any) -> Doc | None:
        return await self._submit(key)

    async def _send(self, batch: list[tuple[Any, asyncio.Future[Doc | None]]]) -> None:
        keys = list(dict.fromkeys(key for key, _ in batch))
        found = {d["_id"]: d async for d in self.col.find({"_id": {"$in": keys}}, self.projection)}
        handed: set[Any] = set()
        for key, future in batch:
            if not future.done():  # each caller its own copy: callers change what they read
                doc = found.get(key)
                future.set_result(copy.deepcopy(doc) if doc is not None and key in handed else doc)
                handed.add(key)


@dataclass(frozen=True)
class Index:
    """One index a service's queries or invariants need; declared once, created at start."""

    collection: str
    keys: tuple[tuple[str, int], ...]
    unique: bool = False
    sparse: bool = False

    @property
    def name(self) -> str:
        return "_".join(f"{k}_{d}" for k, d in self.keys)


def index(collection: str, *fields: str, unique: bool = False, sparse: bool = False) -> Index:
    """``index("persons", "state.cpr_hash", unique=True)``; a leading ``-`` sorts descending;
    ``sparse``: only documents that have the field (``$exists`` queries on a rare field)."""
    keys = tuple((f.lstrip("-"), -1 if f.startswith("-") else 1) for f in fields)
    return Index(collection, keys, unique, sparse)


async def ensure_indexes(db: AsyncDatabase[Doc], indexes: list[Index]) -> None:
    """Create what is declared; idempotent, so every replica runs it at every start."""
    for ix in indexes:
        await db[ix.collection].create_index(list(ix.keys), name=ix.name, unique=ix.unique, sparse=ix.sparse)


class StaleVersion(Exception):
    """The document changed since it was read (optimistic concurrency)."""

    def __init__(self, current: int, expected: int) -> None:
        super().__init__(f"expected version {expected}, found {current}")
        self.current = current
        self.expected = expected


EventSpec = tuple[str, Callable[[int], dict[str, Any]]]
"""An event to write: its type, and its ``data`` built from its sequence."""


@dataclass
class Change:
    """What a domain function decided: the new state and the event that says so."""

    state: dict[str, Any]
    event_type: str
    next_transition_at: datetime | None = None
    note: str | None = None


def as_registered(doc: Mapping[str, Any], instant: datetime) -> Doc | None:
    """The document as its last registration at or before ``instant`` left it; None if it came later.

    Registrations hold the whole state each write left (``Repository``), so
    the belief at any instant is read off them: transaction time.
    """
    chosen = None
    for r in doc.get("registrations") or []:
        at = r["registered_at"]
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        if at > instant:
            break
        chosen = r
    if chosen is None:
        return None
    return {"_id": doc["_id"], "version": chosen["version"], "state": chosen["state"]}


class Repository:
    """Aggregates as single documents: ``_id``, ``version``, ``state``, ``outbox``.

    Every write is one atomic insert or ``find_one_and_update`` guarded by the
    expected version that also appends the event to the document's outbox and
    a registration (who, when, which version) to its append-only history.
    """

    def __init__(
        self,
        db: AsyncDatabase[Doc],
        collection: str,
        *,
        service: str,
        clock: Clock,
        event_data: Callable[[str, int, dict[str, Any]], dict[str, Any]] | None = None,
        current_type: str | None = None,
    ) -> None:
        self.col: AsyncCollection[Doc] = db[collection]
        self.name = collection
        self.service = service
        self.clock = clock
        self.event_data = event_data or (lambda uuid, version, state: {"uuid": uuid, "version": version, **state})
        # The type that re-sends a document's state (republish, refresh) when its change events do not
        # carry the plain state (access-rights' person_rights); else the type of its last registration.
        self.current_type = current_type
        self.on_write: Callable[[str, str, list[dict[str, Any]]], None] = lambda c, u, o: None
        self.inserts = BulkWriter(self.col)
        self.reads = BulkReader(self.col, {"outbox": 0, "registrations": 0})

    def event_for(self, uuid: str, version: int, event_type: str, state: dict[str, Any]) -> CloudEvent:
        return self._event(uuid, version, event_type, self.event_data(uuid, version, state))

    # What ``current_event`` reads: the state and the last registration only, never the outbox.
    CURRENT_PROJECTION: Mapping[str, Any] = {"version": 1, "state": 1, "registrations": {"$slice": -1}}

    def current_type_of(self, doc: Doc) -> str | None:
        """The type of the event that re-sends ``doc``'s current state (None: never published)."""
        if int(doc.get("version") or 0) < 1:
            return None
        if self.current_type is not None:
            return self.current_type
        history = doc.get("registrations") or []
        return str(history[-1]["event_type"]) if history else None

    def current_event(self, doc: Doc) -> CloudEvent | None:
        """The aggregate's normal full-state event again, ``sequence`` = its version (republish, refresh)."""
        kind = self.current_type_of(doc)
        if kind is None:
            return None
        return self.event_for(str(doc["_id"]), int(doc["version"]), kind, doc["state"])

    def _event(self, uuid: str, sequence: int, event_type: str, data: dict[str, Any]) -> CloudEvent:
        return new_event(
            service=self.service,
            type=event_type,
            subject=uuid,
            sequence=sequence,
            data=data,
            time=self.clock.now(),
            correlationid=context.correlation_id.get(),
            causationid=context.causation_id.get(),
        )

    def _registration(self, version: int, event_type: str, state: dict[str, Any], note: str | None) -> Doc:
        return {
            "version": version,
            "registered_at": self.clock.now(),
            "registered_by": context.actor.get() or "system",
            "event_type": event_type,
            "note": note,
            "state": state,
        }

    async def get(self, uuid: str) -> Doc | None:
        return await self.reads.get(uuid)  # concurrent reads share a query

    async def get_full(self, uuid: str) -> Doc | None:
        return await self.col.find_one({"_id": uuid})

    async def require(self, uuid: str, what: str) -> Doc:
        doc = await self.get(uuid)
        if doc is None:
            raise problems.not_found(what, uuid)
        return doc

    def _specs(self, uuid: str, change: Change) -> list[EventSpec]:
        return [(change.event_type, lambda version: self.event_data(uuid, version, change.state))]

    def _appended(
        self, uuid: str, base: int, state: dict[str, Any], specs: list[EventSpec], note: str | None
    ) -> tuple[list[Doc], list[Doc]]:
        """The outbox entries and registrations of ``specs``, numbered on from ``base``."""
        outbox, registrations = [], []
        for i, (event_type, build) in enumerate(specs, start=base + 1):
            for event in side_by_side(self._event(uuid, i, event_type, build(i))):  # + a previous dataversion
                outbox.append(event.model_dump(mode="json"))
            registrations.append(self._registration(i, event_type, state, note))
        return outbox, registrations

    async def _insert(
        self, uuid: str, state: dict[str, Any], specs: list[EventSpec], nta: datetime | None, note: str | None
    ) -> Doc:
        """Raises ``DuplicateKeyError`` when the document exists."""
        now = self.clock.now()
        outbox, registrations = self._appended(uuid, 0, state, specs, note)
        doc: Doc = {
            "_id": uuid,
            "version": len(specs),
            "state": state,
            "next_transition_at": nta,
            "created_at": now,
            "updated_at": now,
            "outbox": outbox,
            "registrations": registrations,
        }
        if outbox:
            doc[OUTBOX_SINCE] = now
        await self.inserts.write(InsertOne(doc))  # concurrent creations share a command
        return doc

    async def _update(
        self,
        uuid: str,
        expected: int,
        state: dict[str, Any],
        specs: list[EventSpec],
        nta: datetime | None,
        note: str | None,
    ) -> Doc:
        """Raises ``StaleVersion`` (current -1: gone) when the document is not at ``expected``."""
        version = expected + len(specs)
        outbox, registrations = self._appended(uuid, expected, state, specs, note)
        update: dict[str, Any] = {
            "$set": {"state": state, "version": version, "updated_at": self.clock.now(), "next_transition_at": nta}
        }
        if specs:
            update["$push"] = {"outbox": {"$each": outbox}, "registrations": {"$each": registrations}}
            update["$min"] = {OUTBOX_SINCE: update["$set"]["updated_at"]}  # kept while the outbox was not empty
        # The compare-and-swap: the filter holds the expected version, so of two
        # concurrent writers (any replicas) exactly one matches.
        doc = await self.col.find_one_and_update(
            {"_id": uuid, "version": expected}, update, return_document=ReturnDocument.AFTER
        )
        if doc is None:
            current = await self.col.find_one({"_id": uuid}, {"version": 1})
            raise StaleVersion(int(current["version"]) if current else -1, expected)
        return doc

    async def insert(self, uuid: str, change: Change) -> Doc:
        specs = self._specs(uuid, change)
        try:
            doc = await self._insert(uuid, change.state, specs, change.next_transition_at, change.note)
        except DuplicateKeyError as exc:
            raise problems.conflict(f"{uuid} already exists") from exc
        self.on_write(self.name, uuid, doc["outbox"])
        return doc

    async def update(self, uuid: str, expected_version: int, change: Change) -> Doc:
        specs = self._specs(uuid, change)
        try:
            nta = change.next_transition_at
            doc = await self._update(uuid, expected_version, change.state, specs, nta, change.note)
        except StaleVersion as exc:
            if exc.current < 0:
                raise problems.not_found(self.name, uuid) from exc
            raise
        self.on_write(self.name, uuid, doc.get("outbox", []))
        return doc

    async def write_events(
        self,
        uuid: str,
        expected: int | None,
        state: dict[str, Any],
        specs: list[EventSpec],
        next_transition_at: datetime | None,
    ) -> int:
        """One write with several events (consecutive sequences), or none: a state refresh, no new version.

        ``expected`` None creates the document; ``StaleVersion`` when it is not
        where the caller thought. Returns the new version.
        """
        if expected is None:
            try:
                doc = await self._insert(uuid, state, specs, next_transition_at, None)
            except DuplicateKeyError as exc:
                raise StaleVersion(-1, 0) from exc
        else:
            doc = await self._update(uuid, expected, state, specs, next_transition_at, None)
        if specs:
            self.on_write(self.name, uuid, list(doc.get("outbox", [])))
        return int(doc["version"])

    async def mutate(
        self,
        uuid: str,
        decide: Callable[[Doc], Change | Awaitable[Change]],
        *,
        if_match: int | None = None,
        what: str = "aggregate",
        attempts: int = 5,
    ) -> Doc:
        """Read, decide, write; retried on a concurrent change unless If-Match pinned a version."""
        for _ in range(attempts):
            doc = await self.require(uuid, what)
            if if_match is not None and doc["version"] != if_match:
                raise problems.precondition_failed(doc["version"], if_match)
            change = decide(doc)
            if not isinstance(change, Change):
                change = await change
            try:
                return await self.update(uuid, doc["version"], change)
            except StaleVersion as exc:
                if if_match is not None:
                    raise problems.precondition_failed(exc.current, if_match) from exc
        raise problems.conflict(f"{what} {uuid} is being changed concurrently; try again")

    async def get_as_registered(self, uuid: str, instant: datetime) -> Doc | None:
        """The document as it was registered at ``instant`` (None: not yet, or never, there)."""
        doc = await self.col.find_one({"_id": uuid}, {"outbox": 0})
        return None if doc is None else as_registered(doc, instant)

    async def scan_as_registered(self, instant: datetime, query: Mapping[str, Any] | None = None) -> AsyncIterator[Doc]:
        """Every document as registered at ``instant``: a full scan, for the rare "what did we believe then"."""
        async for doc in self.col.find(dict(query or {}), {"outbox": 0}):
            then = as_registered(doc, instant)
            if then is not None:
                yield then

    async def full_history(self, uuid: str, what: str) -> History:
        """The aggregate's history in the one response shape every service serves."""
        doc = await self.get_full(uuid)
        if doc is None:
            raise problems.not_found(what, uuid)
        return history_of(doc)

    async def history(self, uuid: str) -> list[Doc]:
        doc = await self.col.find_one({"_id": uuid}, {"registrations": 1})
        if doc is None:
            return []
        return list(doc.get("registrations", []))

    async def due(self, now: datetime, limit: int = 500) -> list[Doc]:
        """Aggregates whose next validity boundary has been crossed."""
        cursor = self.col.find(
            {"next_transition_at": {"$ne": None, "$lte": now}},
            {"outbox": 0, "registrations": 0},
        ).limit(limit)
        return [d async for d in cursor]

    async def page(
        self,
        query: Mapping[str, Any],
        *,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[Doc], str | None]:
        return await paginate(self.col, query, limit=limit, cursor=cursor, projection={"outbox": 0, "registrations": 0})


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise problems.bad_request("invalid-cursor", "The cursor is not one this API gave out.") from exc


async def paginate(
    col: AsyncCollection[Doc],
    query: Mapping[str, Any],
    *,
    limit: int,
    cursor: str | None,
    projection: Mapping[str, Any] | None = None,
) -> tuple[list[Doc], str | None]:
    """Keyset pagination on ``_id``: stable under concurrent inserts."""
    q = dict(query)
    if cursor:
        q = {"$and": [q, {"_id": {"$gt": decode_cursor(cursor)}}]} if q else {"_id": {"$gt": decode_cursor(cursor)}}
    docs = [d async for d in col.find(q, projection).sort("_id", 1).limit(limit + 1)]
    more = len(docs) > limit
    docs = docs[:limit]
    return docs, (encode_cursor(str(docs[-1]["_id"])) if more and docs else None)


class MongoSeenStore:
    """Newest applied sequence per (consumer, aggregate stream), for stale-event skipping.

    ``claim`` and ``finish`` bracket the handling of one event: the claim is
    a conditional write that only one delivery of a stream can win at a time
    (any replica, any redelivery), so a redelivered event that arrives while
    the first delivery is still being handled waits and is then skipped as
    stale instead of taking effect twice. A claim left by a crashed handler
    expires after ``lease`` seconds.
    """

    def __init__(self, db: AsyncDatabase[Doc], collection: str = "_seen", lease: float = 30.0) -> None:
        self.col: AsyncCollection[Doc] = db[collection]
        self.writer = BulkWriter(self.col)  # a consumer's concurrent handlers mark together
        self.lease = lease

    @staticmethod
    def key(consumer: str, event: CloudEvent) -> str:
        """Sequences count per aggregate stream: ``access.*`` and ``person.*`` share a subject."""
        return f"{consumer}:{event.type.split('.', 1)[0]}:{event.subject}"

    async def claim(self, consumer: str, event: CloudEvent) -> bool:
        """True: this delivery may handle the event (call ``finish``); False: it is stale."""
        key = self.key(consumer, event)
        while True:
            now = datetime.now(UTC)
            try:
                await self.writer.write(  # concurrent handlers' claims share one command
                    UpdateOne(
                        {
                            "_id": key,
                            "sequence": {"$lt": event.sequence},
                            "$or": [{"claim_until": None}, {"claim_until": {"$lt": now}}],
                        },
                        {
                            "$set": {"claim_until": now + timedelta(seconds=self.lease), "claimed": event.sequence},
                            "$setOnInsert": {"sequence": 0},
                        },
                        upsert=True,
                    )
                )
                return True
            except DuplicateKeyError:  # exists, and either newer or claimed by another delivery
                current = await self.col.find_one({"_id": key})
                if current is not None and int(current.get("sequence", 0)) >= event.sequence:
                    return False
                await asyncio.sleep(0.01 + 0.02 * random.random())

    async def finish(self, consumer: str, event: CloudEvent, *, applied: bool) -> None:
        """Release the claim; ``applied`` also records the sequence as handled."""
        key = self.key(consumer, event)
        if applied:
            op = UpdateOne({"_id": key}, {"$max": {"sequence": event.sequence}, "$set": {"claim_until": None}})
        else:
            op = UpdateOne({"_id": key, "claimed": event.sequence}, {"$set": {"claim_until": None}})
        await self.writer.write(op)

    async def is_stale(self, consumer: str, event: CloudEvent) -> bool:
        doc = await self.col.find_one({"_id": self.key(consumer, event)})
        return doc is not None and int(doc["sequence"]) >= event.sequence

    async def mark(self, consumer: str, event: CloudEvent) -> None:
        key = self.key(consumer, event)
        await self.writer.write(UpdateOne({"_id": key}, {"$max": {"sequence": event.sequence}}, upsert=True))


class Projection:
    """A local copy of another service's aggregates, applied only when newer.

    With ``history`` every state applied is also kept in ``<collection>_log``
    with the time it arrived, so a read can answer as this service knew it at
    an instant (``scan_as_registered``: transaction time for what it projects).

    With ``stamped`` every stored copy carries ``applied_at``, so a replica that
    keeps the copies in memory but did not apply them itself can read just what
    changed since it last looked (``changed_since``) instead of everything.
    """

    # How far back ``changed_since`` reads before the instant asked for: a copy is stamped
    # when its write is queued, and lands up to a command's time later (clocks of replicas
    # also differ a little). Reading a copy twice is harmless: memory keeps the newest.
    OVERLAP = timedelta(seconds=10)

    def __init__(
        self,
        db: AsyncDatabase[Doc],
        collection: str,
        *,
        history: bool = False,
        clock: Clock | None = None,
        stamped: bool = False,
    ) -> None:
        self.col: AsyncCollection[Doc] = db[collection]
        self.stamped = stamped
        self.log: AsyncCollection[Doc] | None = db[f"{collection}_log"] if history else None
        self.clock = clock  # the service's: arrival times on the same clock as its registrations
        # a consumer applying a batch of events at once sends their writes as two bulk commands
        self.writer = BulkWriter(self.col)
        self.log_writer = BulkWriter(self.log) if self.log is not None else None

    async def apply(self, subject: str, sequence: int, body: dict[str, Any]) -> bool:
        """Store ``body`` for ``subject`` if ``sequence`` is newer; False when stale.

        One conditional write: the filter matches only an older copy, so of two
        replicas applying different sequences the newer one ends up stored
        whatever the order. No match inserts (upsert); where a copy exists that
        is not older, the insert is a duplicate key: stale, unless the copy was
        inserted meanwhile by a replica applying an older sequence (try again).
        """
        doc = {**body, "_id": subject, "sequence": sequence}
        if self.stamped:
            doc["applied_at"] = datetime.now(UTC)
        if self.log_writer is not None:  # first: a crash in between leaves a logged state that redelivery applies
            entry = {
                "_id": f"{subject}:{sequence}",
                "subject": subject,
                "sequence": sequence,
                "applied_at": self.clock.now() if self.clock else datetime.now(UTC),
                "body": body,
            }
            with contextlib.suppress(DuplicateKeyError):
                await self.log_writer.write(InsertOne(entry))
        for _ in range(10):
            try:
                await self.writer.write(ReplaceOne({"_id": subject, "sequence": {"$lt": sequence}}, doc, upsert=True))
                return True
            except DuplicateKeyError:
                current = await self.col.find_one({"_id": subject}, {"sequence": 1})
                if current is not None and int(current["sequence"]) >= sequence:
                    return False
        raise RuntimeError(f"projection {self.col.name}: could not apply {subject}@{sequence}")

    async def get(self, subject: str) -> Doc | None:
        return await self.col.find_one({"_id": subject})

    async def changed_since(self, instant: datetime, newer: Callable[[str, int], bool]) -> AsyncIterator[Doc]:
        """The copies stored from ``instant - OVERLAP`` on for which ``newer(subject, sequence)``.

        Ids and sequences are read first and whole copies only for what the caller lacks:
        the overlap brings back mostly copies it already holds."""
        if not self.stamped:
            raise RuntimeError(f"projection {self.col.name} is not stamped")
        wanted = [
            d["_id"]
            async for d in self.col.find({"applied_at": {"$gte": instant - self.OVERLAP}}, {"sequence": 1})
            if newer(str(d["_id"]), int(d["sequence"]))
        ]
        for start in range(0, len(wanted), 1000):
            async for d in self.col.find({"_id": {"$in": wanted[start : start + 1000]}}):
                yield d

    async def scan_as_registered(self, instant: datetime) -> AsyncIterator[Doc]:
        """Each subject's newest state that had arrived by ``instant`` (shaped like the stored copy)."""
        if self.log is None:
            raise RuntimeError(f"projection {self.col.name} keeps no history")
        newest: dict[str, Doc] = {}
        async for e in self.log.find({"applied_at": {"$lte": instant}}):
            held = newest.get(e["subject"])
            if held is None or int(held["sequence"]) < int(e["sequence"]):
                newest[e["subject"]] = e
        for e in newest.values():
            yield {**e["body"], "_id": e["subject"], "sequence": e["sequence"]}


class SectionDesk(Grouped[tuple[str, str, datetime], int | None]):
    """One replica's takes and releases of sections, grouped into shared commands.

    An import writes engagements of hundreds of persons at once, each under
    its person's section: a take and a release per write were a quarter of the
    registry's time. Concurrent takes of free sections go out as one bulk write
    and one read of their positions; a section that is held (or whose holder
    died) is left to ``Section._take``'s own loop. Releases share bulk writes.
    Pure speed: each take and release is still its own conditional write.
    """

    name = "section-takes"

    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        super().__init__()
        self.col: AsyncCollection[Doc] = db["_sections"]
        self.releases = BulkWriter(self.col, self._released)
        self._releasing: dict[int, str] = {}  # id of a release statement in flight → its section

    async def take(self, name: str, token: str, until: datetime) -> int | None:
        """Take ``name`` if nobody holds it (making it if need be): its ``seq``; None when it is held."""
        return await self._submit((name, token, until))

    async def release(self, name: str, token: str, update: dict[str, Any]) -> None:
        op = UpdateOne({"_id": name, "holder": token}, update)
        self._releasing[id(op)] = name
        await self.releases.write(op)

    def _released(self, ops: list[BulkOp], matched: int) -> None:
        names = [self._releasing.pop(id(op), "?") for op in ops]
        if matched < len(ops):  # some holder's lease had run out, and another replica may have entered
            log.error("section lease lost while held", extra={"sections": names[:20], "lost": len(ops) - matched})

    async def _send(self, batch: list[tuple[tuple[str, str, datetime], asyncio.Future[int | None]]]) -> None:
        batch = [(item, future) for item, future in batch if not future.done()]  # its caller went away
        if not batch:
            return
        # A free section matches; a missing one is made by the upsert; a held one fails the
        # filter, and its existing ``_id`` turns the upsert into E11000: busy.
        ops = [
            UpdateOne(
                {"_id": name, "holder": None},
                {"$set": {"holder": token, "until": until}, "$setOnInsert": {"seq": 0, "recent": []}},
                upsert=True,
            )
            for (name, token, until), _ in batch
        ]
        failed: dict[int, dict[str, Any]] = {}
        try:
            await self.col.bulk_write(ops, ordered=False)
        except BulkWriteError as exc:
            failed = {int(e["index"]): e for e in exc.details.get("writeErrors", [])}
        names = [name for i, ((name, _, _), _) in enumerate(batch) if i not in failed]
        found = {d["_id"]: d async for d in self.col.find({"_id": {"$in": names}}, {"seq": 1, "holder": 1})}
        orphans: list[BulkOp] = []
        for i, ((name, token, _), future) in enumerate(batch):
            error = failed.get(i)
            doc = found.get(name)
            ours = error is None and doc is not None and doc.get("holder") == token
            if future.done():  # its caller went away during the command: nobody would give it back
                if ours:
                    orphans.append(UpdateOne({"_id": name, "holder": token}, {"$set": {"holder": None, "until": None}}))
                continue
            if error is not None and error.get("code") != 11000:
                future.set_exception(_write_error(error))
                continue
            future.set_result(int(doc.get("seq") or 0) if ours and doc is not None else None)
        if orphans:
            await self.col.bulk_write(orphans, ordered=False)


@dataclass
class _Held:
    """A database hold of a section, handed on between this replica's writers."""

    token: str
    seq: int
    since: float
    written: list[tuple[str, str]] = field(default_factory=list)
    uses: int = 0
    caught_up: bool = True
    took_over: bool = False  # from a holder whose lease ran out: it may have died half-way
    renewing: asyncio.Task[None] | None = None


class Section:
    """A named critical section across all replicas: a lease taken by a conditional write.

    For rules that span aggregates and that no unique index can express (no
    cycle in the tree, a ``user_key`` unique on every day): every write that
    such a rule reads holds the section, so the check and the write are never
    interleaved with another replica's. The section document also logs what
    each holder wrote (``recent``); on entry a replica re-reads those
    documents (or everything, when it has fallen further behind) before it
    decides, so its in-memory view is exactly as current as the database.
    A holder that dies leaves a lease that expires after ``lease_seconds``.
    """

    RECENT = 1000
    MAX_REUSE = 50  # writes under one database hold while local writers wait
    MAX_HOLD = 0.5  # seconds

    def __init__(
        self,
        db: AsyncDatabase[Doc],
        name: str,
        *,
        refresh_one: Callable[[str, str], Awaitable[None]],
        refresh_all: Callable[[], Awaitable[None]],
        lease_seconds: float = 30.0,
        wait_seconds: float = 10.0,
        desk: SectionDesk | None = None,
    ) -> None:
        self.col: AsyncCollection[Doc] = db["_sections"]
        self.desk = desk or SectionDesk(db)  # share one per replica: its commands are shared
        self.name = name
        self.refresh_one = refresh_one
        self.refresh_all = refresh_all
        self.lease = lease_seconds
        self.wait = wait_seconds
        self.seen: int | None = None  # the section's seq this replica's view reflects
        self.acquired = 0  # entries (tests and metrics)
        self._local = asyncio.Lock()  # this replica's writers take turns before they ask the database
        self._waiting = 0
        self._held: _Held | None = None

    async def baseline(self) -> None:
        """Call before the initial load: what is written after this is caught up on entry."""
        await self.col.update_one(
            {"_id": self.name}, {"$setOnInsert": {"seq": 0, "holder": None, "until": None, "recent": []}}, upsert=True
        )
        doc = await self.col.find_one({"_id": self.name}, {"seq": 1})
        self.seen = int(doc["seq"]) if doc else 0

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[SectionTicket]:
        """Hold the section for one write.

        Writers of this replica queue locally first (``_local``), so only one
        of them asks the database at a time, and a hold is handed on to the
        next local writer (up to ``MAX_REUSE`` writes or ``MAX_HOLD`` seconds,
        so other replicas get their turn) instead of being released and taken
        again. Both only save round trips: the database lease is what excludes
        the other replicas, and correctness rests on it alone.
        """
        self._waiting += 1
        try:
            await self._local.acquire()
        finally:
            self._waiting -= 1
        try:
            if self._held is None:
                self._held = await self._take()
            held = self._held
            ticket = SectionTicket(took_over=held.took_over and held.uses == 0)
            try:
                yield ticket
            finally:
                held.written.extend(ticket.written)
                held.uses += 1
                loop = asyncio.get_running_loop()
                if not (self._waiting and held.uses < self.MAX_REUSE and loop.time() - held.since < self.MAX_HOLD):
                    self._held = None
                    await self._give_back(held)
        finally:
            self._local.release()

    async def _take(self) -> _Held:
        token = uuidlib.uuid4().hex
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait
        pause = 0.002
        seq = await self.desk.take(self.name, token, datetime.now(UTC) + timedelta(seconds=self.lease))
        before: Doc | None = None if seq is None else {"seq": seq, "holder": None}
        while before is None:  # held, perhaps by a holder that died: wait it out, or take it over
            now = datetime.now(UTC)
            try:
                # A section nobody has entered yet is created by its first entry (no document:
                # the upsert inserts it, and ``None`` comes back); a held one fails the filter,
                # and its existing ``_id`` turns the upsert into E11000: busy.
                found = await self.col.find_one_and_update(
                    {"_id": self.name, "$or": [{"holder": None}, {"until": {"$lt": now}}]},
                    {
                        "$set": {"holder": token, "until": now + timedelta(seconds=self.lease)},
                        "$setOnInsert": {"seq": 0, "recent": []},
                    },
                    projection={"recent": 0},  # the log is read only when this replica is behind
                    upsert=True,
                    return_document=ReturnDocument.BEFORE,
                )
                before = found if found is not None else {"seq": 0, "holder": None}
                break
            except DuplicateKeyError:
                pass
            if loop.time() > deadline:
                raise problems.unavailable(f"{self.name} is busy with other writes; try again")
            await asyncio.sleep(pause * (0.5 + random.random()))
            pause = min(pause * 2, 0.05)
        self.acquired += 1
        if before.get("holder") is not None:
            # Taken over from a holder whose lease ran out: it died, and what it wrote is not logged.
            log.warning("section taken over from an expired holder", extra={"section": self.name})
            self.seen = None
        held = _Held(token, int(before["seq"]), loop.time(), took_over=before.get("holder") is not None)
        held.renewing = asyncio.create_task(self._renew(token), name=f"lease-{self.name}")
        try:
            await self._catch_up(held.seq)
        except BaseException:
            held.caught_up = False
            await self._give_back(held)
            raise
        return held

    async def _give_back(self, held: _Held) -> None:
        if held.renewing is not None:
            held.renewing.cancel()
        entries = [{"seq": held.seq + i, "c": c, "id": k} for i, (c, k) in enumerate(held.written, start=1)]
        update: dict[str, Any] = {"$set": {"holder": None, "until": None}}
        if entries:
            update["$inc"] = {"seq": len(entries)}
            update["$push"] = {"recent": {"$each": entries, "$slice": -self.RECENT}}
        await self.desk.release(self.name, held.token, update)  # a lost lease is logged by the desk
        self.seen = held.seq + len(entries) if held.caught_up else None  # None: reload on next entry

    async def abandoned(self) -> bool:
        """A holder's lease ran out and nobody has entered since: it died holding the section, and
        whatever it left half-done waits for the next entry (which a timer can then make)."""
        doc = await self.col.find_one({"_id": self.name}, {"holder": 1, "until": 1})
        if doc is None or doc.get("holder") is None or doc.get("until") is None:
            return False
        return bool(doc["until"] < datetime.now(UTC))  # the client is tz-aware

    async def _renew(self, token: str) -> None:
        """Keep the lease while the holder works (a large recomputation or a full reload can outlast it)."""
        while True:
            await asyncio.sleep(self.lease / 3)
            until = datetime.now(UTC) + timedelta(seconds=self.lease)
            renewed = await self.col.update_one({"_id": self.name, "holder": token}, {"$set": {"until": until}})
            if renewed.matched_count != 1:
                log.error("section lease lost while held", extra={"section": self.name})
                return

    async def _catch_up(self, seq: int) -> None:
        seen = self.seen
        if seen is not None and seen >= seq:
            return
        recent: list[Doc] = []
        if seen is not None:
            doc = await self.col.find_one({"_id": self.name}, {"recent": 1})
            recent = [e for e in (doc or {}).get("recent", []) if seen < int(e["seq"]) <= seq]
        if seen is None or not recent or int(recent[0]["seq"]) != seen + 1:
            await self.refresh_all()  # fallen behind the log
        else:
            for key in dict.fromkeys((e["c"], e["id"]) for e in recent):
                await self.refresh_one(*key)
        self.seen = seq


@dataclass
class SectionTicket:
    """What the holder wrote, so the next holder (any replica) re-reads it."""

    written: list[tuple[str, str]] = field(default_factory=list)
    took_over: bool = False  # the first entry after a holder died: what it left half-done is the entrant's

    def wrote(self, collection: str, uuid: str) -> None:
        self.written.append((collection, uuid))


class Holder:
    """Which replica handles a single-active queue; a change of holder means: reload first.

    One read by ``_id`` per message, and one conditional write when the
    holder changes. Not a lock (RabbitMQ's single-active-consumer decides who
    gets messages); it only tells the new holder that its memory may be stale.
    """

    def __init__(self, db: AsyncDatabase[Doc], name: str, replica: str) -> None:
        self.col: AsyncCollection[Doc] = db["_holders"]
        self.name = name
        self.replica = replica

    async def claim(self) -> bool:
        doc = await self.col.find_one({"_id": self.name}, {"replica": 1})
        if doc is not None and doc.get("replica") == self.replica:
            return False  # the common case: one read
        try:
            before = await self.col.find_one_and_update(
                {"_id": self.name, "replica": {"$ne": self.replica}},
                {"$set": {"replica": self.replica, "since": datetime.now(UTC)}},
                upsert=True,
                return_document=ReturnDocument.BEFORE,
            )
        except DuplicateKeyError:  # a concurrent first message of ours claimed it
            return False
        return before is None or before.get("replica") != self.replica
