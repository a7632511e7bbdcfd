"""What {{name}} knows, and where your integration does its work.

Each event carries its aggregate's full state, so a handler never calls Orgdir
back: it stores what it needs, applied only when its ``sequence`` is newer
than what it holds for that subject (redelivery, a refresh or a republish
then change nothing). Replace the ``TODO`` lines with calls to your system.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from orgdir.contracts.access import AccessChange, RightsState
from orgdir.contracts.operations import RefreshCompleted
from orgdir.contracts.registry import PersonState
from orgdir.events import CloudEvent
from orgdir.service import Runtime

log = logging.getLogger(__name__)


class Directory:
    """Persons and their rights in this consumer's own MongoDB collections (any number of replicas)."""

    def __init__(self, runtime: Runtime) -> None:
        self.persons = runtime.projection("persons")
        self.rights = runtime.projection("rights")
        self.refreshes = runtime.db["refreshes"]

    async def person(self, event: CloudEvent, data: PersonState) -> None:
        body = {"type": event.type, "state": data.model_dump(mode="json"), "applied_at": datetime.now(UTC)}
        if await self.persons.apply(event.subject, event.sequence, body):
            pass  # TODO: create or update the user in your system from data.timeline

    async def access(self, event: CloudEvent, data: AccessChange | RightsState) -> None:
        """``access.granted`` / ``access.revoked`` / ``access.current`` all carry the person's whole set."""
        rights = [r.model_dump(mode="json") for r in data.rights]
        body = {"type": event.type, "person": data.person, "rights": rights, "applied_at": datetime.now(UTC)}
        if await self.rights.apply(event.subject, event.sequence, body):
            pass  # TODO: bring the person's roles in your system in line with ``rights``

    async def refreshed(self, event: CloudEvent, data: RefreshCompleted) -> None:
        """The end of a refresh of this queue: everything the service held was sent before it."""
        log.info("refresh completed", extra={"service": data.service, "count": data.count})
        await self.refreshes.update_one(
            {"_id": data.refresh_id},
            {"$set": {"service": data.service, "count": data.count, "received_at": datetime.now(UTC)}},
            upsert=True,
        )
