"""Demo data: downstream targets a municipality typically has, loaded idempotently.

Each says how much of addresses it may see (``visibility``): the payroll
system and Entra ID the default ``internal``, the municipality's website
only ``public`` ones, and the switchboard ``secret`` too (it must be able to
put calls through to an unlisted number). All start inactive (their URLs are placeholders): activate them with PATCH
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
        "visibility": "internal",
    },
    {
        "kind": "webhook",
        "name": "Kommunens hjemmeside - kontaktsider (kun offentlige adresser)",
        "url": "http://127.0.0.1:8197/orgdir-hook",
        "event_types": ["person.*", "orgunit.*"],
        "secret": "whsec_" + "ZGVtby13ZWJzaXRlLXNlY3JldC1mb3ItdGhlLWxvY2FsLXN0YWNr",
        "active": False,
        "latest_state_only": True,
        "visibility": "public",
    },
    {
        "kind": "webhook",
        "name": "Omstillingen (må se hemmelige numre)",
        "url": "http://127.0.0.1:8196/orgdir-hook",
        "event_types": ["person.*", "orgunit.*"],
        "secret": "whsec_" + "ZGVtby1zd2l0Y2hib2FyZC1zZWNyZXQtZm9yLWxvY2FsLXN0YWNr",
        "active": False,
        "latest_state_only": True,
        "visibility": "secret",
    },
    {
        "kind": "scim",
        "name": "Microsoft Entra ID (SCIM)",
        "url": "http://127.0.0.1:8198/v2",
        "token": "demo-scim-token",
        "active": False,
        "visibility": "internal",
    },
]


async def load(http: httpx.AsyncClient) -> None:
    """PUT each subscription under a fixed uuid: loading twice changes nothing."""
    for body in DEMO:
        r = await http.put(f"/api/v1/subscriptions/{_id(str(body['name']))}", json=body)
        r.raise_for_status()
