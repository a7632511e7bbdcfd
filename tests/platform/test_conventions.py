"""Conventions every service's API keeps, read off the apps' OpenAPI documents (no servers needed)."""

from __future__ import annotations

from typing import Any

import pytest

from orgdir_tools.testkit import settings_for

from .test_route_auth import APPS


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
