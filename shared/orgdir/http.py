"""The FastAPI app every service starts from.

Problem JSON for every error (validation included), health endpoints,
``/metrics``, request metrics by route template, correlation ids, and the
query/header helpers the APIs share (``at``, cursor pages, ETag/If-Match).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, TypeVar
from zoneinfo import ZoneInfo

import fastapi_offline
import pydantic_core
from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pymongo.errors import ConnectionFailure
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orgdir import context, metrics, problems
from orgdir.auth import Admin, admin
from orgdir.problems import PROBLEM_MEDIA_TYPE, precondition_failed, unavailable
from orgdir.refresh import RefreshIn, RefreshStatus
from orgdir.store import StaleVersion

log = logging.getLogger(__name__)

SCRAPE_COUNT_SECONDS = 2.0  # a scrape waits this long for the outbox recount, then shows the last one

T = TypeVar("T")

ReadyCheck = Callable[[], Awaitable[dict[str, bool]]]


class Page(BaseModel, Generic[T]):
    """A cursor page: pass ``next_cursor`` back as ``cursor`` for the next one."""

    items: list[T]
    next_cursor: str | None = None


def prebuilt(body: Any) -> Response:
    """JSON straight from pydantic-core's encoder, for a body built field by field to its route's
    ``response_model`` (which still documents it).

    FastAPI validates a returned dict against the model before encoding it: for a page of 1,000
    people that cost as much as building the rows. The route's tests check that such a body is
    exactly what the model makes of it (``orgdir_tools.testkit.as_documented``)."""
    return Response(pydantic_core.to_json(body), media_type="application/json")


# The one place a domain error becomes an HTTP status.
STATUS: dict[type[problems.Problem], int] = {
    problems.BadRequest: 400,
    problems.Unauthorized: 401,
    problems.Forbidden: 403,
    problems.NotFound: 404,
    problems.Conflict: 409,
    problems.VersionMismatch: 412,
    problems.Invalid: 422,
    problems.Failed: 500,
    problems.Unavailable: 503,
}


def status_of(problem: problems.Problem) -> int:
    for cls in type(problem).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


class Republished(BaseModel):
    published: int


class KeysRotated(BaseModel):
    key_id: str | None = Field(description="The key every sealed value is now under (null: nothing sealed here).")
    documents: int = Field(description="Documents rewritten.")
    values: int = Field(description="Sealed values re-encrypted.")


def problem_response(problem: problems.Problem, request: Request | None = None) -> JSONResponse:
    status = status_of(problem)
    return JSONResponse(
        problem.body(status, instance=request.url.path if request is not None else None),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers={"Retry-After": "5"} if status == 503 else None,
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
        docs_url=None,  # served by install_docs from local assets: no CDN, works without internet
        redoc_url=None,
    )
    install_docs(app)
    app.state.service = service
    app.openapi = lambda: complete_openapi(app)  # type: ignore[method-assign]
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
        runtime = getattr(app.state, "runtime", None)
        # An insecure mode (static tokens) is reported, not failed: the local stack must get ready.
        extra: dict[str, Any] = {}
        if runtime is not None and hasattr(runtime, "authenticator"):
            extra = {"auth_mode": runtime.settings.auth_mode, "warnings": runtime.authenticator.warnings}
        if ok:
            return JSONResponse({"status": "ready", "checks": checks, **extra})
        return problem_response(
            problems.Unavailable("not-ready", "Not ready", "A dependency does not answer.", checks=checks, **extra)
        )

    @app.post(
        "/api/v1/republish",
        tags=["operations"],
        dependencies=[Depends(admin)],
        response_model=Republished,
        responses=problem_responses(404),
    )
    async def republish(request: Request) -> Republished:
        """Publish the current state of every aggregate again (consumers skip what they hold)."""
        runtime = getattr(request.app.state, "runtime", None)
        if runtime is None:
            raise problems.NotFound("not-found", "Nothing to republish")
        return Republished(published=await runtime.republish())

    @app.post(
        "/api/v1/refresh",
        tags=["operations"],
        status_code=202,
        response_model=RefreshStatus,
        responses=problem_responses(404),
    )
    async def refresh(body: RefreshIn, request: Request, response: Response, principal: Admin) -> RefreshStatus:
        """Send the current state of every matching aggregate to one consumer queue only, then
        `refresh.completed`; 202 with `Location` of the job's status (404: no such queue)."""
        runtime = getattr(request.app.state, "runtime", None)
        if runtime is None:
            raise problems.NotFound("not-found", "Nothing to refresh")
        job: RefreshStatus = await runtime.refresher.submit(body, principal.subject)
        response.headers["Location"] = f"/api/v1/refresh/{job.id}"
        return job

    @app.get("/api/v1/refresh/{refresh_id}", tags=["operations"], response_model=RefreshStatus)
    async def refresh_status(refresh_id: str, request: Request, _: Admin) -> RefreshStatus:
        """A refresh job's state and progress (any replica answers)."""
        runtime = getattr(request.app.state, "runtime", None)
        if runtime is None:
            raise problems.not_found("refresh", refresh_id)
        status: RefreshStatus = await runtime.refresher.status(refresh_id)
        return status

    @app.post("/api/v1/rotate-keys", tags=["operations"], response_model=KeysRotated, responses=problem_responses(404))
    async def rotate_keys(request: Request, _: Admin) -> KeysRotated:
        """Re-encrypt every sealed value (documents and history) with the current key
        (``ORGDIR_ENCRYPTION_KEY_ID``); afterwards no document holds an older key id. Idempotent."""
        runtime = getattr(request.app.state, "runtime", None)
        if runtime is None:
            raise problems.NotFound("not-found", "Nothing to rotate")
        return KeysRotated(**await runtime.rotate_keys())

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint(request: Request) -> Response:
        runtime = getattr(request.app.state, "runtime", None)
        if runtime is not None:
            try:  # the outbox gauges as of this scrape; the database away keeps the last count
                await asyncio.wait_for(runtime.relay.count_backlog(), SCRAPE_COUNT_SECONDS)
            except Exception as exc:
                log.info("outbox backlog not recounted for this scrape", extra={"error": str(exc)})
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


def validation_problem(raw: Sequence[Any], location: str | None = None) -> problems.Invalid:
    """422 ``validation-error`` listing each field (pydantic's errors; ``location`` when they lack one)."""
    errors = [
        {
            "field": ".".join(str(p) for p in e["loc"] if p != "body") or "body",
            "location": location or (str(e["loc"][0]) if e["loc"] else "body"),
            "message": e["msg"],
            "code": e["type"],
        }
        for e in raw
    ]
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
    return problems.Invalid("validation-error", "Invalid request", detail, errors=errors)


def problem_of(exc: Exception, *, if_match: bool = False) -> problems.Problem:
    """The problem an exception answers with, for a request and for one operation of a batch alike.

    ``if_match``: the write named a version, so a lost compare-and-swap is 412, not 409.
    """
    if isinstance(exc, problems.Problem):
        return exc
    if isinstance(exc, RequestValidationError):
        return validation_problem(exc.errors())
    if isinstance(exc, ValidationError):  # a body validated by the service itself: its fields lack a location
        return validation_problem(exc.errors(), location="body")
    if isinstance(exc, StaleVersion):
        if if_match:
            return precondition_failed(exc.current, exc.expected)
        return problems.conflict(str(exc), current_version=exc.current)
    if isinstance(exc, ConnectionFailure):  # ServerSelectionTimeoutError included
        log.error("database unavailable", extra={"error": str(exc)[:300]})
        return unavailable("The database does not answer; try again shortly.")
    log.exception("unhandled error", exc_info=exc)
    return problems.Failed("internal-error", "Internal server error", "An unexpected error occurred.")


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not-found", 405: "method-not-allowed", 413: "payload-too-large"}.get(
            exc.status_code, "http-error"
        )
        body = problems.Problem(kind, str(exc.detail)).body(exc.status_code, instance=request.url.path)
        return JSONResponse(body, status_code=exc.status_code, media_type=PROBLEM_MEDIA_TYPE)

    async def on_exception(request: Request, exc: Exception) -> JSONResponse:
        return problem_response(problem_of(exc, if_match=bool(request.headers.get("if-match"))), request)

    for known in (problems.Problem, RequestValidationError, StaleVersion, ConnectionFailure, Exception):
        app.add_exception_handler(known, on_exception)


class BodyLimit:
    """413 problem JSON for a request body over ``settings.max_body_bytes`` (default 1 MiB).

    A declared ``Content-Length`` is refused before the app runs; a chunked
    body is counted as it is read and refused when it passes the limit.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings = getattr(getattr(scope["app"].state, "runtime", None), "settings", None) if "app" in scope else None
        limit: int = getattr(settings, "max_body_bytes", DEFAULT_MAX_BODY)
        detail = f"The request body is larger than {limit} bytes."
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            body = problems.Problem("payload-too-large", "Payload too large", detail).body(413, instance=scope["path"])
            await JSONResponse(body, status_code=413, media_type=PROBLEM_MEDIA_TYPE)(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise StarletteHTTPException(413, detail)
            return message

        await self.app(scope, counted, send)


DEFAULT_MAX_BODY = 1_048_576


DOCS_URL = "/api/v1/docs"
DOCS_ASSETS = "/api/v1/docs/assets"


def install_docs(app: FastAPI) -> None:
    """Swagger UI at ``/api/v1/docs`` with its script, styles and icon served by the service itself.

    FastAPI's default page loads them from a CDN and stays blank in a cluster without internet egress.
    The assets come from the ``fastapi-offline`` package (MIT; it ships swagger-ui-dist and tracks its
    releases), so an upgrade is a version bump, not copied files.
    """
    assets = Path(fastapi_offline.__file__).parent / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="docs-assets")
    redirect_url = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{redirect_url}",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
        )

    @app.get(redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()


def observe_requests(app: FastAPI, service: str) -> None:
    """Correlation ids, body limit and request metrics for an app not made by ``create_app`` (the portal)."""
    _install_middleware(app, service)


def _install_middleware(app: FastAPI, service: str) -> None:
    app.add_middleware(BodyLimit)
    app.add_middleware(Observe, service=service)


class Observe:
    """Correlation ids and request metrics, as plain ASGI.

    Starlette's ``@app.middleware("http")`` runs every request in a task of
    its own with a streamed body: CPU per request that the import path paid
    on every write. Context variables set here reach the handler directly.
    """

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cid = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-correlation-id"), None)
        cid = cid or str(uuid.uuid4())
        token = context.correlation_id.set(cid)
        token_c = context.causation_id.set(None)
        token_a = context.actor.set(None)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-correlation-id", cid.encode("latin-1"))]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            # the matched route's template (bounded label values); routing records it in the scope
            route = str(getattr(scope.get("route"), "path", "unmatched"))
            if route not in ("/metrics", "/healthz"):
                elapsed = time.perf_counter() - started
                metrics.HTTP_REQUESTS.labels(self.service, scope["method"], route, str(status)).inc()
                metrics.HTTP_LATENCY.labels(self.service, scope["method"], route).observe(elapsed)
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
        raise problems.bad_request("invalid-if-match", 'If-Match must name a version, e.g. "3".') from exc


def set_etag(response: Response, version: int) -> None:
    response.headers["ETag"] = f'"{version}"'


def parse_day(value: str | None, default: date) -> date:
    if value is None:
        return default
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise problems.bad_request("invalid-date", f"{value!r} is not a date (YYYY-MM-DD).") from exc


# ---------------------------------------------------------------------------- shared parameters


async def _at_day(
    request: Request,
    at: Annotated[
        str | None,
        Query(description="The day to read (YYYY-MM-DD); default today.", json_schema_extra={"format": "date"}),
    ] = None,
) -> date:
    return parse_day(at, request.app.state.runtime.clock.today())


AtDay = Annotated[date, Depends(_at_day)]
"""``?at=`` resolved to a day (today in the service's zone when absent; 400 ``invalid-date``)."""


def parse_instant(value: str, zone: str) -> datetime:
    """RFC 3339 (``2027-01-01T12:00:00+01:00``); without an offset, or a bare date, in the service's zone."""
    try:
        instant = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise problems.bad_request(
            "invalid-instant",
            f"{value!r} is not an instant (e.g. 2027-01-01T12:00:00+01:00).",
            field="registered_at",
        ) from exc
    return instant if instant.tzinfo is not None else instant.replace(tzinfo=ZoneInfo(zone))


async def _registered_at(
    request: Request,
    registered_at: Annotated[
        str | None,
        Query(
            description="Transaction time: answer as the system had it registered at this instant "
            "(RFC 3339; without an offset, in the service's zone; a bare date is its first moment). "
            "Default: now.",
            json_schema_extra={"format": "date-time"},
        ),
    ] = None,
) -> datetime | None:
    if registered_at is None:
        return None
    return parse_instant(registered_at, request.app.state.runtime.settings.timezone)


RegisteredAt = Annotated[datetime | None, Depends(_registered_at)]
"""``?registered_at=``: the instant of transaction time a read answers at (None: now). Every read
that takes ``AtDay`` takes this too (checked by ``tests/platform/test_conventions``)."""


async def _if_match_header(
    value: Annotated[
        str | None,
        Header(
            alias="If-Match",
            description='Apply only at this version (`"3"`); 412 otherwise. The ETag of a read.',
        ),
    ] = None,
) -> int | None:
    if value is None or value.strip() == "*":
        return None
    try:
        return int(value.strip().removeprefix("W/").strip('"'))
    except ValueError as exc:
        raise problems.bad_request("invalid-if-match", 'If-Match must name a version, e.g. "3".') from exc


IfMatch = Annotated[int | None, Depends(_if_match_header)]
"""The version ``If-Match`` names, or None (no header, or ``*``)."""


async def _prefer_minimal(
    value: Annotated[
        str | None,
        Header(
            alias="Prefer",
            description="`return=minimal` (RFC 7240): answer with the status and `ETag` only, no body "
            "(204, or 201 when created). For bulk loaders, which do not read the state back.",
        ),
    ] = None,
) -> bool:
    if value is None:
        return False
    return any(part.split(";", 1)[0].strip().lower() == "return=minimal" for part in value.split(","))


ReturnMinimal = Annotated[bool, Depends(_prefer_minimal)]
"""``Prefer: return=minimal`` was asked for: answer a write with ``minimal``."""


def minimal(version: int, created: bool) -> Response:
    """A write's answer without its state: rendering it (and, for a person, auditing the CPR number it
    reveals) was a tenth of the registry's CPU during an import, for an answer the importer discards."""
    response = Response(status_code=201 if created else 204)
    set_etag(response, version)
    response.headers["Preference-Applied"] = "return=minimal"
    return response


@dataclass(frozen=True)
class Paging:
    """One cursor page's request: the same sizes on every list of every service."""

    limit: int
    cursor: str | None


DEFAULT_PAGE = 100
MAX_PAGE = 1000


async def _paging(
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Items per page.")] = DEFAULT_PAGE,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page.")] = None,
) -> Paging:
    return Paging(limit, cursor)


PageQuery = Annotated[Paging, Depends(_paging)]


# ---------------------------------------------------------------------------- OpenAPI


class FieldError(BaseModel):
    field: str
    location: str
    message: str
    code: str


class ProblemDetails(BaseModel):
    """RFC 9457 problem details; ``type`` is ``urn:orgdir:problem:<kind>``, extra members may follow."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=["urn:orgdir:problem:not-found"])
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = Field(None, description="Per field, for `validation-error`.")


_WHY = {
    400: "A parameter is not well-formed (date, cursor, If-Match, UUID).",
    401: "No valid bearer token.",
    403: "The token lacks the role this operation needs.",
    404: "Not found.",
    409: "The current state forbids the change, or it collided with a concurrent one.",
    412: "If-Match names another version than the current one.",
    413: "The request body is larger than the service accepts (`ORGDIR_MAX_BODY_BYTES`).",
    422: "The request breaks a rule (`validation-error` lists the fields).",
    503: "A dependency does not answer; retry after `Retry-After` seconds.",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route that can answer more than the statuses documented for all."""
    return {s: {"description": _WHY.get(s, "Problem."), "model": ProblemDetails} for s in statuses}


def _statuses_of(method: str, op: dict[str, Any]) -> set[int]:
    """The problems any operation of this shape can answer (routes add their own with
    ``problem_responses``)."""
    params = op.get("parameters", [])
    out = {503}
    if op.get("security"):
        out |= {401, 403}
    if params or "requestBody" in op:
        out |= {400, 422}
    if "requestBody" in op:
        out.add(413)
    if any(p.get("in") == "path" for p in params):
        out.add(404)
    if method in ("post", "put", "patch", "delete"):
        out.add(409)
    if any(p.get("in") == "header" and p.get("name", "").lower() == "if-match" for p in params):
        out.add(412)
    return out


def complete_openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document plus what ours does on every route: each problem status documented with
    ``application/problem+json`` and the ``ProblemDetails`` schema (instead of FastAPI's 422 shape)."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes, tags=app.openapi_tags
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    problem_schema = ProblemDetails.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(problem_schema.pop("$defs", {}))
    components["ProblemDetails"] = problem_schema
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    ref = {"$ref": "#/components/schemas/ProblemDetails"}
    for item in schema.get("paths", {}).values():
        for method, op in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            responses = op.setdefault("responses", {})
            for status in _statuses_of(method, op) | {int(s) for s in responses if s.isdigit() and int(s) >= 400}:
                entry = responses.setdefault(str(status), {"description": _WHY.get(status, "Problem.")})
                entry["content"] = {PROBLEM_MEDIA_TYPE: {"schema": ref}}
    app.openapi_schema = schema
    return schema


# ---------------------------------------------------------------------------- batches

MAX_BATCH = 100


class BatchOperation(BaseModel):
    """One PUT of a batch, as it would be sent alone."""

    method: Literal["PUT"] = "PUT"
    path: str = Field(
        description="The PUT's path, e.g. `/api/v1/persons/{uuid}` (or without `/api/v1`).",
        examples=["/api/v1/persons/0b9f7a3c-1d2e-4f50-8a6b-7c8d9e0f1a2b"],
    )
    body: dict[str, Any] = Field(description="The PUT's body.")
    if_match: int | None = Field(None, description="The version the PUT's `If-Match` would name.")


class BatchIn(BaseModel):
    operations: list[BatchOperation] = Field(min_length=1, max_length=MAX_BATCH)


class BatchResult(BaseModel):
    """What the PUT alone would have answered with `Prefer: return=minimal`: status, version or problem."""

    status: int = Field(description="201 created, 200 replaced or unchanged, else the problem's status.")
    version: int | None = Field(None, description="The version written or found (the ETag).")
    problem: ProblemDetails | None = None


class BatchOut(BaseModel):
    results: list[BatchResult] = Field(description="One per operation, in the order given.")


BATCH_DOC = (
    "Up to 100 independent PUTs in one request, for bulk loaders: each is decided, validated and written "
    "exactly as if sent alone, concurrently with the others, and answers on its own (201, 200 or a problem); "
    "one refused does not stop the rest. Operations that depend on each other belong in separate batches. "
    "The batch itself answers 200 unless it is malformed or the token may not write."
)


async def run_batch(
    operations: list[BatchOperation], put: Callable[[BatchOperation], Awaitable[tuple[bool, int]]]
) -> BatchOut:
    """Each operation through ``put`` (created?, version) at once; a refusal becomes that one's result."""

    async def one(op: BatchOperation) -> BatchResult:
        try:
            created, version = await put(op)
        except Exception as exc:  # answers for its own operation, not for the ones written beside it
            problem = problem_of(exc, if_match=op.if_match is not None)
            status = status_of(problem)
            return BatchResult(status=status, problem=ProblemDetails.model_validate(problem.body(status, op.path)))
        return BatchResult(status=201 if created else 200, version=version)

    return BatchOut(results=list(await asyncio.gather(*(one(op) for op in operations))))


def batch_target(path: str, collections: Sequence[str]) -> tuple[str, str]:
    """``(collection, uuid)`` of a batch operation's path; 404 for a path no PUT has here, 400 for a bad uuid."""
    parts = path.removeprefix("/api/v1").strip("/").split("/")
    if len(parts) != 2 or parts[0] not in collections:
        raise problems.missing(
            "not-found",
            f"No PUT in a batch at {path!r}; one of: " + ", ".join(f"/api/v1/{c}/{{uuid}}" for c in collections),
        )
    try:
        uuid.UUID(parts[1])
    except ValueError as exc:
        raise problems.bad_request("invalid-uuid", f"{parts[1]!r} is not a UUID.") from exc
    return parts[0], parts[1]
