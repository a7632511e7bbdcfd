"""MongoDB-wire storage: aggregates with an embedded outbox, and projections.

Written for the common subset of MongoDB and FerretDB 1.24: single-document
atomic writes only (no transactions), ``$pullAll`` with exact values instead
of conditional ``$pull`` (a silent no-op on FerretDB), no projection on
``find_one_and_update``, no partial/TTL indexes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo import AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure
from pymongo.operations import InsertOne, ReplaceOne, UpdateOne

from orgdir import context, problems
from orgdir.clock import Clock
from orgdir.events import CloudEvent, new_event

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


_LOCKS: weakref.WeakValueDictionary[tuple[str, str, str], asyncio.Lock] = weakref.WeakValueDictionary()
# Concurrent writes on FerretDB: measured 845 updates/s at 1, 1,215/s at 4, no SQLITE_BUSY
# once lookups by _id use the index (before, long scans made writers collide).
FERRETDB_WRITERS = 4
# Statements per bulk write. FerretDB 1.24 hangs, and then answers no one, on an
# update command of 100 or more statements (99 measured fine); stay well below.
MAX_BULK = 50


class WriteGate:
    """At most ``size`` writes at once; background writes go when no foreground write waits.

    Background work (the relay pulling published events out of outboxes) then
    runs in the gaps of a burst instead of doubling its length, and waits at
    most ``patience`` seconds so a steady load cannot starve it.
    """

    def __init__(self, size: int, patience: float = 1.0) -> None:
        self._slots = asyncio.Semaphore(size)
        self._urgent = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.patience = patience

    async def gap(self) -> None:
        """Wait until no foreground write is waiting, or ``patience`` has passed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._no_foreground_waiting(), self.patience)

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        self._urgent += 1
        self._idle.clear()
        try:
            await self._slots.acquire()
        finally:
            self._urgent -= 1
            if not self._urgent:
                self._idle.set()
        try:
            yield
        finally:
            self._slots.release()

    async def _no_foreground_waiting(self) -> None:
        while self._urgent:
            await self._idle.wait()


_GATES: dict[int, WriteGate] = {}


def _mutex(ident: tuple[str, str, str]) -> asyncio.Lock:
    lock = _LOCKS.get(ident)
    if lock is None:
        lock = _LOCKS[ident] = asyncio.Lock()
    return lock


@contextlib.asynccontextmanager
async def doc_lock(col: AsyncCollection[Doc], key: str) -> AsyncIterator[None]:
    """Serialises this process's writes to one document (and, on FerretDB, all writes).

    FerretDB 1.x applies an update by reading the document, changing it in Go
    and writing it back by ``_id`` with no compare-and-swap, so two concurrent
    updates of one document can lose one of them. Its SQLite backend has one
    writer at a time, so there writes go through one ``WriteGate`` per client
    (a few at once keep FerretDB busy while Python works). Every write path
    in the platform takes this; across replicas only MongoDB gives the
    guarantee. Do not nest it.
    """
    async with docs_lock(col, [key]):
        yield


@contextlib.asynccontextmanager
async def docs_lock(col: AsyncCollection[Doc], keys: list[str], *, background: bool = False) -> AsyncIterator[None]:
    """``doc_lock`` for one bulk write to several documents (locks taken in sorted order).

    ``background`` writes (the relay's outbox removals) first wait for a gap
    in the foreground writes, see ``WriteGate``.
    """
    idents = sorted({(col.database.name, col.name, key) for key in keys})
    gate: WriteGate | None = None
    if not await compares_in_server(col):
        gate = _gate_of(col)
        if background:
            await gate.gap()  # before taking any lock, so nobody waits on us meanwhile
    async with contextlib.AsyncExitStack() as stack:
        for ident in idents:
            await stack.enter_async_context(_mutex(ident))
        if gate is None:
            yield
            return
        async with gate.hold():
            try:
                yield
            except BaseException:
                for ident in idents:
                    _KNOWN.pop(ident, None)  # the write may or may not have happened
                raise


@contextlib.asynccontextmanager
async def key_lock(col: AsyncCollection[Doc], key: str) -> AsyncIterator[None]:
    """The per-document half of ``doc_lock``, for writes that go through a ``BulkWriter``."""
    ident = (col.database.name, col.name, key)
    async with _mutex(ident):
        try:
            yield
        except BaseException:
            _KNOWN.pop(ident, None)
            raise


BulkOp = InsertOne[Doc] | UpdateOne | ReplaceOne[Doc]


class BulkWriter:
    """Group commit: single-document writes from concurrent tasks go out as shared bulk writes.

    On FerretDB a command costs far more than a statement in it (inserts:
    ~1,300/s one by one, ~20,000/s in bulk), so a consumer handling dozens of
    events at once writes them together. Each caller holds ``key_lock`` for its
    document and gets its own outcome (``DuplicateKeyError`` included).
    """

    def __init__(self, col: AsyncCollection[Doc]) -> None:
        self.col = col
        self._queue: list[tuple[BulkOp, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.commands = 0  # bulk writes sent (for tests and metrics)

    async def write(self, op: BulkOp) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((op, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name=f"bulk-{self.col.name}")
        await future

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let the writers woken with us join this batch
        while self._queue:
            batch, self._queue = self._queue[:MAX_BULK], self._queue[MAX_BULK:]
            try:
                await self._send(batch)
            except BaseException as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc if isinstance(exc, Exception) else RuntimeError("cancelled"))
                if not isinstance(exc, Exception):
                    raise

    async def _send(self, batch: list[tuple[BulkOp, asyncio.Future[None]]]) -> None:
        errors: dict[int, dict[str, Any]] = {}
        gate = None if await compares_in_server(self.col) else _gate_of(self.col)
        async with gate.hold() if gate is not None else contextlib.nullcontext():
            self.commands += 1
            try:
                await self.col.bulk_write([op for op, _ in batch], ordered=False)
            except BulkWriteError as exc:
                errors = {int(e["index"]): e for e in exc.details.get("writeErrors", [])}
        for i, (_, future) in enumerate(batch):
            if future.done():
                continue
            error = errors.get(i)
            if error is None:
                future.set_result(None)
            elif error.get("code") == 11000:
                future.set_exception(DuplicateKeyError(str(error.get("errmsg")), 11000, error))
            else:
                future.set_exception(OperationFailure(str(error.get("errmsg")), error.get("code"), error))


def _gate_of(col: AsyncCollection[Doc]) -> WriteGate:
    gate = _GATES.get(id(col.database.client))
    if gate is None:
        gate = _GATES[id(col.database.client)] = WriteGate(FERRETDB_WRITERS)
    return gate


_COMPARES_IN_SERVER: dict[int, bool] = {}


async def compares_in_server(col: AsyncCollection[Doc]) -> bool:
    """Whether a filter beside ``_id`` is a real compare-and-swap (MongoDB) or not (FerretDB).

    FerretDB 1.24 on SQLite pushes a filter down to SQL only when it is ``_id``
    alone; any other key makes every update a full scan, and still no CAS. There
    the version is checked under ``doc_lock`` and the write filters by ``_id``.
    """
    client = col.database.client
    known = _COMPARES_IN_SERVER.get(id(client))
    if known is None:
        info = await client.admin.command("buildInfo")
        known = _COMPARES_IN_SERVER[id(client)] = "ferretdbVersion" not in info
    return known


_KNOWN: OrderedDict[tuple[str, str, str], dict[str, Any]] = OrderedDict()
_KNOWN_MAX = 200_000


def remember(col: AsyncCollection[Doc], key: str, field: str, value: Any) -> None:
    """Record what this process just wrote under ``doc_lock``, so the next ``guard`` need not read it.

    On FerretDB (one writing process, see ``doc_lock``) that spares a read of
    the whole document before every versioned write.
    """
    ident = (col.database.name, col.name, key)
    _KNOWN.setdefault(ident, {})[field] = value
    _KNOWN.move_to_end(ident)
    if len(_KNOWN) > _KNOWN_MAX:
        _KNOWN.popitem(last=False)


def forget(col: AsyncCollection[Doc], key: str) -> None:
    _KNOWN.pop((col.database.name, col.name, key), None)


async def known_value(col: AsyncCollection[Doc], key: str, field: str) -> Any:
    """``field`` of the stored document (None when there is none): remembered on FerretDB, else read."""
    if not await compares_in_server(col):
        known = _KNOWN.get((col.database.name, col.name, key), {})
        if field in known:
            return known[field]
    current = await col.find_one({"_id": key}, {field: 1})
    return None if current is None else current.get(field)


async def guard(col: AsyncCollection[Doc], key: str, field: str, expected: Any) -> dict[str, Any] | None:
    """A filter matching ``key`` only while ``field == expected``; the caller holds ``doc_lock``.

    None when the document is gone or has moved on.
    """
    if await compares_in_server(col):
        return {"_id": key, field: expected}
    return {"_id": key} if await known_value(col, key, field) == expected else None


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
    ) -> None:
        self.col: AsyncCollection[Doc] = db[collection]
        self.name = collection
        self.service = service
        self.clock = clock
        self.event_data = event_data or (lambda uuid, version, state: {"uuid": uuid, "version": version, **state})
        self.on_write: Callable[[str, str, list[dict[str, Any]]], None] = lambda c, u, o: None
        self.inserts = BulkWriter(self.col)

    def event_for(self, uuid: str, version: int, event_type: str, state: dict[str, Any]) -> CloudEvent:
        return self._event(uuid, version, event_type, self.event_data(uuid, version, state))

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
        return await self.col.find_one({"_id": uuid}, {"outbox": 0, "registrations": 0})

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
            outbox.append(self._event(uuid, i, event_type, build(i)).model_dump(mode="json"))
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
        async with key_lock(self.col, uuid):
            await self.inserts.write(InsertOne(doc))  # concurrent creations share a command
            remember(self.col, uuid, "version", doc["version"])
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
        async with doc_lock(self.col, uuid):
            query = await guard(self.col, uuid, "version", expected)
            doc = None
            if query is not None:
                doc = await self.col.find_one_and_update(query, update, return_document=ReturnDocument.AFTER)
            if doc is not None:
                remember(self.col, uuid, "version", version)
        if doc is None:
            forget(self.col, uuid)
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
        raise problems.Problem(
            400, "invalid-cursor", "Invalid cursor", "The cursor is not one this API gave out."
        ) from exc


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
    """Newest applied sequence per (consumer, aggregate, subject), for stale-event skipping."""

    def __init__(self, db: AsyncDatabase[Doc], collection: str = "_seen") -> None:
        self.col: AsyncCollection[Doc] = db[collection]
        self.writer = BulkWriter(self.col)  # a consumer's concurrent handlers mark together

    @staticmethod
    def key(consumer: str, event: CloudEvent) -> str:
        """Sequences count per aggregate stream: ``access.*`` and ``person.*`` share a subject."""
        return f"{consumer}:{event.type.split('.', 1)[0]}:{event.subject}"

    async def is_stale(self, consumer: str, event: CloudEvent) -> bool:
        doc = await self.col.find_one({"_id": self.key(consumer, event)})
        return doc is not None and int(doc["sequence"]) >= event.sequence

    async def mark(self, consumer: str, event: CloudEvent) -> None:
        key = self.key(consumer, event)
        async with key_lock(self.col, key):
            await self.writer.write(UpdateOne({"_id": key}, {"$max": {"sequence": event.sequence}}, upsert=True))


class Projection:
    """A local copy of another service's aggregates, applied only when newer."""

    def __init__(self, db: AsyncDatabase[Doc], collection: str) -> None:
        self.col: AsyncCollection[Doc] = db[collection]

    async def apply(self, subject: str, sequence: int, body: dict[str, Any]) -> bool:
        """Store ``body`` for ``subject`` if ``sequence`` is newer; False when stale."""
        async with doc_lock(self.col, subject):
            return await self._apply(subject, sequence, body)

    async def _apply(self, subject: str, sequence: int, body: dict[str, Any]) -> bool:
        doc = {**body, "_id": subject, "sequence": sequence}
        for _ in range(10):
            current = await known_value(self.col, subject, "sequence")
            if current is None:
                try:
                    await self.col.insert_one(doc)
                except DuplicateKeyError:
                    forget(self.col, subject)
                    continue
                remember(self.col, subject, "sequence", sequence)
                return True
            if int(current) >= sequence:
                return False
            query = await guard(self.col, subject, "sequence", current)
            if query is None:
                forget(self.col, subject)
                continue
            res = await self.col.replace_one(query, doc)
            if res.matched_count:
                remember(self.col, subject, "sequence", sequence)
                return True
            forget(self.col, subject)
            await asyncio.sleep(0)
        raise RuntimeError(f"projection {self.col.name}: could not apply {subject}@{sequence}")

    async def get(self, subject: str) -> Doc | None:
        return await self.col.find_one({"_id": subject})
