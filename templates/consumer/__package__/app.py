"""The app: ``uvicorn --factory {{package}}.app:create_app``; /healthz, /readyz, /metrics included."""

from __future__ import annotations

from fastapi import FastAPI

import orgdir.contracts  # noqa: F401 - registers the event catalogue the consumer validates against
from orgdir.clock import Clock
from orgdir.http import create_app as base_app
from orgdir.service import Runtime, configure_logging
from {{package}} import consumers
from {{package}}.service import Directory
from {{package}}.settings import ConsumerSettings


def create_app(settings: ConsumerSettings | None = None, clock: Clock | None = None) -> FastAPI:
    settings = settings or ConsumerSettings()
    configure_logging(settings)
    runtime = Runtime(settings, clock)
    directory = Directory(runtime)
    # Competing consumers on one quorum queue: run as many replicas as you like.
    runtime.consume(consumers.routes, directory)
    app = base_app(settings.service_name, title="{{title}}", ready=runtime.ready, lifespan=runtime.lifespan)
    app.state.directory = directory
    return app
