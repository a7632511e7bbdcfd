"""Refresh for one consumer: every matching aggregate's current state, sent to one queue only.

A vendor's new consumer (or one that lost its data) asks each service for
``POST /api/v1/refresh {queue, event_types?, since?}``. The service streams
its aggregates (a cursor by ``_id``: bounded memory), publishes each one's
normal full-state event (``Repository.current_event``: the same envelope and
``sequence`` = version as the original) through RabbitMQ's default exchange
with the queue name as routing key, so no other queue receives it, with
publisher confirms a batch at a time; then a ``refresh.completed`` marker to
the same queue. A consumer that already holds a version skips it by sequence.

The job is a document in the service's database (``_refresh_jobs``), so any
replica answers ``GET /api/v1/refresh/{id}``. The replica that accepted it
runs it under a lease it renews, and writes a checkpoint (collection and last
``_id``) after every confirmed batch. A replica that stops hands the lease
back; one that dies lets it run out; either way another replica's sweep takes
the job over and resumes at the checkpoint (the unfinished batch goes out
again; consumers skip it by sequence). After ``MAX_TAKEOVERS`` the job is
failed rather than retried forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import aio_pika
from aio_pika.abc import AbstractChannel
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from orgdir import context, metrics, problems
from orgdir.bus import Bus, amqp_matches
from orgdir.events import CATALOGUE, CloudEvent, is_current, new_event, side_by_side
from orgdir.settings import Settings
from orgdir.store import Doc, Index, Repository, index

log = logging.getLogger(__name__)

JOBS = "_refresh_jobs"
COMPLETED = "refresh.completed"
MAX_TAKEOVERS = 3
PATTERN = re.compile(r"^([a-z_]+|\*|#)(\.([a-z_]+|\*|#))*$")
QUEUE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,254}$"
INDEXES: list[Index] = [index(JOBS, "state", "lease_until")]

State = Literal["running", "completed", "failed"]


class RefreshIn(BaseModel):
    """What to send again, and to which queue."""

    model_config = ConfigDict(extra="forbid")

    queue: str = Field(
        pattern=QUEUE_NAME,
        description="The consumer's queue (it must exist); nothing else receives the events.",
        examples=["vendor-ad.events"],
    )
    event_types: list[str] | None = Field(
        None,
        min_length=1,
        max_length=50,
        description="Routing-key patterns (`person.*`, `access.#`); an aggregate is sent when its event "
        "type matches one. Default: every aggregate.",
    )
    since: AwareDatetime | None = Field(
        None, description="Only aggregates changed at or after this instant (from the registration history)."
    )


class RefreshStatus(BaseModel):
    """A refresh job's progress; any replica answers it."""

    id: str
    service: str
    queue: str
    event_types: list[str] | None
    since: datetime | None
    state: State
    total: int | None = Field(None, description="Aggregates to look at; null until counted.")
    done: int = Field(description="Aggregates looked at so far.")
    published: int = Field(
        description="State events sent (and confirmed) so far; a copy in a previous dataversion is not counted."
    )
    requested_by: str
    started_at: datetime
    finished_at: datetime | None
    error: str | None


def check_patterns(patterns: list[str]) -> list[str]:
    """Each pattern well formed and matching some event type of the catalogue (422 otherwise)."""
    out: list[str] = []
    for p in patterns:
        if not PATTERN.match(p):
            raise problems.rule(
                "invalid-event-pattern", f"{p!r} is not a routing-key pattern such as person.* or #.", pattern=p
            )
        if not any(amqp_matches(p, t) for t in CATALOGUE):
            raise problems.rule("unknown-event-type", f"{p!r} matches no event type of the catalogue.", pattern=p)
        if p not in out:
            out.append(p)
    return out


def status_of(job: Doc) -> RefreshStatus:
    return RefreshStatus.model_validate({"id": job["_id"], **{k: v for k, v in job.items() if k != "_id"}})


class _Lost(Exception):
    """Another replica took the job over (this one's lease ran out)."""


class Refresher:
    """Runs refresh jobs on this replica and takes over those of replicas that went away."""

    def __init__(
        self,
        db: AsyncDatabase[Doc],
        bus: Bus,
        settings: Settings,
        repositories: dict[str, Repository],
        replica: str,
    ) -> None:
        self.col: AsyncCollection[Doc] = db[JOBS]
        self.bus = bus
        self.settings = settings
        self.repositories = repositories
        self.replica = replica
        self.lease = settings.refresh_lease_seconds
        self.batch = settings.refresh_batch  # events per confirmed batch and per checkpoint
        self._tasks: dict[str, asyncio.Task[None]] = {}

    # ------------------------------------------------------------------ requests

    async def submit(self, body: RefreshIn, requested_by: str) -> RefreshStatus:
        patterns = check_patterns(body.event_types) if body.event_types is not None else None
        await self._require_queue(body.queue)
        now = datetime.now(UTC)
        job: Doc = {
            "_id": str(uuid.uuid4()),
            "service": self.settings.service_name,
            "queue": body.queue,
            "event_types": patterns,
            "since": body.since,
            "state": "running",
            "total": None,
            "done": 0,
            "published": 0,
            "requested_by": requested_by,
            "correlationid": context.correlation_id.get(),
            "started_at": now,
            "finished_at": None,
            "error": None,
            "owner": self.replica,
            "lease_until": now + timedelta(seconds=self.lease),
            "takeovers": 0,
            "checkpoint": {"collection": None, "last_id": None},
        }
        await self.col.insert_one(job)
        self._spawn(job)
        return status_of(job)

    async def status(self, job_id: str) -> RefreshStatus:
        job = await self.col.find_one({"_id": job_id})
        if job is None:
            raise problems.not_found("refresh", job_id)
        return status_of(job)

    async def _require_queue(self, queue: str) -> None:
        """404 unless the queue exists (a passive declare; it closes the channel when it does not)."""
        if self.bus.connection is None or not self.bus.is_ready():
            raise problems.unavailable("The broker does not answer; try again shortly.")
        channel = await self.bus.connection.channel()
        try:
            await channel.declare_queue(queue, passive=True)
        except aio_pika.exceptions.ChannelNotFoundEntity as exc:
            raise problems.missing(
                "unknown-queue",
                f"There is no queue {queue!r}; start the consumer once so that it declares its queue.",
                queue=queue,
            ) from exc
        finally:
            with contextlib.suppress(Exception):
                await channel.close()

    # ------------------------------------------------------------------ lifecycle

    def _spawn(self, job: Doc) -> None:
        job_id = str(job["_id"])
        task = asyncio.create_task(self._run(job_id, job.get("correlationid")), name=f"refresh-{job_id}")
        self._tasks[job_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job_id, None))

    async def wait(self, job_id: str) -> None:
        """Until this replica's run of the job ends (tests, benchmarks)."""
        task = self._tasks.get(job_id)
        if task is not None:
            await asyncio.shield(task)

    async def sweep(self) -> None:
        """Take over jobs whose owner's lease ran out (it died or stopped); run on a timer by every replica."""
        now = datetime.now(UTC)
        async for stale in self.col.find({"state": "running", "lease_until": {"$lt": now}}, {"_id": 1}):
            job = await self.col.find_one_and_update(
                {"_id": stale["_id"], "state": "running", "lease_until": {"$lt": now}},
                {
                    "$set": {"owner": self.replica, "lease_until": now + timedelta(seconds=self.lease)},
                    "$inc": {"takeovers": 1},
                },
                return_document=ReturnDocument.AFTER,
            )
            if job is None:
                continue  # another replica was quicker
            if int(job.get("takeovers", 0)) > MAX_TAKEOVERS:
                await self._finish(str(job["_id"]), "failed", f"given up after {MAX_TAKEOVERS} takeovers")
                continue
            log.warning("resuming a refresh another replica left", extra={"refresh": job["_id"]})
            self._spawn(job)

    async def stop(self) -> None:
        """Stop this replica's runs and hand their leases back, so another replica resumes them at once."""
        tasks = list(self._tasks.items())
        for _, task in tasks:
            task.cancel()
        await asyncio.gather(*(t for _, t in tasks), return_exceptions=True)
        for job_id, _ in tasks:
            with contextlib.suppress(Exception):
                await self.col.update_one(
                    {"_id": job_id, "owner": self.replica, "state": "running"},
                    {"$set": {"lease_until": datetime.now(UTC) - timedelta(seconds=1)}},
                )

    # ------------------------------------------------------------------ the run

    async def _run(self, job_id: str, correlationid: str | None) -> None:
        context.correlation_id.set(correlationid)
        context.causation_id.set(None)
        renewing = asyncio.create_task(self._renew(job_id), name=f"refresh-lease-{job_id}")
        try:
            await self._work(job_id)
        except _Lost:
            log.warning("refresh taken over by another replica", extra={"refresh": job_id})
        except Exception as exc:
            log.exception("refresh failed", extra={"refresh": job_id})
            with contextlib.suppress(Exception):
                await self._finish(job_id, "failed", f"{type(exc).__name__}: {exc}"[:2000])
        finally:
            renewing.cancel()

    async def _renew(self, job_id: str) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            with contextlib.suppress(Exception):
                await self.col.update_one(
                    {"_id": job_id, "owner": self.replica, "state": "running"},
                    {"$set": {"lease_until": datetime.now(UTC) + timedelta(seconds=self.lease)}},
                )

    async def _finish(self, job_id: str, state: State, error: str | None = None) -> None:
        await self.col.update_one(
            {"_id": job_id, "owner": self.replica, "state": "running"},
            {"$set": {"state": state, "error": error, "finished_at": datetime.now(UTC), "lease_until": None}},
        )

    async def _selected(self, patterns: list[str] | None) -> list[Repository]:
        """The repositories whose event types a pattern can match (all when no filter); fixed order."""
        if patterns is None:
            return list(self.repositories.values())
        out = []
        for repo in self.repositories.values():
            sample = await repo.col.find_one({"version": {"$gte": 1}}, Repository.CURRENT_PROJECTION)
            kind = repo.current_type_of(sample) if sample is not None else None
            if kind is None:
                continue
            prefix = kind.split(".", 1)[0] + "."
            if any(amqp_matches(p, t) for t in CATALOGUE if t.startswith(prefix) for p in patterns):
                out.append(repo)
        return out

    async def _work(self, job_id: str) -> None:
        job = await self.col.find_one({"_id": job_id})
        if job is None or job["state"] != "running":
            return
        patterns: list[str] | None = job["event_types"]
        query: Doc = {"version": {"$gte": 1}}
        if job.get("since") is not None:
            query["updated_at"] = {"$gte": job["since"]}
        repos = await self._selected(patterns)
        if job.get("total") is None:
            total = sum([await r.col.count_documents(query) for r in repos])
            await self._checkpoint(job_id, {"total": total})
        checkpoint = job.get("checkpoint") or {}
        names = [r.name for r in repos]
        start = names.index(checkpoint["collection"]) if checkpoint.get("collection") in names else 0
        published = int(job.get("published", 0))
        if self.bus.connection is None or not self.bus.is_ready():
            raise ConnectionError("broker not connected")
        channel = await self.bus.connection.channel(publisher_confirms=True, on_return_raises=True)
        # One batch is published while the next is read (at most two in memory), in order.
        sending: asyncio.Task[int] | None = None

        async def send(batch: list[CloudEvent], collection: str, last: Any, scanned: int) -> None:
            nonlocal sending, published
            if sending is not None:
                published += await sending
            sending = asyncio.create_task(self._send(job_id, channel, job["queue"], batch, collection, last, scanned))

        try:
            for repo in repos[start:]:
                q = dict(query)
                if repo.name == checkpoint.get("collection") and checkpoint.get("last_id") is not None:
                    q["_id"] = {"$gt": checkpoint["last_id"]}
                batch: list[CloudEvent] = []
                scanned = 0
                last: Any = None
                cursor = repo.col.find(q, Repository.CURRENT_PROJECTION).sort("_id", 1).batch_size(self.batch)
                async for doc in cursor:
                    scanned += 1
                    last = doc["_id"]
                    event = repo.current_event(doc)
                    if event is not None and (patterns is None or any(amqp_matches(p, event.type) for p in patterns)):
                        batch.extend(side_by_side(event))
                    if scanned >= self.batch:
                        await send(batch, repo.name, last, scanned)
                        batch, scanned = [], 0
                if scanned:
                    await send(batch, repo.name, last, scanned)
            if sending is not None:
                published += await sending
                sending = None
            marker = new_event(
                service=self.settings.service_name,
                type=COMPLETED,
                subject=job_id,
                sequence=1,
                data={"refresh_id": job_id, "service": self.settings.service_name, "count": published},
                correlationid=context.correlation_id.get(),
            )
            await self._publish(channel, job["queue"], [marker])
        finally:
            if sending is not None and not sending.done():
                sending.cancel()
                with contextlib.suppress(BaseException):
                    await sending
            with contextlib.suppress(Exception):
                await channel.close()
        await self._finish(job_id, "completed")
        log.info("refresh completed", extra={"refresh": job_id, "queue": job["queue"], "published": published})

    async def _send(
        self,
        job_id: str,
        channel: AbstractChannel,
        queue: str,
        events: list[CloudEvent],
        collection: str,
        last_id: Any,
        scanned: int,
    ) -> int:
        """Publish one batch (all confirmed), then move the checkpoint past it."""
        await self._publish(channel, queue, events)
        sent = sum(1 for e in events if is_current(e))  # a previous dataversion's copy is not one more event
        await self._checkpoint(
            job_id,
            {"checkpoint": {"collection": collection, "last_id": last_id}},
            inc={"done": scanned, "published": sent},
        )
        return sent

    async def _publish(self, channel: AbstractChannel, queue: str, events: list[CloudEvent]) -> None:
        """Through the default exchange: routing key = queue name, so only that queue gets it;
        ``mandatory`` makes a queue deleted meanwhile fail the job instead of dropping events."""
        results = await asyncio.gather(
            *(
                channel.default_exchange.publish(self.bus.message(e), routing_key=queue, mandatory=True, timeout=30)
                for e in events
            ),
            return_exceptions=True,
        )
        for r in results:
            if isinstance(r, BaseException):
                raise r
        for e in events:
            metrics.EVENTS_PUBLISHED.labels(self.settings.service_name, e.type).inc()

    async def _checkpoint(self, job_id: str, fields: Doc, inc: dict[str, int] | None = None) -> None:
        update: Doc = {"$set": {**fields, "lease_until": datetime.now(UTC) + timedelta(seconds=self.lease)}}
        if inc:
            update["$inc"] = inc
        done = await self.col.update_one({"_id": job_id, "owner": self.replica, "state": "running"}, update)
        if done.matched_count != 1:
            raise _Lost(job_id)
