"""The importer's integration tests: the services as real processes on the session's servers."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterable
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

    def environment(self) -> dict[str, str]:
        """The importer CLI's environment for this stack (``ORGDIR_IMPORT_*``)."""
        s = self.settings
        return {"ORGDIR_IMPORT_ORGUNITS_URL": s.orgunits_url, "ORGDIR_IMPORT_REGISTRY_URL": s.registry_url,
                "ORGDIR_IMPORT_ACCESS_RIGHTS_URL": s.access_rights_url, "ORGDIR_IMPORT_TOKEN": s.token,
                "ORGDIR_IMPORT_CONCURRENCY": str(s.concurrency)}


@contextlib.asynccontextmanager
async def services(amqp_url: str, mongodb_url: str, names: Iterable[str] = SERVICES) -> AsyncIterator[Stack]:
    """The named services under uvicorn, on databases and an exchange of their own (a fresh namespace)."""
    ns = f"t{uuid.uuid4().hex[:8]}"
    async with contextlib.AsyncExitStack() as es:
        procs: dict[str, ServiceProcess] = {}
        for service in names:
            settings = settings_for(Settings, ns=ns, service=service, amqp_url=amqp_url, mongodb_url=mongodb_url,
                                    declare_topology=True)
            procs[service] = ServiceProcess(SERVICES[service], settings, env={"ORGDIR_RELAY_SWEEP_SECONDS": "1"})
            es.callback(procs[service].stop)
        await asyncio.gather(*(p.start() for p in procs.values()))
        unused = "http://127.0.0.1:9"  # a service not started: the importer must not need it
        yield Stack(
            ImportSettings(orgunits_url=procs["orgunits"].url, registry_url=procs["registry"].url,
                           access_rights_url=procs["access-rights"].url if "access-rights" in procs else unused,
                           token="dev-admin", concurrency=8, projection_wait_seconds=30),
            amqp_url,
            f"{ns}.events",
        )


@pytest.fixture(scope="module")
async def stack(amqp_url: str, mongodb_url: str) -> AsyncIterator[Stack]:
    """orgunits, registry, access-rights and notifier, on this module's own databases and exchange."""
    async with services(amqp_url, mongodb_url) as s:
        yield s
