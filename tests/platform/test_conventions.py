"""Conventions every service's API keeps, read off the apps' OpenAPI documents (no servers needed)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant

from orgdir_tools.testkit import settings_for
from portal.app import create_app as portal_app
from portal.settings import PortalSettings

from .test_route_auth import APPS, routes


@pytest.mark.parametrize(("service", "factory", "settings_cls"), APPS, ids=[a[0] for a in APPS])
def test_every_read_with_a_day_also_takes_a_registration_instant(service: str, factory: Any, settings_cls: Any) -> None:
    """Valid time and transaction time go together: ``?at=`` without ``?registered_at=`` is a gap (issue #17)."""
    settings = settings_for(
        settings_cls, ns="conventions", service=service, amqp_url="amqp://unused", mongodb_url="mongodb://unused"
    )
    document = factory(settings).openapi()
    missing, with_day = [], 0
    for path, operations in document["paths"].items():
        for method, op in operations.items():
            query = {p["name"] for p in op.get("parameters", []) if p.get("in") == "query"}
            if "at" in query:
                with_day += 1
                if "registered_at" not in query:
                    missing.append(f"{method.upper()} {path}")
    assert with_day or service == "notifier", "no read takes ?at= (did the routes move?)"  # notifier: no validity
    assert missing == [], f"{service}: reads with ?at= but without ?registered_at=: {missing}"


def is_coroutine_callable(call: Any) -> bool:
    """A coroutine function, or an object whose ``__call__`` is one (``HTTPBearer``)."""
    return inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(getattr(call, "__call__", None))  # noqa: B004 (its __call__, not callable())


def _sync_calls(dependant: Dependant, where: str) -> Iterator[str]:
    for dep in dependant.dependencies:
        call = dep.call
        if call is not None and not is_coroutine_callable(call):
            yield f"{where}: {getattr(call, '__qualname__', call)!r}"
        yield from _sync_calls(dep, where)


def _apps() -> Iterator[tuple[str, FastAPI]]:
    for service, factory, settings_cls in APPS:
        settings = settings_for(
            settings_cls, ns="conventions", service=service, amqp_url="amqp://unused", mongodb_url="mongodb://unused"
        )
        yield service, factory(settings)
    yield "portal", portal_app(PortalSettings(session_secret="conventions-" + "x" * 32))


def test_no_route_runs_a_dependency_or_handler_in_the_thread_pool() -> None:
    """A plain ``def`` endpoint or dependency makes FastAPI hop to a worker thread on every request;
    on the import path those hops took a fifth of the registry's CPU. Every one is ``async def``."""
    found: list[str] = []
    checked = 0
    for service, app in _apps():
        for route in routes(app):
            dependant = getattr(route, "dependant", None)
            if dependant is None:  # a mount (the docs' assets): no handler of ours
                continue
            checked += 1
            where = f"{service} {sorted(route.methods)} {route.path}"
            if not is_coroutine_callable(dependant.call):
                found.append(f"{where}: the handler")
            found.extend(_sync_calls(dependant, where))
    assert checked > 100, checked
    assert found == [], "\n".join(found)


@pytest.mark.parametrize(("service", "factory", "settings_cls"), APPS, ids=[a[0] for a in APPS])
def test_every_put_honours_prefer_return_minimal(service: str, factory: Any, settings_cls: Any) -> None:
    """Bulk loaders send ``Prefer: return=minimal`` on every write; a PUT that ignores it renders for nothing."""
    settings = settings_for(
        settings_cls, ns="conventions", service=service, amqp_url="amqp://unused", mongodb_url="mongodb://unused"
    )
    document = factory(settings).openapi()
    puts = [(path, ops["put"]) for path, ops in document["paths"].items() if "put" in ops]
    missing = [path for path, op in puts if "Prefer" not in {p["name"] for p in op.get("parameters", [])}]
    assert puts, "no PUT route (did the routes move?)"
    assert missing == [], f"{service}: PUT routes without Prefer: {missing}"
