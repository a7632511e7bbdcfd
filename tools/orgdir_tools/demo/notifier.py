"""Demo data: two downstream targets a municipality typically has, loaded idempotently.

Both start inactive (their URLs are placeholders): activate them with PATCH
``{"active": true}`` once a receiver listens there.
"""

from __future__ import annotations

import uuid

import httpx

NS = uuid.UUID("6f1d7c1e-5c1b-4b1e-9f3e-6a0d5e6b7c01")


def _id(name: str) -> str:
    return str(uuid.uuid5(NS, name))


DEMO = [
    {
        "kind": "webhook",
        "name": "Lønsystem (OPUS) - personer og ansættelser",
        "url": "http://127.0.0.1:8199/orgdir-hook",
        "event_types": ["person.*", "engagement.*", "orgunit.*"],
        "secret": "whsec_" + "ZGVtby1zZWNyZXQtb25seS1mb3ItdGhlLWxvY2FsLXN0YWNr",
        "active": False,
        "latest_state_only": True,
    },
    {
        "kind": "scim",
        "name": "Microsoft Entra ID (SCIM)",
        "url": "http://127.0.0.1:8198/v2",
        "token": "demo-scim-token",
        "active": False,
    },
]


async def load(http: httpx.AsyncClient) -> None:
    """PUT each subscription under a fixed uuid: loading twice changes nothing."""
    for body in DEMO:
        r = await http.put(f"/api/v1/subscriptions/{_id(str(body['name']))}", json=body)
        r.raise_for_status()
