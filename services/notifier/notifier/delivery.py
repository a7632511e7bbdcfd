"""The delivery engine: a worker per target on every replica, ordered per stream, leased, retried.

Each subscription gets a worker task and its own HTTP client on every
replica, so a slow or hanging receiver only ever holds up itself. Within a
target, each stream (one aggregate's subject) has at most one delivery in
flight and sends in ``sequence`` order; different streams go concurrently.

Replicas. A delivery is sent only by the replica holding its lease in the
database (``owner``, ``lease_until``): the replica that records it (the one
handling ``notifier.all``) holds it from the start and sends it at once; an
attempt that would outlast the lease renews it first, a retry keeps it until
its next attempt. Any other replica takes a delivery only by a conditional
write (``Deliveries.claim``) once it was released (a graceful stop hands
everything back and tells the others) or its lease ran out (a crash): two
replicas never send the same delivery at once. Per stream, a replica sends only the oldest pending
delivery it knows of, and it always knows every older one (the recording
replica queues them in order; a replica taking over the consumer loads every
pending delivery, the orphan sweep loads whole streams), so the order per
stream holds across replicas too: a head held by another replica is waited
for, never skipped.

Exactly-once is not possible over HTTP; this is at-least-once with a tiny
window: a delivery is marked ``delivered`` right after the receiver's 2xx. If
the sending replica dies between that 2xx and the write, the delivery stays
``pending`` and is sent again, by whichever replica takes it over, with the
same ``webhook-id`` (the event id, stored with the delivery), which receivers
use to de-duplicate. Nothing acknowledged is otherwise ever re-sent, and
nothing is dropped: every final state (delivered, failed, superseded) is
stored and failed ones can be replayed.

The circuit breaker and the concurrency limit are per replica (each one
protects the target from itself); the backlog the API reports is counted in
the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import httpx

from notifier import domain
from notifier.settings import NotifierSettings
from notifier.store import Deliveries, Doc
from orgdir import metrics

log = logging.getLogger(__name__)

T = TypeVar("T")

# An attempt starts only with this much lease left beyond its timeout; else the lease is renewed.
LEASE_MARGIN_SECONDS = 2.0
# Look again at a stream head another replica holds when its lease ends (or when that replica
# says it released it); a little spread, so replicas do not all claim at the same instant.
JITTER_SECONDS = 0.2


@dataclass
class Pending:
    """A delivery waiting in memory; the database holds the same state."""

    id: str
    stream: str
    sequence: int
    order: float
    due: float
    attempts: int
    horizon_start: float
    event: dict[str, Any]
    held_until: float = 0.0  # the lease this replica holds on it (0: none known)
    keep: bool = False  # latest-state-only: another replica holds it, so it is sent, not superseded

    @classmethod
    def of(cls, doc: Doc, replica: str) -> Pending:
        now = time.time()
        owner = doc.get("owner")
        lease = _ts(doc["lease_until"]) if doc.get("lease_until") else 0.0
        due = _ts(doc.get("next_attempt_at") or doc["created_at"])
        if owner not in (None, replica) and lease > now:
            due = max(due, lease + random.uniform(0, JITTER_SECONDS))  # another replica's, for now
        return cls(
            id=doc["_id"],
            stream=doc["stream"],
            sequence=int(doc["sequence"]),
            order=_ts(doc["created_at"]),
            due=due,
            attempts=int(doc.get("attempts", 0)),
            horizon_start=_ts(doc.get("horizon_start") or doc["created_at"]),
            event=doc["event"],
            held_until=lease if owner == replica else 0.0,
        )


def _ts(value: datetime) -> float:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class Sender(Protocol):
    concurrency: int

    def key_of(self, p: Pending) -> str:
        """Deliveries with one key are never in flight at once (at least: one stream's)."""
        ...

    async def send(self, sub: Doc, p: Pending) -> domain.Outcome: ...

    async def close(self) -> None: ...


class WebhookSender:
    """POSTs the CloudEvent, signed the Standard Webhooks way, with a hard timeout."""

    def __init__(self, settings: NotifierSettings) -> None:
        self.concurrency = settings.target_concurrency
        timeout = settings.delivery_timeout_seconds
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            limits=httpx.Limits(
                max_connections=self.concurrency, max_keepalive_connections=self.concurrency
            ),
            follow_redirects=False,
        )

    def key_of(self, p: Pending) -> str:
        return p.stream

    async def send(self, sub: Doc, p: Pending) -> domain.Outcome:
        body = json.dumps(p.event, separators=(",", ":"), ensure_ascii=False).encode()
        ts = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": str(p.event["id"]),
            "webhook-timestamp": str(ts),
            "webhook-signature": domain.sign(sub["secret"], str(p.event["id"]), ts, body),
            "user-agent": "orgdir-notifier/1",
        }
        try:
            r = await self.client.post(sub["url"], content=body, headers=headers)
        except httpx.TimeoutException as exc:
            return domain.Outcome("retry", None, f"timeout: {type(exc).__name__}")
        except httpx.HTTPError as exc:
            return domain.Outcome("retry", None, f"connection: {type(exc).__name__}: {exc}"[:500])
        return domain.classify(r.status_code, r.headers.get("retry-after"))

    async def close(self) -> None:
        await self.client.aclose()


SenderFactory = Callable[[Doc], Sender]


@dataclass
class TargetWorker:
    """All deliveries of one subscription this replica knows of; run() is its task."""

    sub: Doc
    sender: Sender
    store: Deliveries
    settings: NotifierSettings
    replica: str
    streams: dict[str, list[Pending]] = field(default_factory=dict)
    known: set[str] = field(default_factory=set)
    inflight: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    # Stream heads by (due, order), checked when taken: an entry whose stream is in flight or
    # whose head or due changed since is dropped. A step costs O(log n), not a walk over every
    # stream: with thousands of streams waiting (a SCIM target after an import) the walk per
    # step took a third of the notifier's CPU.
    ready: list[tuple[float, float, str, str]] = field(default_factory=list)
    busy: set[str] = field(default_factory=set)  # the sender's keys of what is in flight
    parked: dict[str, list[tuple[float, float, str, str]]] = field(default_factory=dict)  # waiting for a key

    def __post_init__(self) -> None:
        self.breaker = domain.CircuitBreaker(
            self.settings.circuit_failures, self.settings.circuit_cooldown_seconds
        )

    @property
    def target(self) -> str:
        return str(self.sub["_id"])

    @property
    def lease(self) -> float:
        return self.settings.lease_seconds

    def backlog(self) -> int:
        return len(self.known)

    def _gauge(self) -> None:
        metrics.DELIVERY_BACKLOG.labels(self.target).set(self.backlog())
        metrics.TARGET_CIRCUIT_OPEN.labels(self.target).set(
            0 if self.breaker.open_until is None else 1
        )

    def add(self, p: Pending) -> None:
        if p.id in self.known:
            return
        self.known.add(p.id)
        items = self.streams.setdefault(p.stream, [])
        items.append(p)
        items.sort(key=lambda x: (x.sequence, x.order))
        self._push_head(p.stream)
        self._gauge()
        self.wake.set()

    def _push_head(self, stream: str) -> None:
        """Offer the stream's head to ``_step`` (after any change to the head or its due)."""
        items = self.streams.get(stream)
        if items and stream not in self.inflight:
            head = items[0]
            heapq.heappush(self.ready, (head.due, head.order, stream, head.id))

    def _head_entry(self) -> tuple[float, float, str, str] | None:
        """The first entry of ``ready`` that still names a stream's current head (stale ones dropped)."""
        while self.ready:
            due, _, stream, pid = entry = self.ready[0]
            items = self.streams.get(stream)
            if stream not in self.inflight and items and items[0].id == pid and items[0].due == due:
                return entry
            heapq.heappop(self.ready)
        return None

    def _forget(self, p: Pending) -> None:
        self.known.discard(p.id)
        items = [x for x in self.streams.get(p.stream, []) if x.id != p.id]
        if items:
            self.streams[p.stream] = items
            self._push_head(p.stream)
        else:
            self.streams.pop(p.stream, None)

    def look_again(self) -> None:
        """Deliveries another replica held may be free now: try them without waiting for leases."""
        now = time.time()
        for stream, items in self.streams.items():
            for p in items:
                if p.held_until == 0.0 and p.due > now:
                    p.due = now + random.uniform(0, JITTER_SECONDS)
            self._push_head(stream)
        self.wake.set()

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name=f"deliver-{self.target}")

    async def stop(self) -> None:
        """Stop starting new attempts, let those in flight finish (bounded), then close.

        Letting them finish keeps a graceful stop from re-sending something the
        receiver already acknowledged; only a crash leaves that window open.
        """
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        inflight = list(self.inflight.values())
        if inflight:
            await asyncio.wait(inflight, timeout=self.settings.delivery_timeout_seconds + 1)
        for t in inflight:
            t.cancel()
        await asyncio.gather(*inflight, return_exceptions=True)
        await self.sender.close()

    async def run(self) -> None:
        while True:
            self.wake.clear()
            try:
                timeout = await self._step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("delivery worker step failed", extra={"target": self.target})
                timeout = 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout)

    async def _step(self) -> float | None:
        """Start what may go now; return how long to sleep (None: until woken)."""
        if not self.sub.get("active", True):
            return None
        now = time.time()
        pause = self.breaker.wait(now)
        self._gauge()
        if pause > 0:
            return pause
        room = self.sender.concurrency - len(self.inflight)
        if self.breaker.open_until is not None:  # half-open: one probe at a time
            room = 0 if self.inflight else 1
        while room > 0 and (entry := self._head_entry()) is not None and entry[0] <= now:
            heapq.heappop(self.ready)
            stream = entry[2]
            items = self.streams[stream]
            if self.sub.get("latest_state_only") and len(items) > 1:
                older = [x for x in items[:-1] if not x.keep]
                if older:
                    try:
                        await self._supersede(older)
                    finally:
                        self._push_head(stream)  # its new head (or the kept one) is offered again
                    continue
            p = items[0]
            key = self.sender.key_of(p)
            if key in self.busy:
                self.parked.setdefault(key, []).append(entry)  # offered again when that key is free
                continue
            self.busy.add(key)
            self.inflight[stream] = asyncio.create_task(self._attempt(p, key), name=f"send-{p.id}")
            room -= 1
        entry = self._head_entry()
        if entry is None or (entry[0] <= now and room <= 0):
            return None  # woken by an addition or a finished attempt
        return max(0.01, entry[0] - now)

    async def _supersede(self, older: list[Pending]) -> None:
        for p in older:
            if await self.store.supersede(p.id, self.replica):
                self._forget(p)
                metrics.DELIVERIES.labels(self.target, "superseded").inc()
            else:
                p.keep = True  # another replica holds it (or it is final): it is not ours to drop

    async def _attempt(self, p: Pending, key: str) -> None:
        try:
            try:
                held = await self._hold(p)
            except Exception as exc:  # the database is away: look again shortly, not at once
                log.warning("could not take the delivery's lease, retrying", extra={"error": str(exc)[:300]})
                p.due = time.time() + 1.0
                return
            if not held:
                return
            try:
                outcome = await self.sender.send(self.sub, p)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a connector bug must not kill the worker
                log.exception("sender raised", extra={"target": self.target})
                outcome = domain.Outcome("retry", None, f"{type(exc).__name__}: {exc}"[:500])
            await self._record(p, outcome)
        finally:
            self.inflight.pop(p.stream, None)
            self.busy.discard(key)
            for entry in self.parked.pop(key, []):
                heapq.heappush(self.ready, entry)
            self._push_head(p.stream)
            self._gauge()
            self.wake.set()

    async def _hold(self, p: Pending) -> bool:
        """True when this replica holds the lease long enough for one attempt (renewed if need be).

        False: another replica holds it (look again when its lease ends, or
        when that replica says it stopped: ``look_again``), it
        is no longer pending (forgotten here), or its next attempt is later.
        """
        now = time.time()
        if p.held_until - now >= self.settings.delivery_timeout_seconds + LEASE_MARGIN_SECONDS:
            return True
        doc = await self.store.claim(p.id, self.replica, self.lease)
        if doc is None:
            p.held_until = 0.0
            current = await self.store.peek(p.id)
            if current is None or current.get("status") != "pending":
                self._forget(p)  # sent (or failed, superseded) by another replica
                return False
            until = _ts(current["lease_until"]) if current.get("lease_until") else now
            p.due = max(now + 0.05, until) + random.uniform(0, JITTER_SECONDS)
            return False
        p.held_until = _ts(doc["lease_until"])
        p.attempts = int(doc.get("attempts", 0))
        p.horizon_start = _ts(doc.get("horizon_start") or doc["created_at"])
        next_attempt = _ts(doc.get("next_attempt_at") or doc["created_at"])
        if next_attempt > now + 0.005:  # a retry another replica scheduled before it went away
            p.due = next_attempt
            return False
        return True

    async def _record(self, p: Pending, outcome: domain.Outcome) -> None:
        now = time.time()
        p.attempts += 1
        fields: dict[str, Any] = {
            "attempts": p.attempts,
            "last_status": outcome.status,
            "last_error": outcome.error,
        }
        if outcome.kind == "ok":
            fields.update(status="delivered", delivered_at=_dt(now), last_error=None)
            self.breaker.success()
            metrics.DELIVERIES.labels(self.target, "ok").inc()
            event_time = datetime.fromisoformat(str(p.event["time"]).replace("Z", "+00:00"))
            metrics.DELIVERY_LATENCY.labels(self.target).observe(
                max(0.0, now - event_time.timestamp())
            )
        elif outcome.kind == "fail":
            fields.update(status="failed")
            self.breaker.success()  # the target answered: it is up, this request is wrong
            metrics.DELIVERIES.labels(self.target, "failed").inc()
        else:
            self.breaker.failure(now)
            s = self.settings
            at = domain.next_retry(
                p.attempts,
                outcome,
                now=now,
                horizon_end=p.horizon_start + s.delivery_horizon_seconds,
                base=s.backoff_base_seconds,
                cap=s.backoff_max_seconds,
            )
            if at is None:
                fields.update(
                    status="failed",
                    last_error=f"gave up after {p.attempts} attempts: {outcome.error}",
                )
                metrics.DELIVERIES.labels(self.target, "failed").inc()
            else:
                metrics.DELIVERIES.labels(self.target, "retried").inc()
                kept = await _persist(
                    lambda: self.store.reschedule(p.id, self.replica, fields, _dt(at), self.lease)
                )
                p.due = at
                p.held_until = at + self.lease if kept else 0.0
                return
        # Stored only while this replica holds the lease; had another taken it over, its outcome counts.
        await _persist(lambda: self.store.finish(p.id, self.replica, fields))
        self._forget(p)


async def _persist(write: Callable[[], Awaitable[T]]) -> T:
    """Keep trying to store an outcome: re-sending something acknowledged is worse than waiting."""
    delay = 0.2
    while True:
        try:
            return await write()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(
                "could not store delivery outcome, retrying", extra={"error": str(exc)[:300]}
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


class Dispatcher:
    """This replica's workers; the consumer, the sweep and the API hand it deliveries and subscriptions."""

    def __init__(
        self,
        settings: NotifierSettings,
        store: Deliveries,
        senders: dict[str, SenderFactory],
        replica: str,
        unknown: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self.unknown = unknown  # called by the sweep for orphans of a subscription it has no worker for
        self.store = store
        self.senders = senders
        self.replica = replica
        self.workers: dict[str, TargetWorker] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self.stopped = False

    async def start(self, subs: list[Doc]) -> None:
        self.sync(subs)
        await self.sweep()
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="delivery-sweep")

    def sync(self, subs: list[Doc]) -> None:
        """Create workers for new subscriptions, refresh the config of others, stop removed ones."""
        if self.stopped:
            return
        wanted = {s["_id"]: s for s in subs}
        for sid in list(self.workers):
            if sid not in wanted:
                gone = self.workers.pop(sid)
                task = asyncio.create_task(gone.stop())
                self._stopping.add(task)
                task.add_done_callback(self._stopping.discard)
        for sid, sub in wanted.items():
            worker = self.workers.get(sid)
            if worker is None:
                fresh = TargetWorker(
                    dict(sub), self.senders[sub["kind"]](sub), self.store, self.settings, self.replica
                )
                self.workers[sid] = fresh
                fresh.start()
            else:
                worker.sub.clear()
                worker.sub.update(sub)
                worker.wake.set()

    def add(self, doc: Doc) -> None:
        worker = self.workers.get(doc["subscription"])
        if worker is not None and doc.get("status") == "pending" and not self.stopped:
            worker.add(Pending.of(doc, self.replica))

    def released(self, replica: str) -> None:
        """Another replica stopped and handed its pending deliveries back."""
        if replica != self.replica:
            for worker in self.workers.values():
                worker.look_again()

    def knows(self, did: str, sid: str) -> bool:
        worker = self.workers.get(sid)
        return worker is not None and did in worker.known

    async def load_pending(self) -> int:
        """Queue every pending delivery (a replica taking over the consumer: it must know every
        older delivery of a stream before it records a newer one)."""
        docs = await self.store.pending()
        for doc in docs:
            self.add(doc)
        return len(docs)

    async def sweep(self) -> int:
        """Take up whole streams that have a delivery nobody holds (released, or its holder died)."""
        orphans = await self.store.orphaned_streams()
        if self.unknown is not None:
            for sid in {sid for _, sid, _ in orphans if sid not in self.workers}:
                await self.unknown(sid)
        streams = {
            (sid, stream) for did, sid, stream in orphans
            if sid in self.workers and not self.knows(did, sid)
        }
        if not streams:
            return 0
        docs = await self.store.pending_of_streams(streams)
        for doc in docs:
            self.add(doc)
        log.info("took up orphaned deliveries", extra={"streams": len(streams), "deliveries": len(docs)})
        return len(docs)

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.delivery_sweep_seconds * random.uniform(0.8, 1.2))
            try:
                await self.sweep()
            except Exception as exc:
                log.warning("delivery sweep failed", extra={"error": str(exc)[:300]})

    def status(self, sid: str) -> dict[str, Any]:
        """This replica's view of a target: its circuit and what it has in flight."""
        worker = self.workers.get(sid)
        if worker is None:
            return {"circuit": "closed", "consecutive_failures": 0, "in_flight": 0}
        return {
            "circuit": worker.breaker.state,
            "consecutive_failures": worker.breaker.failures,
            "in_flight": len(worker.inflight),
        }

    async def stop(self) -> None:
        """Finish what is in flight, then hand every pending delivery back for other replicas."""
        self.stopped = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        await asyncio.gather(
            *(w.stop() for w in self.workers.values()), *self._stopping, return_exceptions=True
        )
        self.workers.clear()
        try:
            released = await self.store.release(self.replica)
            log.info("released pending deliveries", extra={"deliveries": released})
        except Exception as exc:  # they are taken over when their leases run out
            log.warning("could not release deliveries", extra={"error": str(exc)[:300]})
