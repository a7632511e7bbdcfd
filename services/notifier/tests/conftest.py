"""Fixtures for notifier tests: a signature-checking webhook receiver, scim2-server, a publisher."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from notifier.settings import NotifierSettings
from orgdir.bus import Bus
from orgdir.events import CloudEvent, new_event
from orgdir_tools.testkit import settings_for
from orgdir_tools.testpeers import Receiver, ScimServer


@pytest.fixture
def receiver() -> Iterator[Callable[[str], Receiver]]:
    made: list[Receiver] = []

    def make(secret: str) -> Receiver:
        r = Receiver(secret)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


@pytest.fixture
def scim_server() -> Iterator[ScimServer]:
    server = ScimServer("scim-" + secrets.token_hex(8))
    yield server
    server.stop()


@pytest.fixture
def make_settings(ns: str, amqp_url: str, mongodb_url: str) -> Callable[..., NotifierSettings]:
    def make(**overrides: Any) -> NotifierSettings:
        values: dict[str, Any] = {
            "backoff_base_seconds": 0.05,
            "backoff_max_seconds": 0.3,
            "circuit_failures": 5,
            "circuit_cooldown_seconds": 0.3,
            "delivery_timeout_seconds": 2.0,
        }
        values.update(overrides)
        return settings_for(
            NotifierSettings,
            ns=ns,
            service="notifier",
            amqp_url=amqp_url,
            mongodb_url=mongodb_url,
            **values,
        )

    return make


class Publisher:
    """Publishes contract-valid events straight to the test's exchange, as other services would."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.versions: dict[str, int] = {}

    async def publish(self, type: str, subject: str, data: dict[str, Any]) -> CloudEvent:
        key = f"{type.split('.')[0]}:{subject}"
        version = self.versions.get(key, 0) + 1
        self.versions[key] = version
        event = new_event(
            service="test",
            type=type,
            subject=subject,
            sequence=version,
            data={"uuid": subject, "version": version, **data},
        )
        await self.bus.publish(event)
        return event


@pytest.fixture
async def publisher(make_settings: Callable[..., NotifierSettings]) -> AsyncIterator[Publisher]:
    bus = Bus(make_settings())
    await bus.connect()
    yield Publisher(bus)
    await bus.close()
