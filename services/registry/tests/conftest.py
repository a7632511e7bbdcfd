"""Fixtures of the registry tests (helpers live in orgdir_tools.registry_support)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from orgdir.clock import ManualClock
from orgdir.settings import Settings
from orgdir_tools.registry_support import TODAY, OrgFeed, World, registry_settings
from orgdir_tools.testkit import RunningApp, settings_for
from registry.app import create_app


@pytest.fixture
async def world(ns: str, amqp_url: str, mongodb_url: str) -> AsyncIterator[World]:
    settings = registry_settings(ns, amqp_url, mongodb_url)
    clock = ManualClock()
    clock.set_day(TODAY)
    feed_settings = settings_for(Settings, ns=ns, service="orgunits", amqp_url=amqp_url, mongodb_url=mongodb_url)
    async with RunningApp(create_app(settings, clock)) as app, OrgFeed(feed_settings) as feed:
        w = World(app, clock, feed, settings)
        await w.seed()
        yield w
