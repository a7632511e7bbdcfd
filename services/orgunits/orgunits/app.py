"""The orgunits service: ``uvicorn --factory orgunits.app:create_app``."""

from __future__ import annotations

from fastapi import FastAPI

from orgdir.clock import Clock
from orgdir.http import create_app as create_base_app
from orgdir.service import Runtime, configure_logging
from orgunits import api
from orgunits.consumers import routes
from orgunits.service import OrgUnits
from orgunits.settings import OrgunitsSettings


def create_app(settings: OrgunitsSettings | None = None, clock: Clock | None = None) -> FastAPI:
    settings = settings or OrgunitsSettings()
    configure_logging(settings)
    runtime = Runtime(settings, clock)
    service = OrgUnits(runtime, settings)
    runtime.consume(routes, service)
    runtime.every(settings.scheduler_interval_seconds, service.tick)

    app = create_base_app(
        settings.service_name, title="Orgdir orgunits", ready=runtime.ready, lifespan=runtime.lifespan
    )
    app.state.orgunits = service
    app.include_router(api.router)
    return app
