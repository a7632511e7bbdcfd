"""The notifier app: ``uvicorn --factory notifier.app:create_app``. Any number of replicas."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

import orgdir.contracts  # noqa: F401 - registers the whole event catalogue
from notifier import consumers
from notifier.api import router
from notifier.service import Notifier
from notifier.settings import NotifierSettings
from orgdir.clock import Clock
from orgdir.http import create_app as base_app
from orgdir.service import Runtime, configure_logging


def create_app(settings: NotifierSettings | None = None, clock: Clock | None = None) -> FastAPI:
    settings = settings or NotifierSettings()
    configure_logging(settings)
    runtime = Runtime(settings, clock)
    svc = Notifier(runtime, settings, runtime.clock)  # declares indexes, registers its loader
    # Single-active with takeover: one replica handles the stream at a time and reloads before
    # its first message. Stale skipping is done by the service per (aggregate, subject).
    svc.events = runtime.consume(consumers.routes, svc, skip_stale=False, on_takeover=svc.load_for_takeover)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with runtime.lifespan(app):  # indexes, then svc.load, then relay and consumer
            try:
                yield
            finally:
                await svc.stop()  # consumer first, then workers (which hand back their leases)

    app = base_app(settings.service_name, ready=svc.ready, lifespan=lifespan)
    app.state.notifier = svc
    app.include_router(router)
    return app
