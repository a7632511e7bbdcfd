"""Fixtures for access-rights tests: the app on real servers and a feed of org events.

The orgunits and registry services are stood in for by publishing their
contract events ourselves, exactly as they would put them on the exchange.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import pytest

from access_rights.app import create_app
from access_rights.settings import AccessRightsSettings
from orgdir.bus import Bus
from orgdir.clock import ManualClock
from orgdir.events import CloudEvent, new_event
from orgdir.validity import Validity
from orgdir_tools.testkit import EventCollector, RunningApp, settings_for

START = date(2025, 3, 3)


def v(start: str | date, end: str | date | None = None) -> dict[str, Any]:
    return {"from": str(start), "to": str(end) if end else None}


class OrgFeed:
    """Publishes orgunits/registry events with full state and increasing sequences."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.states: dict[str, dict[str, Any]] = {}
        self.published: list[CloudEvent] = []
        self.kinds: dict[str, str] = {}

    async def _emit(self, service: str, kind: str, verb: str, uid: str, state: dict[str, Any]) -> None:
        version = self.states.get(uid, {}).get("version", 0) + 1
        body = {**state, "uuid": uid, "version": version}
        self.states[uid] = body
        self.kinds[uid] = kind
        event = new_event(service=service, type=f"{kind}.{verb}", subject=uid, sequence=version, data=body)
        self.published.append(event)
        await self.bus.publish(event)

    async def job_function(self, uid: str, name: str) -> None:
        await self._emit(
            "orgunits",
            "class",
            "created",
            uid,
            {
                "facet": "job_function",
                "facet_uuid": "f-job",
                "timeline": [{"validity": v("2000-01-01"), "user_key": name, "name": name}],
            },
        )

    async def kle_class(self, uid: str, number: str, title: str) -> None:
        await self._emit(
            "orgunits",
            "class",
            "created",
            uid,
            {
                "facet": "kle",
                "facet_uuid": "f-kle",
                "timeline": [{"validity": v("1900-01-01"), "user_key": number, "name": title}],
            },
        )

    async def unit(
        self,
        uid: str,
        name: str,
        parent: str | None,
        start: str = "2000-01-01",
        kle: list[dict[str, Any]] | None = None,
    ) -> None:
        await self._emit(
            "orgunits",
            "orgunit",
            "created",
            uid,
            {"timeline": [{"validity": v(start), "user_key": name, "name": name, "parent": parent, "kle": kle or []}]},
        )

    async def set_kle(self, uid: str, kle: list[dict[str, Any]], start: date) -> None:
        """The unit's KLE numbers from ``start`` on (its last slice split there)."""
        timeline = self.states[uid]["timeline"]
        last = dict(timeline[-1])
        before = {**last, "validity": {**last["validity"], "to": str(start)}}
        after = {**last, "validity": {"from": str(start), "to": last["validity"]["to"]}, "kle": kle}
        await self._emit("orgunits", "orgunit", "updated", uid, {"timeline": [*timeline[:-1], before, after]})

    async def move(self, uid: str, parent: str, start: date) -> None:
        timeline = self.states[uid]["timeline"]
        last = dict(timeline[-1])
        before = {**last, "validity": {**last["validity"], "to": str(start)}}
        after = {
            **last,
            "validity": {"from": str(start), "to": last["validity"]["to"]},
            "parent": parent,
        }
        await self._emit("orgunits", "orgunit", "moved", uid, {"timeline": [*timeline[:-1], before, after]})

    async def person(self, uid: str, given: str, surname: str) -> None:
        await self._emit(
            "registry",
            "person",
            "created",
            uid,
            {"timeline": [{"validity": v("1970-01-01"), "given_name": given, "surname": surname}]},
        )

    async def engage(
        self,
        uid: str,
        person: str,
        unit: str,
        jf: str,
        start: str | date,
        end: str | date | None = None,
    ) -> None:
        await self._emit(
            "registry",
            "engagement",
            "created",
            uid,
            {
                "person": person,
                "unit": unit,
                "timeline": [
                    {
                        "validity": v(start, end),
                        "person": person,
                        "unit": unit,
                        "job_function": jf,
                        "engagement_type": "et",
                    }
                ],
            },
        )

    async def end(self, uid: str, end: date) -> None:
        state = self.states[uid]
        timeline = [dict(s) for s in state["timeline"]]
        timeline[-1]["validity"] = {**timeline[-1]["validity"], "to": str(end)}
        Validity.model_validate(timeline[-1]["validity"])
        await self._emit(
            "registry",
            "engagement",
            "terminated",
            uid,
            {"person": state["person"], "unit": state["unit"], "timeline": timeline},
        )


async def settled(running: RunningApp, feed: OrgFeed, wait_s: float = 20) -> None:
    """Wait until the consumer has handled everything the feed published (and outbox drained)."""
    seen = running.runtime.db["_seen"]
    deadline = time.monotonic() + wait_s
    while True:
        ok = True
        for uid, state in feed.states.items():
            doc = await seen.find_one({"_id": f"org:{feed.kinds[uid]}:{uid}"})
            if doc is None or doc["sequence"] < state["version"]:
                ok = False
                break
        if ok:
            break
        if time.monotonic() > deadline:
            raise AssertionError("consumer did not catch up")
        await asyncio.sleep(0.05)
    await running.settle()


class Env:
    def __init__(
        self,
        running: RunningApp,
        feed: OrgFeed,
        events: EventCollector,
        clock: ManualClock,
        settings: AccessRightsSettings,
    ) -> None:
        self.app, self.feed, self.events, self.clock, self.settings = (
            running,
            feed,
            events,
            clock,
            settings,
        )

    @property
    def http(self) -> Any:
        return self.app.http

    @property
    def service(self) -> Any:
        return self.app.app.state.access

    async def settled(self) -> None:
        await settled(self.app, self.feed)

    async def ok(self, method: str, url: str, status: int = 200, **kw: Any) -> Any:
        r = await self.http.request(method, url, **kw)
        assert r.status_code == status, r.text
        return r.json()


@pytest.fixture
async def env(ns: str, amqp_url: str, mongodb_url: str, request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    overrides = getattr(request, "param", {}) or {}
    settings = settings_for(
        AccessRightsSettings,
        ns=ns,
        service="access-rights",
        amqp_url=amqp_url,
        mongodb_url=mongodb_url,
        **overrides,
    )
    clock = ManualClock()
    clock.set_day(START)
    async with EventCollector(amqp_url, settings.exchange) as events:
        bus = Bus(settings)
        await bus.connect()
        try:
            async with RunningApp(create_app(settings, clock)) as running:
                yield Env(running, OrgFeed(bus), events, clock, settings)
        finally:
            await bus.close()


@dataclass
class Pair:
    """Two replicas of the app on one database and one broker; A started first (it gets the org queue)."""

    a: RunningApp
    b: RunningApp
    feed: OrgFeed
    events: EventCollector
    clock: ManualClock
    settings: AccessRightsSettings
    stack: contextlib.AsyncExitStack  # A's: ``await pair.stack.aclose()`` stops replica A

    async def settled(self, running: RunningApp, wait_s: float = 20) -> None:
        await settled(running, self.feed, wait_s)


@pytest.fixture
async def pair(ns: str, amqp_url: str, mongodb_url: str, request: pytest.FixtureRequest) -> AsyncIterator[Pair]:
    overrides = getattr(request, "param", {}) or {}
    settings = settings_for(
        AccessRightsSettings, ns=ns, service="access-rights", amqp_url=amqp_url, mongodb_url=mongodb_url, **overrides
    )
    clock = ManualClock()
    clock.set_day(START)
    async with EventCollector(amqp_url, settings.exchange) as events:
        bus = Bus(settings)
        await bus.connect()
        try:
            async with contextlib.AsyncExitStack() as stack_a:
                a = await stack_a.enter_async_context(RunningApp(create_app(settings, clock)))
                async with RunningApp(create_app(settings, clock)) as b:
                    yield Pair(a, b, OrgFeed(bus), events, clock, settings, stack_a)
        finally:
            await bus.close()
