"""Emits ``<aggregate>.effective`` when a future-dated slice becomes current.

Each aggregate document carries ``next_transition_at`` (the UTC instant its
next validity boundary begins locally). The scheduler finds documents whose
instant has passed and writes through the repository with the version guard:
with several replicas only one write wins, so the event fires once; after a
restart the stored instant is still there, so nothing is missed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import date, datetime

from orgdir.clock import Clock, start_of_day
from orgdir.store import Change, Doc, Repository, StaleVersion
from orgdir.validity import SliceBase, next_boundary

log = logging.getLogger(__name__)


def next_transition_at(
    timeline: Iterable[SliceBase], today: date, timezone: str = "Europe/Copenhagen"
) -> datetime | None:
    day = next_boundary(list(timeline), today)
    return start_of_day(day, timezone) if day else None


class EffectiveScheduler:
    def __init__(
        self,
        repo: Repository,
        aggregate: str,
        timeline_of: Callable[[dict[str, object]], list[SliceBase]],
        clock: Clock,
        timezone: str = "Europe/Copenhagen",
    ) -> None:
        self.repo = repo
        self.aggregate = aggregate
        self.timeline_of = timeline_of
        self.clock = clock
        self.timezone = timezone

    async def run_due(self) -> int:
        """Fire every transition that is due now; returns how many events were emitted."""
        fired = 0
        now = self.clock.now()
        today = self.clock.today()
        for doc in await self.repo.due(now):
            try:
                new = await self.repo.update(doc["_id"], doc["version"], self._change(doc, today))
            except StaleVersion:
                log.info("transition taken by another writer", extra={"doc": doc["_id"]})
                continue
            self.fired(new)
            fired += 1
        return fired

    def fired(self, doc: Doc) -> None:
        """Called with the written document; a service refreshes its in-memory views here."""

    def _change(self, doc: Doc, today: date) -> Change:
        timeline = self.timeline_of(doc["state"])
        return Change(
            state=doc["state"],
            event_type=f"{self.aggregate}.effective",
            next_transition_at=next_transition_at(timeline, today, self.timezone),
            note=f"effective {today.isoformat()}",
        )
