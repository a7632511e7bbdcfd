"""Tells every notifier replica at once that a subscription changed.

Subscriptions are plain documents, not event-sourced aggregates: they emit
no domain event the platform's view feed could bind to (and an event type
outside the catalogue would be dead-lettered by every ``#`` consumer). So a
subscription write publishes a tiny signal (the subscription's id) to a
fanout exchange of notifier's own, ``<exchange>.notifier.subscriptions``;
each replica binds an exclusive auto-delete queue to it and re-reads that
subscription from the database. A replica that stops says so on the same
exchange, after it handed its pending deliveries back, so the others take
them at once instead of when the leases would have run out. Like the
platform's ``ViewFeed``, nothing
depends on the signal arriving: the database is the truth, and a (re)bind or
a broker reconnect, after which signals may have been missed, reloads all
subscriptions (they are few).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage

from orgdir.bus import Bus

log = logging.getLogger(__name__)


class SubscriptionFeed:
    def __init__(
        self,
        bus: Bus,
        queue: str,
        apply: Callable[[str], Awaitable[None]],
        reload: Callable[[], Awaitable[Any]],
        released: Callable[[str], None],
    ) -> None:
        self.bus = bus
        self.exchange_name = f"{bus.exchange_name}.notifier.subscriptions"
        self.queue = queue
        self.apply = apply
        self.reload = reload
        self.released = released
        self.bound = asyncio.Event()
        self.loaded = False  # set once the subscriptions were loaded; a later bind reloads them
        self._channel: AbstractChannel | None = None
        self._publisher: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._task: asyncio.Task[None] | None = None
        self._reloading: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._bind_forever(), name="bind-subscriptions")

    async def _bind_forever(self) -> None:
        while True:
            try:
                await self._bind()
                break
            except Exception as exc:
                log.warning("subscription feed not bound, retrying", extra={"error": str(exc)})
                await asyncio.sleep(1)
        if self.loaded:  # loaded while the broker was away: signals sent meanwhile never came
            await self._reload()

    async def _bind(self) -> None:
        await self.bus.wait_connected()
        connection = self.bus.connection
        assert connection is not None
        self._channel = await connection.channel()
        exchange = await self._channel.declare_exchange(
            self.exchange_name, aio_pika.ExchangeType.FANOUT, durable=True
        )
        queue = await self._channel.declare_queue(
            self.queue, exclusive=True, auto_delete=True, durable=False
        )
        await queue.bind(exchange)
        await queue.consume(self._on_message)
        self._publisher = await connection.channel(publisher_confirms=True)
        self._exchange = await self._publisher.declare_exchange(
            self.exchange_name, aio_pika.ExchangeType.FANOUT, durable=True
        )
        connection.reconnect_callbacks.add(self._on_reconnect)
        self.bound.set()

    def _on_reconnect(self, *_: Any) -> None:
        self.schedule_reload()

    def schedule_reload(self) -> None:
        if self._reloading is None or self._reloading.done():
            self._reloading = asyncio.create_task(self._reload(), name="reload-subscriptions")

    async def _reload(self) -> None:
        while True:
            try:
                await self.reload()
                return
            except Exception as exc:
                log.warning("subscription reload failed, retrying", extra={"error": str(exc)})
                await asyncio.sleep(1)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            body = json.loads(message.body)
            if "released" in body:
                self.released(str(body["released"]))
            else:
                await self.apply(str(body["subscription"]))
        except Exception as exc:
            log.warning("subscription signal failed, reloading", extra={"error": str(exc)})
            self.schedule_reload()
        await message.ack()

    def signal(self, sid: str) -> None:
        """Tell every replica (this one included) that ``sid`` changed; retried in the background."""
        task = asyncio.create_task(self._send({"subscription": sid}), name=f"signal-{sid}")
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def signal_released(self, replica: str) -> None:
        """Tell the other replicas this one handed its deliveries back (best effort, bounded)."""
        try:
            await asyncio.wait_for(self._send({"released": replica}, attempts=2), 5)
        except TimeoutError:
            log.warning("release signal not sent; the leases run out instead")

    async def _send(self, message: dict[str, str], attempts: int = 10) -> None:
        body = json.dumps(message).encode()
        for attempt in range(attempts):
            try:
                if self._exchange is None:
                    raise ConnectionError("subscription feed not bound")
                await self._exchange.publish(aio_pika.Message(body), routing_key="", timeout=10)
                return
            except Exception as exc:
                log.warning(
                    "notifier signal not sent, retrying",
                    extra={"signal": message, "attempt": attempt + 1, "error": str(exc)},
                )
                await asyncio.sleep(min(0.2 * 2**attempt, 5.0))
        # Other replicas catch up when their broker connection comes back (reload on reconnect).
        log.error("notifier signal given up", extra={"signal": message})

    async def stop(self) -> None:
        for task in (self._task, self._reloading, *self._sending):
            if task is not None:
                task.cancel()
        if self.bus.connection is not None:
            self.bus.connection.reconnect_callbacks.discard(self._on_reconnect)
        for channel in (self._channel, self._publisher):
            if channel is not None and not channel.is_closed:
                try:
                    await channel.close()
                except Exception as exc:
                    log.debug("closing a feed channel failed", extra={"error": str(exc)})
