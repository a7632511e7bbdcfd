"""The four public APIs as the signed-in user sees them: one pooled httpx client per service.

The portal never reaches a database or the broker; every page is built from these calls, made with
the user's own bearer token, so the services decide what the user may read or write (and audit it).
An API's problem answer (RFC 9457) becomes an :class:`ApiError` the pages show as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from portal.settings import PortalSettings

SERVICES = ("orgunits", "registry", "access_rights", "notifier")


class ApiError(Exception):
    """An API answered with a problem (or did not answer at all: status 503, kind ``unreachable``)."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(problem.get("detail") or problem.get("title") or f"HTTP {status}")
        self.status = status
        self.problem = problem

    @property
    def kind(self) -> str:
        return str(self.problem.get("type", "")).rsplit(":", 1)[-1]

    @property
    def detail(self) -> str:
        return str(self)


def _problem_of(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        return body
    return {"type": "urn:orgdir:problem:http-error", "title": response.reason_phrase, "detail": response.text[:300]}


class Api:
    """One service's API with one user's token."""

    def __init__(self, name: str, http: httpx.AsyncClient, token: str) -> None:
        self.name = name
        self.http = http
        self.headers = {"Authorization": f"Bearer {token}"}

    async def _call(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, json: Any = None,
        if_match: int | None = None,
    ) -> httpx.Response:
        headers = dict(self.headers)
        if if_match is not None:
            headers["If-Match"] = f'"{if_match}"'
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = await self.http.request(method, f"/api/v1{path}", params=clean, json=json, headers=headers)
        except httpx.HTTPError as exc:
            raise ApiError(503, {
                "type": "urn:orgdir:problem:unreachable", "title": "Service unreachable",
                "detail": f"The {self.name} service does not answer ({type(exc).__name__}).",
            }) from exc
        if response.status_code >= 400:
            raise ApiError(response.status_code, _problem_of(response))
        return response

    async def get(self, path: str, **params: Any) -> Any:
        return (await self._call("GET", path, params=params)).json()

    async def get_or_none(self, path: str, **params: Any) -> Any:
        """The body, or None on 404 (a unit not active on the day, a person without rights)."""
        try:
            return await self.get(path, **params)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def post(self, path: str, body: Any, *, if_match: int | None = None, **params: Any) -> Any:
        return (await self._call("POST", path, params=params, json=body, if_match=if_match)).json()

    async def patch(self, path: str, body: Any, *, if_match: int | None = None) -> Any:
        return (await self._call("PATCH", path, json=body, if_match=if_match)).json()


@dataclass
class Apis:
    """The four APIs for one request."""

    orgunits: Api
    registry: Api
    access: Api
    notifier: Api


class Clients:
    """The pooled connections, made once per process and shared by every request."""

    def __init__(self, settings: PortalSettings) -> None:
        timeout = httpx.Timeout(settings.api_timeout_seconds)
        urls = {
            "orgunits": settings.orgunits_url,
            "registry": settings.registry_url,
            "access_rights": settings.access_rights_url,
            "notifier": settings.notifier_url,
        }
        self.http = {name: httpx.AsyncClient(base_url=url.rstrip("/"), timeout=timeout) for name, url in urls.items()}

    def for_token(self, token: str) -> Apis:
        return Apis(
            orgunits=Api("orgunits", self.http["orgunits"], token),
            registry=Api("registry", self.http["registry"], token),
            access=Api("access-rights", self.http["access_rights"], token),
            notifier=Api("notifier", self.http["notifier"], token),
        )

    async def ready(self) -> dict[str, bool]:
        """Whether each API answers its ``/healthz`` (shown by ``/readyz``; not a gate for serving)."""
        out: dict[str, bool] = {}
        for name, http in self.http.items():
            try:
                out[name] = (await http.get("/healthz", timeout=2)).status_code == 200
            except httpx.HTTPError:
                out[name] = False
        return out

    async def close(self) -> None:
        for http in self.http.values():
            await http.aclose()
