"""The notifier app: ``uvicorn --factory notifier.app:create_app``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

import orgdir.contracts  # noqa: F401 - registers the whole event catalogue
from notifier.api import router
from notifier.consumers import CONSUMER, Core, build_router
from notifier.settings import NotifierSettings
from orgdir.bus import Consumer
from orgdir.clock import Clock
from orgdir.http import create_app as base_app
from orgdir.service import Runtime, configure_logging


def create_app(settings: NotifierSettings | None = None, clock: Clock | None = None) -> FastAPI:
    settings = settings or NotifierSettings()
    configure_logging(settings)
    runtime = Runtime(settings, clock)
    core = Core(runtime, settings, runtime.clock)
    # Stale skipping is done by Core per (aggregate, subject), not by the platform's store.
    runtime.consumers.append(Consumer(runtime.bus, CONSUMER, build_router(core), None))
    runtime.every(settings.subscription_reload_seconds, core.reload)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await core.load()  # projections, seen streams and subscriptions before any event
        async with runtime.lifespan(app):
            await core.start()
            try:
                yield
            finally:
                await core.stop()

    app = base_app(settings.service_name, ready=runtime.ready, lifespan=lifespan)
    app.state.core = core
    app.include_router(router)
    return app
