"""The access-rights app: ``uvicorn --factory access_rights.app:create_app``.

Any number of replicas: see ``service`` for how they share decisions and keep
their read models current.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime

from fastapi import FastAPI

from access_rights import api, consumers
from access_rights.service import AccessService
from access_rights.settings import AccessRightsSettings
from orgdir import metrics
from orgdir.clock import Clock
from orgdir.events import CloudEvent
from orgdir.http import create_app as create_base_app
from orgdir.service import Runtime, configure_logging


def observe_revocations(runtime: Runtime) -> None:
    """Measure revocation latency at publication: the relay publishes through this wrapper."""
    publish = runtime.bus.publish

    async def publishing(event: CloudEvent) -> None:
        await publish(event)
        if event.type == "access.revoked" and event.data.get("effective_at"):
            since = datetime.fromisoformat(event.data["effective_at"])
            metrics.REVOCATION_LATENCY.observe(max(0.0, (runtime.clock.now() - since).total_seconds()))

    runtime.bus.publish = publishing  # type: ignore[method-assign]


def create_app(settings: AccessRightsSettings | None = None, clock: Clock | None = None) -> FastAPI:
    settings = settings or AccessRightsSettings()
    configure_logging(settings)
    runtime = Runtime(settings, clock)
    service = AccessService(runtime, settings, runtime.clock)  # declares indexes, view, section, loader
    # Single-active with takeover: one replica at a time applies org events.
    org = runtime.consume(consumers.routes, service, on_takeover=service.taken_over)
    runtime.every(settings.scheduler_interval_seconds, service.tick)
    observe_revocations(runtime)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.access = service
        async with runtime.lifespan(app):
            try:
                yield
            finally:
                # Stop taking org events, then let what is queued finish inside the section,
                # so another replica takes the queue over without waiting for a lease to expire.
                with contextlib.suppress(Exception):
                    await org.stop()
                await service.drain()

    app = create_base_app(settings.service_name, title="Orgdir access rights", ready=runtime.ready, lifespan=lifespan)
    app.include_router(api.router)
    return app
