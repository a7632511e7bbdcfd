"""The importer's integration tests: the four services as real processes on the session's servers."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from importer.settings import ImportSettings
from orgdir.settings import Settings
from orgdir_tools.testkit import ServiceProcess, settings_for

SERVICES = {"orgunits": "orgunits", "registry": "registry", "access-rights": "access_rights", "notifier": "notifier"}


@dataclass
class Stack:
    settings: ImportSettings
    amqp_url: str
    exchange: str


@pytest.fixture(scope="module")
async def stack(amqp_url: str, mongodb_url: str) -> AsyncIterator[Stack]:
    """orgunits, registry, access-rights and notifier under uvicorn, on this module's own databases and exchange."""
    ns = f"t{uuid.uuid4().hex[:8]}"
    async with contextlib.AsyncExitStack() as es:
        procs: dict[str, ServiceProcess] = {}
        for service, package in SERVICES.items():
            settings = settings_for(Settings, ns=ns, service=service, amqp_url=amqp_url, mongodb_url=mongodb_url,
                                    declare_topology=True)
            procs[service] = ServiceProcess(package, settings, env={"ORGDIR_RELAY_SWEEP_SECONDS": "1"})
            es.callback(procs[service].stop)
        await asyncio.gather(*(p.start() for p in procs.values()))
        yield Stack(
            ImportSettings(orgunits_url=procs["orgunits"].url, registry_url=procs["registry"].url,
                           token="dev-admin", concurrency=8, projection_wait_seconds=30),
            amqp_url,
            f"{ns}.events",
        )
