"""The services' public HTTP APIs, as the importer uses them: list pages, single reads, writes.

The only module that speaks HTTP. Transient failures (connection errors,
409 from a concurrent writer, 429, 502-504) are retried with backoff; any
other answer is returned as an ``Outcome`` with the problem's detail, so the
caller can report the record and go on. So is a write that never got an
answer: one record is reported as ``unreachable`` instead of the whole run
ending in a traceback, and running the import again finishes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from importer.domain import Write
from importer.settings import ImportSettings

RETRY_STATUS = {409, 429, 502, 503, 504}
MINIMAL = {"Prefer": "return=minimal"}  # the importer never reads a write's state back
PAGE = 1000
BATCHED = ("registry",)  # services with ``POST /api/v1/batch``
NO_BATCH = "no-batch-endpoint"  # an older service without it: each write is sent alone instead


@dataclass(frozen=True)
class Outcome:
    status: int
    kind: str = ""  # the problem type's last part, e.g. unknown-unit
    detail: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def message(self) -> str:
        status = f"{self.status} " if self.status else ""  # 0: no answer at all
        return f"{status}{self.kind}: {self.detail}".strip()


def _problem(response: httpx.Response) -> tuple[str, str]:
    try:
        body = response.json()
    except ValueError:
        return "", response.text[:300]
    return _problem_of(body)


def _problem_of(body: Any) -> tuple[str, str]:
    if not isinstance(body, dict):
        return "", str(body)[:300]
    kind = str(body.get("type") or "").rsplit(":", 1)[-1]
    detail = str(body.get("detail") or body.get("title") or "")
    errors = body.get("errors")
    if isinstance(errors, list) and errors:
        parts = [f"{e.get('field') or ''}: {e.get('message') or ''}".strip(": ") for e in errors if isinstance(e, dict)]
        detail = "; ".join(p for p in [detail, *parts] if p)
    return kind, detail


class Api:
    """Per service, one single-connection HTTP client per request in flight, lent out from a queue.

    One ``httpx.AsyncClient`` with a pool of 32 connections spent most of
    the importer's CPU scanning its pool on every request (httpcore walks
    every connection); a client per slot keeps that walk at one. They share
    one TLS context.
    """

    def __init__(self, settings: ImportSettings) -> None:
        self.settings = settings
        headers = {"Authorization": f"Bearer {settings.token}"}
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        tls = httpx.create_ssl_context()
        self.clients: dict[str, asyncio.Queue[httpx.AsyncClient]] = {}
        self._all: list[httpx.AsyncClient] = []
        for name in ("orgunits", "registry", "access-rights"):
            queue: asyncio.Queue[httpx.AsyncClient] = asyncio.Queue()
            for _ in range(max(1, settings.concurrency)):
                client = httpx.AsyncClient(base_url=settings.url(name), headers=headers, limits=limits,
                                           timeout=settings.timeout_seconds, verify=tls)
                queue.put_nowait(client)
                self._all.append(client)
            self.clients[name] = queue
        self.batchers = {name: Batcher(self, name) for name in BATCHED if settings.batch > 1}

    async def aclose(self) -> None:
        for c in self._all:
            await c.aclose()

    async def request(self, service: str, method: str, path: str, *, json: Any = None,
                      params: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None,
                      ) -> httpx.Response:
        """One request, retried while the failure is transient."""
        retries = self.settings.retries
        delay = 0.2
        for attempt in range(retries + 1):
            client = await self.clients[service].get()
            try:
                response = await client.request(method, path, json=json, params=params, headers=headers)
            except httpx.TransportError:
                if attempt == retries:
                    raise
            else:
                if response.status_code not in RETRY_STATUS or attempt == retries:
                    return response
                after = response.headers.get("Retry-After")
                if after and after.isdigit():
                    delay = max(delay, float(after))
            finally:
                self.clients[service].put_nowait(client)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")

    async def list_all(self, service: str, path: str, **params: str) -> list[dict[str, Any]]:
        """Every item of a cursor-paged list."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            query = {**params, "limit": str(PAGE), **({"cursor": cursor} if cursor else {})}
            response = await self.request(service, "GET", path, params=query)
            if response.status_code != 200:
                kind, detail = _problem(response)
                raise RuntimeError(f"GET {service} {path}: {response.status_code} {kind}: {detail}")
            body = response.json()
            items += body["items"]
            cursor = body.get("next_cursor")
            if not cursor:
                return items

    async def get(self, service: str, path: str, **params: str) -> dict[str, Any] | None:
        """One thing, or None when the service does not have it (on that day)."""
        response = await self.request(service, "GET", path, params=params)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            kind, detail = _problem(response)
            raise RuntimeError(f"GET {service} {path}: {response.status_code} {kind}: {detail}")
        found: dict[str, Any] = response.json()
        return found

    def unreachable(self, service: str, exc: Exception) -> Outcome:
        return Outcome(0, "unreachable", f"{service} did not answer in {self.settings.retries + 1} "
                                         f"attempts ({type(exc).__name__}); run the import again to finish")

    async def send(self, write: Write) -> Outcome:
        """One write: in a batch where the service takes them (a transient refusal is retried alone)."""
        batcher = self.batchers.get(write.service)
        if batcher is not None and batcher.supported and write.method == "PUT":
            outcome = await batcher.send(write)
            if outcome.status not in RETRY_STATUS and outcome.kind != NO_BATCH:
                return outcome
        return await self.send_alone(write)

    async def send_alone(self, write: Write) -> Outcome:
        try:
            response = await self.request(write.service, write.method, write.path, json=write.body, headers=MINIMAL)
        except httpx.TransportError as exc:
            return self.unreachable(write.service, exc)
        if 200 <= response.status_code < 300:
            return Outcome(response.status_code)
        kind, detail = _problem(response)
        return Outcome(response.status_code, kind, detail)


class Batcher:
    """Single PUTs to one service, gathered into ``POST /api/v1/batch`` requests of up to ``batch``.

    Per write the service spent more on HTTP (parsing, routing, middleware,
    the answer) than on deciding it, and the importer more still on httpx; a
    batch pays that once. Writes wait while every request slot is busy, so
    batches fill up under load and stay small when the load is light.
    """

    def __init__(self, api: Api, service: str) -> None:
        self.api = api
        self.service = service
        self.size = api.settings.batch
        self._slots = asyncio.Semaphore(max(1, api.settings.concurrency))
        self._queue: list[tuple[Write, asyncio.Future[Outcome]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self.supported = True  # until the service answers that it has no batch endpoint

    async def send(self, write: Write) -> Outcome:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._queue.append((write, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # the writes started with this one join its batch
        while self._queue:
            await self._slots.acquire()
            batch, self._queue = self._queue[: self.size], self._queue[self.size :]
            task = asyncio.create_task(self._send(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[Write, asyncio.Future[Outcome]]]) -> None:
        try:
            operations = [{"method": "PUT", "path": w.path, "body": w.body} for w, _ in batch]
            try:
                response = await self.api.request(self.service, "POST", "/api/v1/batch",
                                                  json={"operations": operations})
            except httpx.TransportError as exc:
                outcomes = [self.api.unreachable(self.service, exc)] * len(batch)
            else:
                if response.status_code in (404, 405):
                    self.supported = False
                outcomes = _outcomes(response, len(batch))
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if not future.done():
                    future.set_result(outcome)
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc) if isinstance(exc, Exception) else future.cancel()
            raise
        finally:
            self._slots.release()


def _outcomes(response: httpx.Response, n: int) -> list[Outcome]:
    """Each operation's outcome; a batch refused whole gives each the batch's problem."""
    if response.status_code in (404, 405):
        return [Outcome(response.status_code, NO_BATCH, "the service has no batch endpoint")] * n
    if response.status_code != 200:
        kind, detail = _problem(response)
        return [Outcome(response.status_code, kind, detail)] * n
    results = response.json()["results"]
    outcomes = []
    for r in results:
        status = int(r["status"])
        outcomes.append(Outcome(status) if 200 <= status < 300 else Outcome(status, *_problem_of(r.get("problem"))))
    return outcomes
