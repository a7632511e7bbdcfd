"""The consumer queues of Orgdir's own services, declared by whichever service starts first.

Events are routed only to queues that exist when they are published. Were
each service to declare just its own queues, the first start of a fresh
installation would send orgunits' seeded vocabulary to the unrouted queue
before registry had declared its queue. Every service therefore declares the
whole table (``orgdir.queues``, generated from every service's
``consumers.QUEUES``) at connect time; each consumer re-declares and binds its own
queue as usual (same arguments, so it is idempotent). Vendors' consumers
declare their own queues, and can catch up with ``POST /api/v1/republish``.
"""

from __future__ import annotations

import contextlib
import logging

from aio_pika.abc import AbstractRobustConnection

from orgdir.queues import CONSUMER_QUEUES, SINGLE_ACTIVE
from orgdir.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["CONSUMER_QUEUES", "SINGLE_ACTIVE", "declare_all"]


async def declare_all(connection: AbstractRobustConnection, settings: Settings) -> None:
    """Declare every known consumer queue that does not exist yet (never fails a start)."""
    from orgdir.bus import declare_consumer_queue

    for name, patterns in CONSUMER_QUEUES.items():
        queue = f"{settings.queue_prefix}{name}"
        channel = await connection.channel()
        try:
            await declare_consumer_queue(
                channel,
                settings.exchange,
                queue,
                patterns,
                settings.delivery_limit,
                single_active=name in SINGLE_ACTIVE,
            )
        except Exception as exc:  # e.g. declared elsewhere with other arguments
            log.warning("could not declare consumer queue", extra={"queue": queue, "error": str(exc)})
        finally:
            with contextlib.suppress(Exception):
                await channel.close()
