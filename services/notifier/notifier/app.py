"""The notifier app: ``uvicorn --factory notifier.app:create_app``. Any number of replicas."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

import orgdir.contracts  # noqa: F401 - registers the whole event catalogue
from notifier.api import router
from notifier.consumers import CONSUMER, Core, build_router
from notifier.settings import NotifierSettings
from orgdir.clock import Clock
from orgdir.http import create_app as base_app
from orgdir.service import Runtime, configure_logging


def create_app(settings: NotifierSettings | None = None, clock: Clock | None = None) -> FastAPI:
    settings = settings or NotifierSettings()
    configure_logging(settings)
    runtime = Runtime(settings, clock)
    core = Core(runtime, settings, runtime.clock)  # declares indexes, registers its loader
    # Single-active with takeover: one replica handles the stream at a time and reloads before
    # its first message. Stale skipping is done by Core per (aggregate, subject).
    runtime.consumer(CONSUMER, build_router(core), skip_stale=False, on_takeover=core.load_for_takeover)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with runtime.lifespan(app):  # indexes, then core.load, then relay and consumer
            try:
                yield
            finally:
                await core.stop()  # consumer first, then workers (which hand back their leases)

    app = base_app(settings.service_name, ready=core.ready, lifespan=lifespan)
    app.state.core = core
    app.include_router(router)
    return app
