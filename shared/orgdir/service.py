"""One service's runtime: database, bus, outbox relay, consumers and timers, in one process.

A service builds a ``Runtime``, registers its repositories and consumers, and
hands ``runtime.lifespan`` to ``create_app``. Startup does not wait for the
broker: writes work (the outbox grows) while RabbitMQ is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

from fastapi import FastAPI
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConnectionFailure

from orgdir import crypto, logs, metrics, problems, refresh, store
from orgdir.auth import Authenticator
from orgdir.bus import Bus, Consumer, ReplicaQueue, Router, Routes, Signals, ViewFeed
from orgdir.clock import Clock, SystemClock
from orgdir.events import CloudEvent, side_by_side
from orgdir.relay import OutboxRelay
from orgdir.settings import Settings

T = TypeVar("T")
log = logging.getLogger(__name__)


class Runtime:
    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock(settings.timezone)
        self.mongo = store.connect(settings.mongodb_url, settings.mongo_timeout_ms)
        self.db: AsyncDatabase[store.Doc] = self.mongo[settings.database_name]
        self.bus = Bus(settings)
        self.relay = OutboxRelay(self.db, [], self.bus, settings, self.clock)
        self.seen = store.MongoSeenStore(self.db)
        self.consumers: list[Consumer] = []
        self.repositories: dict[str, store.Repository] = {}
        self.indexes: list[store.Index] = []
        self.section_desk: store.SectionDesk | None = None  # one per replica: its takes share commands
        self.views: list[ReplicaQueue] = []  # view feeds and signals: bound before the load
        self.replica = uuid.uuid4().hex[:12]
        self.loaders: list[Callable[[], Awaitable[Any]]] = []
        self._timers: list[tuple[float, Callable[[], Awaitable[Any]]]] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._consumers_task: asyncio.Task[None] | None = None
        self.authenticator = Authenticator(settings)
        # collection -> fields it holds sealed (``rotate_keys``)
        self.sealed_collections: dict[str, frozenset[str]] = {}
        self._keyring: crypto.Keyring | None = None
        self.refresher = refresh.Refresher(self.db, self.bus, settings, self.repositories, self.replica)
        self.declare(*refresh.INDEXES)
        self.started = False

    def repository(self, collection: str, **kwargs: Any) -> store.Repository:
        """An aggregate collection (``store.Repository`` options: ``event_data``, ``current_type``)."""
        repo = store.Repository(self.db, collection, service=self.settings.service_name, clock=self.clock, **kwargs)
        repo.on_write = self.relay.notify
        self.relay.collections.append(collection)
        self.repositories[collection] = repo
        self.declare(store.index(collection, "next_transition_at"))  # the scheduler's query
        self.declare(store.index(collection, store.OUTBOX_SINCE, sparse=True))  # the relay's sweep
        return repo

    @property
    def keyring(self) -> crypto.Keyring:
        """Seals personal data and secrets at rest (``orgdir.crypto``); built from the settings on first use."""
        if self._keyring is None:
            self._keyring = self.settings.keyring()
        return self._keyring

    def sealed(self, *collections: str, fields: Iterable[str] = ()) -> None:
        """Collections that hold sealed values: ``rotate_keys`` re-encrypts them.

        ``fields`` are the keys whose values must be sealed: one still in plaintext
        (stored by a version before sealing) is sealed by ``rotate_keys`` too.
        """
        for c in collections:
            self.sealed_collections[c] = self.sealed_collections.get(c, frozenset()) | frozenset(fields)

    async def rotate_keys(self) -> dict[str, Any]:
        """Seal every value under an older key (or still in plaintext) with the current key, history too."""
        out: dict[str, Any] = {"key_id": None, "documents": 0, "values": 0}
        if not self.sealed_collections:
            return out  # this service stores nothing sealed
        out["key_id"] = self.keyring.current
        for collection, fields in self.sealed_collections.items():
            docs, values = await crypto.reseal_collection(self.db, collection, self.keyring, fields)
            out["documents"] += docs
            out["values"] += values
        return out

    def check_settings(self) -> None:
        """Refuse to start on unsafe settings (``UnsafeSettings`` names what to set); warn on static tokens."""
        try:
            self.settings.check_startup()
        except Exception as exc:
            log.critical(str(exc))
            raise
        for warning in self.authenticator.warnings:
            log.warning(warning)

    def declare(self, *indexes: store.Index) -> None:
        """The indexes this service's queries and invariants need; created at every start."""
        self.indexes.extend(ix for ix in indexes if ix not in self.indexes)

    def section(
        self, name: str, refresh_one: Callable[[str, str], Awaitable[None]], refresh_all: Callable[[], Awaitable[None]]
    ) -> store.Section:
        if self.section_desk is None:
            self.section_desk = store.SectionDesk(self.db)
        return store.Section(
            self.db,
            f"{self.settings.service_name}.{name}",
            refresh_one=refresh_one,
            refresh_all=refresh_all,
            desk=self.section_desk,
        )

    def view(
        self,
        patterns: list[str],
        apply: Callable[[CloudEvent], Awaitable[None]],
        reload: Callable[[], Awaitable[Any]],
        *,
        handled_by: list[str] | None = None,
    ) -> ViewFeed:
        """Keep this replica's in-memory model current (see ``ViewFeed``).

        ``patterns``: the service's own events; ``handled_by``: names of this
        service's consumers whose handled events every replica should see too.
        """
        name = f"{self.settings.queue_prefix}{self.settings.service_name}.view.{self.replica}"
        echoes = [self.echo_exchange(c) for c in handled_by or []]
        feed = ViewFeed(self.bus, f"{name}.{len(self.views)}", patterns, apply, reload, echoes)
        self.views.append(feed)
        return feed

    def signals(
        self, name: str, apply: Callable[[dict[str, Any]], Awaitable[None]], reload: Callable[[], Awaitable[Any]]
    ) -> Signals:
        """Notices to every replica of this service (``Signals``), e.g. for plain documents without events."""
        queue = f"{self.settings.queue_prefix}{self.settings.service_name}.{name}.{self.replica}"
        exchange = f"{self.settings.exchange}.{self.settings.service_name}.{name}"
        feed = Signals(self.bus, queue, exchange, apply, reload)
        self.views.append(feed)
        return feed

    def echo_exchange(self, consumer: str) -> str:
        return f"{self.settings.exchange}.{self.settings.queue(consumer)}.handled"

    def projection(self, collection: str) -> store.Projection:
        return store.Projection(self.db, collection)

    def consumer(
        self,
        name: str,
        router: Router,
        *,
        skip_stale: bool = True,
        on_takeover: Callable[[], Awaitable[Any]] | None = None,
        in_order: Callable[[CloudEvent], str] | None = None,
    ) -> Consumer:
        """A consumer of ``<service>.<name>``: competing across replicas by default.

        ``on_takeover`` makes the queue single-active: one replica handles it
        at a time, and a replica that takes over reloads its state first.
        """
        holder = None
        if on_takeover is not None:
            holder = store.Holder(self.db, self.settings.queue(name), self.replica)
        c = Consumer(
            self.bus, name, router, self.seen if skip_stale else None, holder, on_takeover, in_order=in_order
        )
        self.consumers.append(c)
        return c

    def consume(
        self,
        routes: Routes[T],
        target: T,
        *,
        skip_stale: bool = True,
        on_takeover: Callable[[], Awaitable[Any]] | None = None,
    ) -> Consumer:
        """Run a module-level ``Routes`` declaration for ``target`` (its handlers' first argument).

        A single-active declaration needs ``on_takeover``: the reload a replica
        does before it handles the queue's first message.
        """
        if routes.service != self.settings.service_name:
            raise ValueError(f"{routes.full_name} is not a queue of {self.settings.service_name}")
        if routes.single_active != (on_takeover is not None):
            raise ValueError(f"{routes.full_name}: on_takeover is needed exactly when the queue is single-active")
        return self.consumer(
            routes.queue, routes.bind(target), skip_stale=skip_stale, on_takeover=on_takeover, in_order=routes.in_order
        )

    def every(self, seconds: float, job: Callable[[], Awaitable[Any]]) -> None:
        """Run ``job`` periodically (schedulers); errors are logged, never fatal."""
        self._timers.append((seconds, job))

    def _wire_echoes(self) -> None:
        """Consumers whose handled events a view wants pass them on (views and consumers declare in any order)."""
        wanted = {echo for feed in self.views if isinstance(feed, ViewFeed) for echo in feed.echoes}
        for c in self.consumers:
            if self.echo_exchange(c.name) in wanted:
                c.echo = self.echo_exchange(c.name)

    async def prepare(self) -> None:
        """Indexes (a unique one guards an invariant from the first write), views bound, models loaded.

        Retries while the database comes up or is too busy to answer (a replica restarted while
        the database recovers must not exit); does not wait long for the broker.
        """
        metrics.observe_gc(self.settings.service_name)
        gc.set_threshold(self.settings.gc_young_threshold, *gc.get_threshold()[1:])
        self.bus.start()
        self._wire_echoes()
        await _until_answered(lambda: store.ensure_indexes(self.db, self.indexes), "creating the indexes")
        for feed in self.views:
            feed.start()
        if self.views:  # bound before the load if the broker answers soon; else the bind reloads
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(f.bound.wait() for f in self.views)), 10)
        for load in self.loaders:  # idempotent: a load cut off by the database is run again
            await _until_answered(load, "loading")
        for feed in self.views:
            feed.loaded = True

    async def start(self) -> None:
        self.bus.start()
        self.relay.start()
        self._consumers_task = asyncio.create_task(self._start_consumers(), name="consumers")
        self._tasks.append(self._consumers_task)
        for seconds, job in [*self._timers, (self.settings.refresh_lease_seconds / 3, self.refresher.sweep)]:
            self._tasks.append(asyncio.create_task(self._tick(seconds, job), name=f"timer-{job}"))
        self.started = True

    async def _start_consumers(self) -> None:
        for c in self.consumers:
            while True:
                try:
                    await c.start()
                    break
                except Exception as exc:
                    log.warning("consumer start failed, retrying", extra={"consumer": c.name, "error": str(exc)})
                    await asyncio.sleep(1)

    async def consumers_ready(self, timeout: float = 30) -> None:
        """Wait until every consumer's queue is declared and bound (tests and demo loading)."""
        if self._consumers_task is not None:
            await asyncio.wait_for(asyncio.shield(self._consumers_task), timeout)

    async def _tick(self, seconds: float, job: Callable[[], Awaitable[Any]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await job()
            except Exception as exc:
                log.warning("timer job failed", extra={"job": str(job), "error": str(exc)})

    async def stop(self) -> None:
        await self.refresher.stop()  # hands running refreshes over to another replica
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for c in self.consumers:
            with contextlib.suppress(Exception):
                await c.stop()
        for v in self.views:
            with contextlib.suppress(Exception):
                await v.stop()
        await self.relay.stop()
        with contextlib.suppress(Exception):
            await self.bus.close()
        await self.mongo.close()

    async def ready(self) -> dict[str, bool]:
        try:
            await asyncio.wait_for(self.mongo.admin.command("ping"), 2)
            db_ok = True
        except Exception:
            db_ok = False
        consumers = self._consumers_task is not None and self._consumers_task.done()
        views = all(v.bound.is_set() and v.loaded for v in self.views)
        return {"database": db_ok, "broker": self.bus.is_ready(), "consumers": consumers, "views": views}

    async def republish(self) -> int:
        """Publish every aggregate's current state again, for a consumer that joined late.

        Consumers that already hold a version skip the repeat by ``sequence``;
        a new one (a vendor's, or a queue declared after the fact) catches up.
        """
        count = 0
        for repo in self.repositories.values():
            async for doc in repo.col.find({}, store.Repository.CURRENT_PROJECTION):
                event = repo.current_event(doc)
                if event is None:  # never published (no version yet)
                    continue
                for each in side_by_side(event):
                    await self.bus.publish(each)
                count += 1
                if count % 1000 == 0:
                    log.info("republishing", extra={"published": count})
        log.info("republished", extra={"published": count})
        return count

    @contextlib.asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        app.state.runtime = self
        app.state.authenticator = self.authenticator
        self.check_settings()
        await self.prepare()
        await self.start()
        try:
            yield
        finally:
            await self.stop()


def configure_logging(settings: Settings) -> None:
    logs.configure(settings.service_name, settings.log_level)


async def _until_answered(action: Callable[[], Awaitable[Any]], what: str) -> None:
    """Run ``action`` until the database lets it finish (it is away, or too busy to answer).

    A section held by a replica that died keeps its lease for a while (``Section.lease``);
    a start that needs the section waits that out instead of exiting.
    """
    while True:
        try:
            await action()
            return
        except ConnectionFailure as exc:
            log.warning("database not answering, retrying", extra={"during": what, "error": str(exc)[:300]})
        except problems.Unavailable as exc:
            log.warning("busy, retrying", extra={"during": what, "error": str(exc)[:300]})
        await asyncio.sleep(1)
