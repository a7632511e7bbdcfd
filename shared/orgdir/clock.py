"""An injectable clock, so tests move time instead of sleeping."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo


class Clock(Protocol):
    def now(self) -> datetime: ...

    def today(self) -> date: ...


class SystemClock:
    """Wall-clock time; 'today' is the local date of the configured zone."""

    def __init__(self, timezone: str = "Europe/Copenhagen") -> None:
        self.zone = ZoneInfo(timezone)

    def now(self) -> datetime:
        return datetime.now(UTC)

    def today(self) -> date:
        return self.now().astimezone(self.zone).date()


class ManualClock(SystemClock):
    """A clock that stands still until told to move."""

    def __init__(self, start: datetime | None = None, timezone: str = "Europe/Copenhagen") -> None:
        super().__init__(timezone)
        self._now = start or datetime.now(UTC)

    def now(self) -> datetime:
        return self._now

    def set(self, when: datetime) -> None:
        self._now = when

    def advance(self, delta: timedelta) -> None:
        self._now += delta

    def set_day(self, day: date) -> None:
        """Jump to just after local midnight of ``day``."""
        self._now = datetime(day.year, day.month, day.day, 0, 0, 1, tzinfo=self.zone).astimezone(UTC)


def start_of_day(day: date, timezone: str = "Europe/Copenhagen") -> datetime:
    """The UTC instant at which ``day`` begins locally: when a slice takes effect."""
    return datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(timezone)).astimezone(UTC)
