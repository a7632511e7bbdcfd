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

    async def send(self, write: Write) -> Outcome:
        try:
            response = await self.request(write.service, write.method, write.path, json=write.body, headers=MINIMAL)
        except httpx.TransportError as exc:
            return Outcome(0, "unreachable", f"{write.service} did not answer in {self.settings.retries + 1} "
                                             f"attempts ({type(exc).__name__}); run the import again to finish")
        if 200 <= response.status_code < 300:
            return Outcome(response.status_code)
        kind, detail = _problem(response)
        return Outcome(response.status_code, kind, detail)
