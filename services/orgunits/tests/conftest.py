"""Fixtures of the orgunits tests: the service running in-process on the session's real servers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime

import pytest

from orgdir.clock import ManualClock
from orgdir_tools.testkit import EventCollector, RunningApp, settings_for
from orgunits.app import create_app
from orgunits.settings import OrgunitsSettings

TODAY = date(2026, 3, 2)


@pytest.fixture
def clock() -> ManualClock:
    c = ManualClock(datetime(2026, 3, 1, 12, tzinfo=UTC))
    c.set_day(TODAY)
    return c


@pytest.fixture
def settings(ns: str, amqp_url: str, mongodb_url: str) -> OrgunitsSettings:
    return settings_for(
        OrgunitsSettings, ns=ns, service="orgunits", amqp_url=amqp_url, mongodb_url=mongodb_url,
    )


@pytest.fixture
async def events(settings: OrgunitsSettings, amqp_url: str) -> AsyncIterator[EventCollector]:
    async with EventCollector(amqp_url, settings.exchange) as collector:
        yield collector


@pytest.fixture
async def svc(settings: OrgunitsSettings, clock: ManualClock, events: EventCollector) -> AsyncIterator[RunningApp]:
    async with RunningApp(create_app(settings, clock)) as app:
        yield app
