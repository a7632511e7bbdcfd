"""RabbitMQ: topology, a confirming publisher, and a consumer router.

Topology (names derive from ``settings.exchange`` so tests can isolate):

- ``<exchange>``: durable topic exchange, routing key = event type, with an
  alternate exchange ``<exchange>.unrouted`` → queue of the same name, so an
  event nobody is bound to yet is kept, not dropped.
- per consumer a quorum queue ``<prefix><service>.<consumer>`` with
  ``x-delivery-limit`` and lossless dead-lettering to ``<queue>.dead`` via the
  direct exchange ``<exchange>.dead``.

Consumers retry a failing handler with a growing delay (nack + requeue; the
quorum queue counts attempts in ``x-delivery-count``); on the last attempt
the message is published to ``<queue>.dead`` with the error in headers and
only then acked, so nothing is ever lost. The queue's own delivery limit is a
safety net for a process that crashes while handling. A handler failing
because the database is away (``is_transient``) is retried in place without
using up an attempt, for up to ``transient_hold_seconds``: an outage must not
turn the events in flight into dead letters.

A single-active queue may be handled in order (``Routes(in_order=key)``):
messages with the same key are handled one after another in arrival order,
each through all its in-place retries, so a message held through an outage is
never overtaken by a later one of its stream (which would make it stale).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import functools
import json
import logging
import random
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from pydantic import BaseModel
from pymongo.errors import ConnectionFailure
from yarl import URL

from orgdir import context, metrics, problems
from orgdir.coalesce import Coalesced
from orgdir.events import CloudEvent, EventRejected, is_current, parse, typed_data
from orgdir.settings import Settings

log = logging.getLogger(__name__)

Handler = Callable[[CloudEvent, Any], Awaitable[None]]


class FailoverConnection(aio_pika.RobustConnection):
    """A robust connection to one of several brokers (the nodes of a cluster), round robin.

    aio-pika's ``connect_robust`` reconnects to its one URL only (mosquito/aio-pika#141),
    so a service would wait for the very node that died. Every (re)connect attempt
    here takes the next URL: the robust machinery clears ``transport`` right
    before each attempt (``RobustConnection.__connect_transport``), which is the
    hook; channels, queues and consumers are then restored on the new node as usual.
    ``start`` spreads the replicas of a service over the nodes.
    """

    def __init__(self, urls: list[str], *, start: int = 0, **kwargs: Any) -> None:
        if not urls:
            raise ValueError("no broker URL")
        self._failover_urls = [URL(u) for u in urls]
        self._failover_next = start % len(urls)
        self._failover_armed = False
        super().__init__(self._failover_urls[self._failover_next], **kwargs)
        self._failover_armed = True

    @property
    def transport(self) -> Any:
        return self.__dict__.get("_failover_transport")

    @transport.setter
    def transport(self, value: Any) -> None:
        if value is None and self.__dict__.get("_failover_armed") and not self._close_called:
            self.url = self._failover_urls[self._failover_next]
            self._failover_next = (self._failover_next + 1) % len(self._failover_urls)
        self.__dict__["_failover_transport"] = value


class Bus:
    """One robust connection per process; a confirming channel for publishing."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._dead_exchange: AbstractExchange | None = None
        self.connected = asyncio.Event()
        self._connect_task: asyncio.Task[None] | None = None
        self._attempts = random.randrange(len(settings.amqp_urls))  # replicas spread over the nodes

    @property
    def exchange_name(self) -> str:
        return self.settings.exchange

    def start(self) -> None:
        """Connect in the background, retrying, so a service starts while the broker is away (idempotent)."""
        if self._connect_task is None:
            self._connect_task = asyncio.create_task(self._connect_forever(), name="bus-connect")

    async def _connect_forever(self) -> None:
        delay = 0.5
        while True:
            try:
                await self.connect()
                return
            except Exception as exc:  # broker not up yet
                log.warning("broker not reachable, retrying", extra={"error": str(exc)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def connect(self) -> None:
        start, self._attempts = self._attempts, self._attempts + 1  # a failed connect tries the next node next
        connection = FailoverConnection(
            self.settings.amqp_urls,
            start=start,
            reconnect_interval=1,
            client_properties={"connection_name": self.settings.service_name},
        )
        await connection.connect(timeout=10)
        self.connection = connection
        self._channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        self._exchange, self._dead_exchange = await declare_exchanges(self._channel, self.exchange_name)
        if self.settings.declare_topology:
            from orgdir.topology import declare_all

            await declare_all(self.connection, self.settings)
        self.connected.set()

    def is_ready(self) -> bool:
        return (
            self.connection is not None
            and not self.connection.is_closed
            and self._channel is not None
            and not self._channel.is_closed
        )

    async def wait_connected(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self.connected.wait(), timeout)

    def message(self, event: CloudEvent) -> aio_pika.Message:
        """An event as an AMQP message (persistent, structured CloudEvent): one shape for every publish."""
        return aio_pika.Message(
            event.body(),
            content_type="application/cloudevents+json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=event.id,
            type=event.type,
            timestamp=event.time,
            correlation_id=event.correlationid,
            app_id=self.settings.service_name,
        )

    async def publish(self, event: CloudEvent) -> None:
        """Publish with confirm and ``mandatory``; raises if the broker did not take it."""
        if self._exchange is None or not self.is_ready():
            raise ConnectionError("broker not connected")
        await self._exchange.publish(self.message(event), routing_key=event.type, mandatory=True, timeout=10)
        metrics.EVENTS_PUBLISHED.labels(self.settings.service_name, event.type).inc()

    async def fanout(self, exchange: str, body: bytes, *, type: str | None = None) -> None:
        """Publish to a fanout ``exchange`` of every replica's own queue (echoes, signals), confirmed."""
        if self._channel is None or not self.is_ready():
            raise ConnectionError("broker not connected")
        target = await self._channel.declare_exchange(exchange, aio_pika.ExchangeType.FANOUT, durable=True)
        message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, type=type)
        await target.publish(message, routing_key="", timeout=10)

    async def publish_dead(self, queue: str, message: AbstractIncomingMessage, reason: str) -> None:
        """Move a message to ``<queue>.dead`` with the reason; confirmed before the caller acks."""
        if self._dead_exchange is None:
            raise ConnectionError("broker not connected")
        headers = dict(message.headers or {})
        headers.update(
            {
                "x-orgdir-error": reason[:4000],
                "x-orgdir-queue": queue,
                "x-orgdir-failed-at": datetime.now(UTC).isoformat(),
                "x-orgdir-routing-key": message.routing_key or "",
            }
        )
        await self._dead_exchange.publish(
            aio_pika.Message(
                message.body,
                headers=headers,
                content_type=message.content_type,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=message.message_id,
                type=message.type,
            ),
            routing_key=f"{queue}.dead",
            mandatory=True,
            timeout=10,
        )

    async def close(self) -> None:
        if self._connect_task:
            self._connect_task.cancel()
        if self.connection is not None:
            await self.connection.close()


def is_transient(exc: BaseException) -> bool:
    """The database is unreachable or busy: retrying later helps, the message itself is fine."""
    return isinstance(exc, ConnectionFailure | problems.Unavailable)


async def declare_exchanges(channel: AbstractChannel, name: str) -> tuple[AbstractExchange, AbstractExchange]:
    unrouted = await channel.declare_exchange(f"{name}.unrouted", aio_pika.ExchangeType.FANOUT, durable=True)
    unrouted_queue = await channel.declare_queue(f"{name}.unrouted", durable=True, arguments={"x-queue-type": "quorum"})
    await unrouted_queue.bind(unrouted)
    exchange = await channel.declare_exchange(
        name,
        aio_pika.ExchangeType.TOPIC,
        durable=True,
        arguments={"alternate-exchange": f"{name}.unrouted"},
    )
    dead = await channel.declare_exchange(f"{name}.dead", aio_pika.ExchangeType.DIRECT, durable=True)
    return exchange, dead


async def declare_consumer_queue(
    channel: AbstractChannel,
    exchange: str,
    queue: str,
    patterns: list[str],
    delivery_limit: int,
    *,
    single_active: bool = False,
) -> AbstractQueue:
    """The quorum queue, its bindings, and its dead-letter queue.

    ``single_active``: RabbitMQ delivers to one consumer at a time and fails
    over to another replica's when it goes away (for consumers whose handling
    needs the whole stream in one place).
    """
    dead = await channel.declare_queue(f"{queue}.dead", durable=True, arguments={"x-queue-type": "quorum"})
    await dead.bind(f"{exchange}.dead", routing_key=f"{queue}.dead")
    q = await channel.declare_queue(
        queue,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": delivery_limit,
            "x-dead-letter-exchange": f"{exchange}.dead",
            "x-dead-letter-routing-key": f"{queue}.dead",
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
            **({"x-single-active-consumer": True} if single_active else {}),
        },
    )
    for pattern in patterns:
        await q.bind(exchange, routing_key=pattern)
    return q


def amqp_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching: ``*`` is one word, ``#`` is zero or more."""
    p, k = pattern.split("."), routing_key.split(".")

    def go(i: int, j: int) -> bool:
        if i == len(p):
            return j == len(k)
        if p[i] == "#":
            return any(go(i + 1, jj) for jj in range(j, len(k) + 1))
        if j == len(k):
            return False
        return (p[i] == "*" or fnmatch.fnmatchcase(k[j], p[i])) and go(i + 1, j + 1)

    return go(0, 0)


class Router:
    """Maps routing-key patterns to handlers: ``@router.on("orgunit.*")``."""

    def __init__(self) -> None:
        self.routes: list[tuple[str, Handler]] = []

    def on(self, *patterns: str) -> Callable[[Handler], Handler]:
        def deco(fn: Handler) -> Handler:
            for p in patterns:
                self.routes.append((p, fn))
            return fn

        return deco

    @property
    def patterns(self) -> list[str]:
        return sorted({p for p, _ in self.routes})

    def handlers_for(self, event_type: str) -> list[Handler]:
        seen: list[Handler] = []
        for p, fn in self.routes:
            if amqp_matches(p, event_type) and fn not in seen:
                seen.append(fn)
        return seen


T_co = TypeVar("T_co")


class Routes(Generic[T_co]):
    """A consumer queue declared at module level: its name, patterns and handlers.

    Handlers take the service they work for first (``async def on_x(svc, event,
    data)``); ``bind`` gives the ``Router`` a ``Consumer`` runs. Declared at
    import time, so the queue topology (``orgdir.topology``) is derived from
    these declarations, never listed by hand.
    """

    def __init__(
        self,
        service: str,
        queue: str,
        *,
        single_active: bool = False,
        in_order: Callable[[CloudEvent], str] | None = None,
    ) -> None:
        if in_order is not None and not single_active:
            # The order is kept by one process; competing replicas would each keep their own.
            raise ValueError(f"{service}.{queue}: in_order needs a single-active queue")
        self.service = service
        self.queue = queue  # the consumer name; the queue is ``<service>.<queue>``
        self.single_active = single_active
        self.in_order = in_order
        self.routes: list[tuple[str, Callable[..., Awaitable[Any]]]] = []

    @property
    def full_name(self) -> str:
        return f"{self.service}.{self.queue}"

    def on(self, *patterns: str) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
        def deco(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            for p in patterns:
                self.routes.append((p, fn))
            return fn

        return deco

    @property
    def patterns(self) -> list[str]:
        return sorted({p for p, _ in self.routes})

    def bind(self, target: T_co) -> Router:
        router = Router()
        bound: dict[Callable[..., Awaitable[Any]], Handler] = {}
        for pattern, fn in self.routes:  # one bound handler per function: called once per event
            router.routes.append((pattern, bound.setdefault(fn, functools.partial(fn, target))))
        return router


class SeenStore(Protocol):
    """Remembers the newest sequence applied per subject (stale-event skipping).

    ``claim`` is False for a stale event; otherwise the delivery holds the
    stream until ``finish``, so two deliveries never handle it at once.
    """

    async def claim(self, consumer: str, event: CloudEvent) -> bool: ...

    async def finish(self, consumer: str, event: CloudEvent, *, applied: bool) -> None: ...


class Takeover(Protocol):
    """Tells a single-active consumer whether it is still the one that handled the last message."""

    async def claim(self) -> bool:
        """Make this replica the holder; True when another one (or nobody) held it before."""
        ...


class KeyedLocks:
    """One ``asyncio.Lock`` per key while anyone holds or waits for it (FIFO per key)."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def of(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock


def _channel_of(message: AbstractIncomingMessage) -> object | None:
    """The broker channel a message came on (None when it is closed: then always check)."""
    try:
        return message.channel
    except Exception:
        return None


@dataclass
class Consumer:
    """Consumes one queue with a router; manual acks, bounded prefetch.

    With ``takeover`` the queue is single-active (see ``declare_consumer_queue``)
    and, before handling a message, the consumer checks that it still holds
    the queue; when it has just taken over (failover, or a restart),
    ``on_takeover`` reloads its state from the database first, so a replica
    never handles the stream from a stale in-memory model.
    """

    bus: Bus
    name: str
    router: Router
    seen: SeenStore | None = None
    takeover: Takeover | None = None
    on_takeover: Callable[[], Awaitable[Any]] | None = None
    echo: str | None = None  # fanout exchange: handled events go on to every replica's view queue
    in_order: Callable[[CloudEvent], str] | None = None  # the stream key whose messages take turns
    _queue_name: str = ""
    _turns: KeyedLocks = field(default_factory=KeyedLocks)
    _channel: AbstractChannel | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    # The takeover check: messages pass it in arrival order and none passes before the
    # reload it triggered is done. A check that began after a message arrived answers
    # for that message too, so a burst of prefetched messages costs one read, not one each.
    _hold: Coalesced = field(default_factory=Coalesced)
    # The broker channel the last check ran for. RabbitMQ hands a single-active queue to
    # another consumer only when the active one is cancelled or its channel closes, and a
    # channel reopened after that is a new one: messages on the channel a check ran for
    # come from an unbroken hold, and need no check (one read per message was a fifth of
    # the notifier's time during an import).
    _checked_on: object | None = None
    _reload_owed: bool = False  # a takeover's reload failed: the next message reloads first

    @property
    def queue_name(self) -> str:
        return self._queue_name or self.bus.settings.queue(self.name)

    async def start(self) -> None:
        await self.bus.wait_connected()
        assert self.bus.connection is not None
        s = self.bus.settings
        self._channel = await self.bus.connection.channel()
        await self._channel.set_qos(prefetch_count=s.prefetch)  # per consumer, never global
        queue = await declare_consumer_queue(
            self._channel,
            s.exchange,
            self.queue_name,
            self.router.patterns,
            s.delivery_limit,
            single_active=self.takeover is not None,
        )
        await queue.consume(self._on_message)
        self._tasks.append(asyncio.create_task(self._watch_dead(), name=f"dead-{self.name}"))

    async def _watch_dead(self) -> None:
        """Export the dead queue's depth so an alert can fire."""
        while True:
            try:
                if self._channel is not None and not self._channel.is_closed:
                    q = await self._channel.declare_queue(f"{self.queue_name}.dead", passive=True)
                    count = q.declaration_result.message_count or 0
                    metrics.DEAD_LETTER_MESSAGES.labels(self.bus.settings.service_name, self.queue_name).set(count)
            except Exception as exc:
                log.debug("dead queue depth unavailable", extra={"error": str(exc)})
            await asyncio.sleep(15)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        arrival = self._hold.ticket()
        kind = message.type or message.routing_key or "unknown"
        try:
            event = parse(message.body)
            if not is_current(event):  # the copy in another dataversion (side_by_side): not ours to handle
                await message.ack()
                metrics.EVENTS_CONSUMED.labels(
                    self.bus.settings.service_name, self.queue_name, kind, "other-version"
                ).inc()
                return
            data: BaseModel = typed_data(event)
        except EventRejected as exc:
            await self._dead(message, f"rejected: {exc}", kind)
            return
        # Taken before anything suspends, so messages of one stream get their turns in arrival order.
        turn = self._turns.of(self.in_order(event)) if self.in_order is not None else contextlib.nullcontext()
        async with turn:
            await self._attempt(message, event, data, arrival)

    async def _attempt(
        self, message: AbstractIncomingMessage, event: CloudEvent, data: BaseModel, arrival: int
    ) -> None:
        """Handle until acked, retried (nack) or dead-lettered; an outage is waited out in place."""
        s = self.bus.settings
        hold_until = time.monotonic() + s.transient_hold_seconds
        pause = max(s.retry_delay_seconds, 0.05)
        while True:
            try:
                outcome = await self._handle(message, event, data, arrival)
            except EventRejected as exc:
                await self._dead(message, f"rejected: {exc}", event.type)
                return
            except Exception as exc:
                if is_transient(exc) and time.monotonic() + pause < hold_until:
                    # The database (or broker) is away: not this message's fault, so it
                    # must not use up its attempts and end as a dead letter during an
                    # outage. Hold it unacknowledged and try again in place.
                    log.warning(
                        "infrastructure unavailable, holding the message",
                        extra={"queue": self.queue_name, "error": f"{type(exc).__name__}: {exc}"[:300]},
                    )
                    metrics.EVENTS_CONSUMED.labels(s.service_name, self.queue_name, event.type, "held").inc()
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 5.0)
                    continue
                await self._retry_or_dead(message, exc, event.type)
                return
            await message.ack()
            metrics.EVENTS_CONSUMED.labels(s.service_name, self.queue_name, event.type, outcome).inc()
            return

    async def _handle(self, message: AbstractIncomingMessage, event: CloudEvent, data: BaseModel, arrival: int) -> str:
        """Apply one event once: the takeover check, the stale check, the handlers, the echo."""
        service = self.bus.settings.service_name
        queue = self.queue_name
        if self.takeover is not None:
            channel = _channel_of(message)
            if not self._hold_known(channel):
                await self._hold.run(arrival, functools.partial(self._check_hold, channel))
        if self.seen is not None and not await self.seen.claim(self.name, event):
            return "stale"
        started = time.perf_counter()
        token_c = context.correlation_id.set(event.correlationid or event.id)
        token_k = context.causation_id.set(event.id)
        applied = False
        try:
            for handler in self.router.handlers_for(event.type):
                await handler(event, data)
            if self.echo is not None:  # before the mark: a failed echo is retried with the event
                await self.bus.fanout(self.echo, message.body, type=message.type)
            applied = True
        finally:
            context.correlation_id.reset(token_c)
            context.causation_id.reset(token_k)
            if self.seen is not None:
                with contextlib.suppress(Exception):  # an unreleased claim expires by itself
                    await self.seen.finish(self.name, event, applied=applied)
        metrics.EVENT_HANDLING.labels(service, queue).observe(time.perf_counter() - started)
        metrics.EVENT_LAG.labels(service, queue).observe(max(0.0, (datetime.now(UTC) - event.time).total_seconds()))
        return "ok"

    def holds(self) -> bool:
        """This replica handles its single-active queue now, on an open channel, state reloaded.

        False while it is not known (before the first message, or once the channel closed):
        a caller relying on state the queue's events keep current must read it instead."""
        channel = self._checked_on
        return self._hold_known(channel) and not getattr(channel, "is_closed", True)

    def _hold_known(self, channel: object | None) -> bool:
        """A check ran for this open channel and left nothing owed: the hold is unbroken since."""
        return channel is not None and channel is self._checked_on and not self._reload_owed

    async def _check_hold(self, channel: object | None) -> None:
        assert self.takeover is not None
        if self._hold_known(channel):
            return  # a check for this channel ran while this one waited its turn
        # The holder record says this replica from the claim on, so a reload that fails is owed
        # until one succeeds: the next claim alone would not ask for it again.
        if await self.takeover.claim() or self._reload_owed:
            self._reload_owed = True
            if self.on_takeover is not None:
                await self.on_takeover()
            self._reload_owed = False
        self._checked_on = channel

    async def _retry_or_dead(self, message: AbstractIncomingMessage, exc: Exception, kind: str) -> None:
        s = self.bus.settings
        attempts = int(str((message.headers or {}).get("x-delivery-count", 0) or 0)) + 1
        reason = f"{type(exc).__name__}: {exc}"
        if attempts >= s.delivery_limit:
            log.error("handler failed for the last time", extra={"queue": self.queue_name, "error": reason})
            await self._dead(message, f"failed {attempts} times: {reason}", kind)
            return
        log.warning(
            "handler failed, will retry", extra={"queue": self.queue_name, "attempt": attempts, "error": reason}
        )
        metrics.EVENTS_CONSUMED.labels(s.service_name, self.queue_name, kind, "retried").inc()
        await asyncio.sleep(min(s.retry_delay_seconds * 2 ** (attempts - 1), 30.0))
        await message.nack(requeue=True)

    async def _dead(self, message: AbstractIncomingMessage, reason: str, kind: str) -> None:
        try:
            await self.bus.publish_dead(self.queue_name, message, reason)
        except Exception as exc:  # keep the message: it goes back to the queue
            log.error("could not dead-letter, requeueing", extra={"error": str(exc)})
            await asyncio.sleep(1)
            await message.nack(requeue=True)
            return
        await message.ack()
        metrics.EVENTS_CONSUMED.labels(self.bus.settings.service_name, self.queue_name, kind, "dead").inc()


class ReplicaQueue:
    """One replica's own queue (classic, exclusive, auto-delete) that keeps its memory current.

    Not a work queue: nothing is lost if it goes away (the durable queues
    keep their events and the database is the truth), so a failed message or
    a reconnect (what was published meanwhile never reached the queue)
    triggers ``reload`` instead of retries or dead-lettering. ``Runtime``
    binds it before the model loads, so nothing written in between is missed.
    """

    def __init__(self, bus: Bus, name: str, reload: Callable[[], Awaitable[Any]]) -> None:
        self.bus = bus
        self.name = name
        self.reload = reload
        self.bound = asyncio.Event()
        self.loaded = False  # the model was loaded (set by the runtime); a later bind reloads it
        self._channel: AbstractChannel | None = None
        self._reloading: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._bind_forever(), name=f"bind-{self.name}")

    async def _bind_forever(self) -> None:
        while True:
            try:
                await self._bind()
                break
            except Exception as exc:
                log.warning("replica queue not bound, retrying", extra={"queue": self.name, "error": str(exc)})
                await asyncio.sleep(1)
        if self.loaded:  # loaded while the broker was away: what was missed meanwhile is in the database
            await self._reload()

    async def _bind(self) -> None:
        await self.bus.wait_connected()
        assert self.bus.connection is not None
        self._channel = await self.bus.connection.channel()
        await self._channel.set_qos(prefetch_count=256)
        queue = await self._channel.declare_queue(self.name, exclusive=True, auto_delete=True, durable=False)
        await self._bindings(self._channel, queue)
        await queue.consume(self._on_message)
        self.bus.connection.reconnect_callbacks.add(self._on_reconnect)
        self.bound.set()

    async def _bindings(self, channel: AbstractChannel, queue: AbstractQueue) -> None:
        raise NotImplementedError

    async def _handle(self, body: bytes) -> None:
        raise NotImplementedError

    def _on_reconnect(self, *_: Any) -> None:
        self.schedule_reload()

    def schedule_reload(self) -> None:
        if self._reloading is None or self._reloading.done():
            self._reloading = asyncio.create_task(self._reload(), name=f"reload-{self.name}")

    async def _reload(self) -> None:
        while True:
            try:
                await self.reload()
                return
            except Exception as exc:
                log.warning("reload failed, retrying", extra={"queue": self.name, "error": str(exc)})
                await asyncio.sleep(1)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            await self._handle(message.body)
        except Exception as exc:
            log.warning("replica queue message failed, reloading", extra={"queue": self.name, "error": str(exc)})
            self.schedule_reload()
        with contextlib.suppress(Exception):  # closed while stopping: the queue goes with it
            await message.ack()

    async def stop(self) -> None:
        for task in (self._task, self._reloading):
            if task is not None:
                task.cancel()
        if self.bus.connection is not None:
            self.bus.connection.reconnect_callbacks.discard(self._on_reconnect)
        if self._channel is not None and not self._channel.is_closed:
            with contextlib.suppress(Exception):
                await self._channel.close()


class ViewFeed(ReplicaQueue):
    """Feeds one replica's in-memory read model with its own service's events.

    Every event the service emits (``patterns``), whichever replica wrote it,
    so any replica serves what any other committed within moments. Other
    services' events that one replica consumes from a competing or
    single-active queue (and projects) reach the others through ``echoes``:
    the consumer passes each event on after handling it, so a replica that
    binds, then loads the projection, misses none (one handled before the
    bind is in the load).
    """

    def __init__(
        self,
        bus: Bus,
        name: str,
        patterns: list[str],
        apply: Callable[[CloudEvent], Awaitable[None]],
        reload: Callable[[], Awaitable[Any]],
        echoes: list[str] | None = None,
    ) -> None:
        super().__init__(bus, name, reload)
        self.patterns = patterns
        self.apply = apply
        self.echoes = echoes or []  # fanout exchanges of consumers' handled events

    async def _bindings(self, channel: AbstractChannel, queue: AbstractQueue) -> None:
        for pattern in self.patterns:
            await queue.bind(self.bus.exchange_name, routing_key=pattern)
        for echo in self.echoes:
            await queue.bind(await channel.declare_exchange(echo, aio_pika.ExchangeType.FANOUT, durable=True))

    async def _handle(self, body: bytes) -> None:
        event = parse(body)
        if is_current(event):  # the copy in another dataversion is not this code's
            await self.apply(event)


class Signals(ReplicaQueue):
    """Small JSON notices to every replica of a service, for state that emits no domain event.

    Each replica binds its own queue to the fanout exchange ``<exchange>.<name>``;
    ``send`` reaches all of them (the sender too). Like a view, nothing rests
    on a notice arriving: a rebind or reconnect reloads.
    """

    def __init__(
        self,
        bus: Bus,
        name: str,
        exchange: str,
        apply: Callable[[dict[str, Any]], Awaitable[None]],
        reload: Callable[[], Awaitable[Any]],
    ) -> None:
        super().__init__(bus, name, reload)
        self.exchange = exchange
        self.apply = apply
        self._sending: set[asyncio.Task[Any]] = set()

    async def _bindings(self, channel: AbstractChannel, queue: AbstractQueue) -> None:
        await queue.bind(await channel.declare_exchange(self.exchange, aio_pika.ExchangeType.FANOUT, durable=True))

    async def _handle(self, body: bytes) -> None:
        await self.apply(json.loads(body))

    def send(self, notice: dict[str, Any]) -> None:
        """Send in the background, retried a while; receivers that miss it catch up on reconnect."""
        task = asyncio.create_task(self.send_now(notice), name=f"signal-{self.name}")
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def send_now(self, notice: dict[str, Any], attempts: int = 10) -> bool:
        body = json.dumps(notice).encode()
        for attempt in range(attempts):
            try:
                await self.bus.fanout(self.exchange, body)
                return True
            except Exception as exc:
                log.warning(
                    "signal not sent, retrying", extra={"signal": notice, "attempt": attempt + 1, "error": str(exc)}
                )
                await asyncio.sleep(min(0.2 * 2**attempt, 5.0))
        log.error("signal given up", extra={"signal": notice})
        return False

    async def stop(self) -> None:
        for task in self._sending:
            task.cancel()
        await super().stop()
