"""Shared by the cross-service tests: the downstream peers, and a check that an API call succeeded."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from orgdir_tools.testpeers import Receiver, ScimServer, new_secret


async def ok(r: Any) -> dict[str, Any]:
    """Await a request; it must answer 200 or 201; its JSON body."""
    response: httpx.Response = await r
    assert response.status_code in (200, 201), f"{response.request.method} {response.request.url}: {response.text}"
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def peers() -> Iterator[tuple[Receiver, ScimServer]]:
    """A webhook receiver that checks signatures, and scim2-server."""
    receiver = Receiver(new_secret())
    scim = ScimServer("scim-" + secrets.token_hex(8))
    yield receiver, scim
    receiver.close()
    scim.stop()
