"""Shared by the cross-service tests: the downstream peers, replicas behind a client-side balancer,
and a check that an API call succeeded."""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from orgdir_tools.testkit import ADMIN, ServiceProcess
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


class Replicas:
    """The replicas of one service, and a client that alternates between the live ones."""

    def __init__(self, procs: list[ServiceProcess], *, fallback: bool = False) -> None:
        self.procs = procs
        self.fallback = fallback  # all restarting: hand out a client anyway (the request fails, is retried)
        self.clients = [httpx.AsyncClient(base_url=p.url, headers=ADMIN, timeout=30) for p in procs]
        self._turn = itertools.cycle(range(len(procs)))

    def next(self) -> httpx.AsyncClient:
        """The next live replica, as a load balancer's health check would route."""
        for _ in self.procs:
            k = next(self._turn)
            proc = self.procs[k].proc
            if proc is not None and proc.poll() is None:
                return self.clients[k]
        if self.fallback:
            return self.clients[0]
        raise AssertionError("no replica is running")

    async def close(self) -> None:
        for c in self.clients:
            await c.aclose()
