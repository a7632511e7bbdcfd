"""The portal app: ``uvicorn --factory portal.app:create_app`` (port 8100 locally). Any number of replicas.

Stateless like the services: the session is a sealed cookie (the same secret on every replica), and
every page is read from the APIs when it is asked for.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from orgdir.http import observe_requests
from orgdir.service import configure_logging
from portal import api
from portal.clients import Clients
from portal.oidc import Oidc
from portal.session import SealedSessionMiddleware
from portal.settings import PortalSettings

STATIC = Path(__file__).parent / "static"
SESSION_COOKIE = "orgdir_portal"


def create_app(settings: PortalSettings | None = None) -> FastAPI:
    settings = settings or PortalSettings()
    configure_logging(settings)
    clients = Clients(settings)
    issuer_http = httpx.AsyncClient(timeout=settings.api_timeout_seconds)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.check_startup()  # at start, like the services: an unconfigured portal does not serve
        try:
            yield
        finally:
            await clients.close()
            await issuer_http.aclose()

    app = FastAPI(title="Orgdir portal", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.clients = clients
    app.state.oidc = Oidc(settings, issuer_http) if settings.auth_mode == "oidc" else None
    app.add_middleware(
        SealedSessionMiddleware,
        secret=settings.session_secret,
        cookie=SESSION_COOKIE,
        max_age=settings.session_max_age_seconds,
        https_only=settings.session_https_only,
    )
    observe_requests(app, settings.service_name)
    api.install_errors(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(api.router)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        """Ready as soon as it serves: an API that is down is shown on the page that needs it, so the
        portal stays reachable to say so."""
        return JSONResponse({"status": "ready", "apis": await clients.ready()})

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
