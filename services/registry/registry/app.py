"""The registry app: ``uvicorn --factory registry.app:create_app``."""

from __future__ import annotations

from fastapi import FastAPI

from orgdir.clock import Clock
from orgdir.http import create_app as create_base_app
from orgdir.service import Runtime, configure_logging
from registry import consumers
from registry.api import router
from registry.service import Registry
from registry.settings import RegistrySettings


def create_app(settings: RegistrySettings | None = None, clock: Clock | None = None) -> FastAPI:
    settings = settings or RegistrySettings()
    configure_logging(settings)
    runtime = Runtime(settings, clock)
    registry = Registry(runtime, settings)  # declares its indexes, view feeds and loader
    runtime.consume(consumers.routes, registry)  # competing: newer sequence wins
    runtime.every(settings.scheduler_interval_seconds, registry.run_due)

    async def ready() -> dict[str, bool]:
        return {**await runtime.ready(), "loaded": registry.loaded}

    app = create_base_app(settings.service_name, title="Orgdir registry", ready=ready, lifespan=runtime.lifespan)
    app.state.registry = registry
    app.include_router(router)
    return app
