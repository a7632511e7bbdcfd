"""The FastAPI app every service starts from.

Problem JSON for every error (validation included), health endpoints,
``/metrics``, request metrics by route template, correlation ids, and the
query/header helpers the APIs share (``at``, cursor pages, ETag/If-Match).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any, Generic, TypeVar

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from pymongo.errors import ConnectionFailure, ServerSelectionTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from orgdir import context, metrics
from orgdir.auth import admin
from orgdir.problems import PROBLEM_MEDIA_TYPE, Problem, precondition_failed, unavailable
from orgdir.store import StaleVersion

log = logging.getLogger(__name__)

T = TypeVar("T")

ReadyCheck = Callable[[], Awaitable[dict[str, bool]]]


class Page(BaseModel, Generic[T]):
    """A cursor page: pass ``next_cursor`` back as ``cursor`` for the next one."""

    items: list[T]
    next_cursor: str | None = None


def problem_response(problem: Problem, request: Request) -> JSONResponse:
    headers = {"Retry-After": "5"} if problem.status == 503 else None
    return JSONResponse(
        problem.body(instance=request.url.path),
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def create_app(
    service: str,
    *,
    title: str | None = None,
    ready: ReadyCheck | None = None,
    lifespan: Any = None,
    version: str = "0.1.0",
) -> FastAPI:
    app = FastAPI(
        title=title or f"Orgdir {service}",
        version=version,
        lifespan=lifespan,
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
    )
    app.state.service = service
    _install_errors(app)
    _install_middleware(app, service)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        checks = await ready() if ready else {}
        ok = all(checks.values())
        metrics.READY.labels(service).set(1 if ok else 0)
        if ok:
            return JSONResponse({"status": "ready", "checks": checks})
        return JSONResponse(
            Problem(503, "not-ready", "Not ready", "A dependency does not answer.", checks=checks).body(),
            status_code=503,
            media_type=PROBLEM_MEDIA_TYPE,
        )

    @app.post("/api/v1/republish", tags=["operations"], dependencies=[Depends(admin)])
    async def republish(request: Request) -> dict[str, int]:
        """Publish the current state of every aggregate again (consumers skip what they hold)."""
        runtime = getattr(request.app.state, "runtime", None)
        if runtime is None:
            raise Problem(404, "not-found", "Nothing to republish")
        return {"published": await runtime.republish()}

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def on_problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "field": ".".join(str(p) for p in e["loc"] if p != "body") or "body",
                "location": str(e["loc"][0]) if e["loc"] else "body",
                "message": e["msg"],
                "code": e["type"],
            }
            for e in exc.errors()
        ]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        return problem_response(Problem(422, "validation-error", "Invalid request", detail, errors=errors), request)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        return problem_response(Problem(exc.status_code, kind, str(exc.detail), None), request)

    @app.exception_handler(StaleVersion)
    async def on_stale(request: Request, exc: StaleVersion) -> JSONResponse:
        if request.headers.get("if-match"):
            return problem_response(precondition_failed(exc.current, exc.expected), request)
        return problem_response(Problem(409, "conflict", "Conflict", str(exc), current_version=exc.current), request)

    @app.exception_handler(ConnectionFailure)
    async def on_db_down(request: Request, exc: ConnectionFailure) -> JSONResponse:
        log.error("database unavailable", extra={"error": str(exc)[:300]})
        return problem_response(unavailable("The database does not answer; try again shortly."), request)

    @app.exception_handler(ServerSelectionTimeoutError)
    async def on_db_timeout(request: Request, exc: ServerSelectionTimeoutError) -> JSONResponse:
        return await on_db_down(request, exc)

    @app.exception_handler(Exception)
    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return problem_response(
            Problem(500, "internal-error", "Internal server error", "An unexpected error occurred."), request
        )


def _route_template(request: Request) -> str:
    """The matched route's template (``/api/v1/persons/{uuid}``): bounded label values.

    Routing records the route in the scope; included routers are not in
    ``app.router.routes`` as plain routes, so matching them again here would miss.
    """
    route = request.scope.get("route")
    return str(getattr(route, "path", "unmatched"))


def _install_middleware(app: FastAPI, service: str) -> None:
    @app.middleware("http")
    async def observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        cid = request.headers.get("x-correlation-id") or str(uuid.uuid4())
        token = context.correlation_id.set(cid)
        token_c = context.causation_id.set(None)
        token_a = context.actor.set(None)
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            response.headers["x-correlation-id"] = cid
            return response
        finally:
            route = _route_template(request)
            if route not in ("/metrics", "/healthz"):
                elapsed = time.perf_counter() - started
                metrics.HTTP_REQUESTS.labels(service, request.method, route, str(status)).inc()
                metrics.HTTP_LATENCY.labels(service, request.method, route).observe(elapsed)
            context.correlation_id.reset(token)
            context.causation_id.reset(token_c)
            context.actor.reset(token_a)


def if_match(request: Request) -> int | None:
    """The version named by ``If-Match`` (``"3"``, ``W/"3"`` or ``3``)."""
    raw = request.headers.get("if-match")
    if raw is None or raw.strip() == "*":
        return None
    value = raw.strip().removeprefix("W/").strip('"')
    try:
        return int(value)
    except ValueError as exc:
        raise Problem(400, "invalid-if-match", "Invalid If-Match", 'If-Match must name a version, e.g. "3".') from exc


def set_etag(response: Response, version: int) -> None:
    response.headers["ETag"] = f'"{version}"'


def parse_day(value: str | None, default: date) -> date:
    if value is None:
        return default
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise Problem(400, "invalid-date", "Invalid date", f"{value!r} is not a date (YYYY-MM-DD).") from exc
