"""The delivery engine: one worker per target, ordered per subject, retried, circuit-broken.

Each active subscription gets its own worker task and its own HTTP client, so
a slow or hanging receiver only ever holds up itself. Within a target, each
stream (one aggregate's subject) has at most one delivery in flight and sends
in ``sequence`` order; different streams go concurrently.

Exactly-once is not possible over HTTP; this is at-least-once with a tiny
window: a delivery is marked ``delivered`` right after the receiver's 2xx. If
the process dies between that 2xx and the write, the delivery is still
``pending`` and is sent again after the restart with the same
``webhook-id`` (the event id), which receivers use to de-duplicate. Nothing
acknowledged is otherwise ever re-sent, and nothing is dropped: every final
state (delivered, failed, superseded) is stored and failed ones can be replayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx

from notifier import domain
from notifier.settings import NotifierSettings
from notifier.store import Deliveries, Doc
from orgdir import metrics

log = logging.getLogger(__name__)


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

    @classmethod
    def of(cls, doc: Doc) -> Pending:
        return cls(
            id=doc["_id"],
            stream=doc["stream"],
            sequence=int(doc["sequence"]),
            order=_ts(doc["created_at"]),
            due=_ts(doc.get("next_attempt_at") or doc["created_at"]),
            attempts=int(doc.get("attempts", 0)),
            horizon_start=_ts(doc.get("horizon_start") or doc["created_at"]),
            event=doc["event"],
        )


def _ts(value: datetime) -> float:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class Sender(Protocol):
    concurrency: int

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
    """All deliveries of one subscription; run() is its task."""

    sub: Doc
    sender: Sender
    store: Deliveries
    settings: NotifierSettings
    streams: dict[str, list[Pending]] = field(default_factory=dict)
    inflight: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.breaker = domain.CircuitBreaker(
            self.settings.circuit_failures, self.settings.circuit_cooldown_seconds
        )

    @property
    def target(self) -> str:
        return str(self.sub["_id"])

    def backlog(self) -> int:
        return sum(len(v) for v in self.streams.values())

    def _gauge(self) -> None:
        metrics.DELIVERY_BACKLOG.labels(self.target).set(self.backlog())
        metrics.TARGET_CIRCUIT_OPEN.labels(self.target).set(
            0 if self.breaker.open_until is None else 1
        )

    def add(self, p: Pending) -> None:
        items = self.streams.setdefault(p.stream, [])
        if any(x.id == p.id for x in items):
            return
        items.append(p)
        items.sort(key=lambda x: (x.sequence, x.order))
        self._gauge()
        self.wake.set()

    def drop(self, did: str) -> None:
        for stream, items in list(self.streams.items()):
            if stream in self.inflight:
                continue
            self.streams[stream] = [x for x in items if x.id != did]
            if not self.streams[stream]:
                del self.streams[stream]
        self._gauge()

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name=f"deliver-{self.target}")

    async def stop(self) -> None:
        """Stop starting new attempts, let those in flight finish (bounded), then close.

        Letting them finish keeps a graceful restart from re-sending something the
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
        heads: list[Pending] = []
        for stream, items in list(self.streams.items()):
            if stream in self.inflight or not items:
                continue
            if self.sub.get("latest_state_only") and len(items) > 1:
                await self._supersede(stream, items[:-1])
                items = self.streams[stream]
            heads.append(items[0])
        ready = sorted((h for h in heads if h.due <= now), key=lambda h: h.order)
        room = self.sender.concurrency - len(self.inflight)
        if self.breaker.open_until is not None:  # half-open: one probe at a time
            room = 0 if self.inflight else 1
        for p in ready[: max(0, room)]:
            self.inflight[p.stream] = asyncio.create_task(self._attempt(p), name=f"send-{p.id}")
        later = [h.due for h in heads if h.due > now]
        return max(0.01, min(later) - now) if later else None

    async def _supersede(self, stream: str, older: list[Pending]) -> None:
        for p in older:
            await self.store.set(
                p.id, {"status": "superseded", "last_error": "a newer state replaced it"}
            )
            metrics.DELIVERIES.labels(self.target, "superseded").inc()
        ids = {p.id for p in older}
        self.streams[stream] = [x for x in self.streams[stream] if x.id not in ids]

    async def _attempt(self, p: Pending) -> None:
        try:
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
            self._gauge()
            self.wake.set()

    async def _record(self, p: Pending, outcome: domain.Outcome) -> None:
        now = time.time()
        p.attempts += 1
        fields: dict[str, Any] = {
            "attempts": p.attempts,
            "last_status": outcome.status,
            "last_error": outcome.error,
        }
        final = True
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
                final = False
                fields["next_attempt_at"] = _dt(at)
                p.due = at
                metrics.DELIVERIES.labels(self.target, "retried").inc()
        await _persist(lambda: self.store.set(p.id, fields))
        if final:
            items = [x for x in self.streams.get(p.stream, []) if x.id != p.id]
            if items:
                self.streams[p.stream] = items
            else:
                self.streams.pop(p.stream, None)


async def _persist(write: Callable[[], Awaitable[None]]) -> None:
    """Keep trying to store an outcome: re-sending something acknowledged is worse than waiting."""
    delay = 0.2
    while True:
        try:
            await write()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(
                "could not store delivery outcome, retrying", extra={"error": str(exc)[:300]}
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


class Dispatcher:
    """Owns the workers; the consumer and the API hand it deliveries and subscription changes."""

    def __init__(
        self, settings: NotifierSettings, store: Deliveries, senders: dict[str, SenderFactory]
    ) -> None:
        self.settings = settings
        self.store = store
        self.senders = senders
        self.workers: dict[str, TargetWorker] = {}
        self._stopping: set[asyncio.Task[None]] = set()

    async def start(self, subs: list[Doc]) -> None:
        self.sync(subs)
        for doc in await self.store.pending():
            self.add(doc)

    def sync(self, subs: list[Doc]) -> None:
        """Create workers for new subscriptions, refresh the config of others, stop removed ones."""
        wanted = {s["_id"]: s for s in subs}
        for sid in list(self.workers):
            if sid not in wanted:
                gone = self.workers.pop(sid)
                self._stopping.add(asyncio.create_task(gone.stop()))
        for sid, sub in wanted.items():
            worker = self.workers.get(sid)
            if worker is None:
                fresh = TargetWorker(sub, self.senders[sub["kind"]](sub), self.store, self.settings)
                self.workers[sid] = fresh
                fresh.start()
            else:
                worker.sub.clear()
                worker.sub.update(sub)
                worker.wake.set()

    def add(self, doc: Doc) -> None:
        worker = self.workers.get(doc["subscription"])
        if worker is not None and doc.get("status") == "pending":
            worker.add(Pending.of(doc))

    def drop(self, doc: Doc) -> None:
        worker = self.workers.get(doc["subscription"])
        if worker is not None:
            worker.drop(doc["_id"])

    def status(self, sid: str) -> dict[str, Any]:
        worker = self.workers.get(sid)
        if worker is None:
            return {"circuit": "closed", "backlog": 0, "in_flight": 0}
        return {
            "circuit": worker.breaker.state,
            "consecutive_failures": worker.breaker.failures,
            "backlog": worker.backlog(),
            "in_flight": len(worker.inflight),
        }

    async def stop(self) -> None:
        await asyncio.gather(*(w.stop() for w in self.workers.values()), return_exceptions=True)
        self.workers.clear()
