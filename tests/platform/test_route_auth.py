"""Deny by default, checked: every route of every service answers 401 without a token (or with an
unknown one) and 403 with a token lacking its role; only health, readiness, metrics and the API
documents are open.

The role a route needs is read from its dependencies (the ``orgdir.auth.require`` dependencies in
``route.dependant``), not from a table, so a new route is checked as soon as it exists. Path
parameters get a random UUID and no body is sent: authentication must come before anything else
(lookups, validation), so neither matters. (A body that is not JSON at all is still answered 422
before auth: FastAPI parses the body before it runs any dependency.)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant

from access_rights.app import create_app as access_app
from access_rights.settings import AccessRightsSettings
from notifier.app import create_app as notifier_app
from notifier.settings import NotifierSettings
from orgdir import auth
from orgdir.problems import PROBLEM_BASE, PROBLEM_MEDIA_TYPE
from orgdir.settings import StaticToken
from orgdir_tools.testkit import RunningApp, settings_for
from orgunits.app import create_app as orgunits_app
from orgunits.settings import OrgunitsSettings
from registry.app import create_app as registry_app
from registry.settings import RegistrySettings

APPS: list[tuple[str, Any, Any]] = [
    ("orgunits", orgunits_app, OrgunitsSettings),
    ("registry", registry_app, RegistrySettings),
    ("access-rights", access_app, AccessRightsSettings),
    ("notifier", notifier_app, NotifierSettings),
]

# health, readiness, metrics and the API documents: the only routes open without a token
OPEN = {
    "/healthz",
    "/readyz",
    "/metrics",
    "/api/v1/openapi.json",
    "/api/v1/docs",
    "/api/v1/docs/assets",  # Swagger UI's script, styles and icon (orgdir.http.install_docs)
    "/api/v1/redoc",
    "/docs/oauth2-redirect",
}
NO_ROLES = "test-no-roles"  # a valid token without any role, so read routes have a weaker token too


def routes(app: FastAPI) -> Iterator[Any]:
    """Every route of the app, included routers flattened (FastAPI ≥ 0.16x includes them lazily)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: app.routes is flat already
        yield from app.routes
        return
    yield from iter_route_contexts(app.routes)


def required_roles(dependant: Dependant | None) -> set[str]:
    """The roles named by the ``orgdir.auth.require`` dependencies anywhere in the dependency tree."""
    out: set[str] = set()
    for dep in dependant.dependencies if dependant is not None else []:
        role = auth.role_of(dep.call)
        if role is not None:
            out.add(role)
        out |= required_roles(dep)
    return out


def filled(path: str, params: list[str]) -> str:
    for name in params:
        path = path.replace("{" + name + "}", str(uuid.uuid4()))
    return path


def problem(r: httpx.Response, status: int, kind: str) -> str | None:
    """None if ``r`` is the expected problem, else what is wrong with it."""
    ctype = r.headers.get("content-type", "")
    if r.status_code != status or not ctype.startswith(PROBLEM_MEDIA_TYPE):
        return f"{r.status_code} {ctype} {r.text[:200]}"
    if r.json().get("type") != PROBLEM_BASE + kind:
        return f"type {r.json().get('type')}"
    return None


@pytest.mark.parametrize(("service", "factory", "settings_cls"), APPS, ids=[a[0] for a in APPS])
async def test_every_route_denies_by_default(
    service: str, factory: Any, settings_cls: Any, ns: str, amqp_url: str, mongodb_url: str
) -> None:
    base = settings_for(settings_cls, ns=ns, service=service, amqp_url=amqp_url, mongodb_url=mongodb_url)
    tokens = {**base.tokens(), "no-roles": StaticToken(token=NO_ROLES, roles=[])}
    settings = settings_for(
        settings_cls, ns=ns, service=service, amqp_url=amqp_url, mongodb_url=mongodb_url, static_tokens=tokens
    )
    app = factory(settings)
    findings: list[str] = []
    checked = 0
    async with (
        RunningApp(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test", timeout=30) as http,
    ):
        for route in routes(app):
            path = route.path
            if path in OPEN:
                continue
            dependant = getattr(route, "dependant", None)
            if dependant is None:  # not an API route (a mount, a plain Starlette route): unchecked, so a finding
                findings.append(f"{path}: not an API route ({type(route.original_route).__name__})")
                continue
            needed = required_roles(dependant)
            if not needed:
                findings.append(f"{sorted(route.methods)} {path}: no auth dependency")
            url = filled(path, [p.name for p in dependant.path_params])
            for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
                checked += 1
                r = await http.request(method, url)
                if wrong := problem(r, 401, "unauthorized"):
                    findings.append(f"{method} {path} without a token: {wrong}")
                r = await http.request(method, url, headers={"Authorization": "Bearer not-a-token"})
                if wrong := problem(r, 401, "unauthorized"):
                    findings.append(f"{method} {path} with an unknown token: {wrong}")
                for token, roles in sorted((t.token, t.roles) for t in tokens.values()):
                    if needed <= auth.expand(roles):
                        continue
                    r = await http.request(method, url, headers={"Authorization": f"Bearer {token}"})
                    if wrong := problem(r, 403, "forbidden"):
                        findings.append(f"{method} {path} with {token}: {wrong}")
    assert checked >= 3, f"{service}: only {checked} routes found; is the walk seeing the routers?"
    assert not findings, "\n".join(findings)
