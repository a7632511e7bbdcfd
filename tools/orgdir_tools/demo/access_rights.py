"""A small Danish demo catalogue, loaded idempotently through the HTTP API (PUT, fixed UUIDs).

Assignments need the units of the orgunits demo; each is retried until this
service has received them through orgunits' events.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

from importer.records import stable_uuid
from orgdir_tools.demo.orgunits import UNITS
from orgunits.vocabulary import kle_uuid

NS = uuid.UUID("0f3c2a4e-1b7d-4c55-8e0a-6d2b9c1f7a30")


def uid(name: str) -> str:
    return str(uuid.uuid5(NS, name))


ALWAYS = {"from": "2020-01-01", "to": None}

IT_SYSTEMS = [
    ("AD", "Active Directory", "{given:3}{surname:3}", "disable", 30),
    ("KMD-OPUS", "KMD OPUS Løn", "{initials}{surname:4}", "delete", 0),
    ("SBSYS", "SBSYS ESDH", "{given:4}{surname:2}", "disable", 14),
]
ROLES = [
    ("AD", "Fællesdrev", "Adgang til kommunens fællesdrev", False),
    ("AD", "VPN", "Fjernadgang", False),
    ("KMD-OPUS", "Lønsagsbehandler", "Behandling af løn", True),
    ("SBSYS", "Sagsbehandler", "Oprette og behandle sager", False),
    ("SBSYS", "CPR-opslag", "Opslag i CPR", True),
    ("SBSYS", "Børne- og familiesager", "Sager om særlig støtte til børn og unge (KLE 27.24)", False),
]


def it_system_uuid(key: str) -> str:
    """The importer's UUID for the same source key: ``make run`` imports a municipality after the
    demo, and its SBSYS or AD must be the demo's, not a second system of the same name."""
    return stable_uuid("it_systems", key)


async def load(http: httpx.AsyncClient) -> None:
    async def put(path: str, body: dict[str, Any]) -> None:
        r = await http.put(path, json=body)
        if r.status_code not in (200, 201):
            raise RuntimeError(f"PUT {path}: {r.status_code} {r.text}")

    for key, name, rule, offboarding, grace in IT_SYSTEMS:
        await put(
            f"/api/v1/it-systems/{it_system_uuid(key)}",
            {
                "validity": ALWAYS,
                "user_key": key,
                "name": name,
                "username_rule": rule,
                "offboarding": offboarding,
                "grace_days": grace,
            },
        )
    for system, name, description, sensitive in ROLES:
        await put(
            f"/api/v1/roles/{uid('role:' + name)}",
            {
                "validity": ALWAYS,
                "it_system": it_system_uuid(system),
                "name": name,
                "description": description,
                "sensitive": sensitive,
            },
        )
    await put(
        f"/api/v1/role-groups/{uid('group:kontor')}",
        {
            "validity": ALWAYS,
            "name": "Kontorarbejdsplads",
            "roles": [uid("role:Fællesdrev"), uid("role:Sagsbehandler")],
        },
    )
    await _assignments(http)


async def _assignments(http: httpx.AsyncClient, within: float = 60) -> None:
    """Everyone in Kolding Kommune gets the office workplace, IT the VPN, and the units doing KLE 27.24 (the
    social department) the children's-cases role.

    The units come from the orgunits demo through events, so each PUT is retried
    until this service has projected them (``unknown-unit``), for up to ``within`` s.
    """
    wanted = [
        (uid("assign:kontor"), {"validity": ALWAYS, "role_group": uid("group:kontor"),
                                "unit": UNITS["Kolding Kommune"], "inherit": True}),
        (uid("assign:vpn-it"), {"validity": ALWAYS, "role": uid("role:VPN"),
                                "unit": UNITS["Digitalisering og IT"], "inherit": True}),
        # Granted by task area: everyone in a unit doing (udførende) KLE 27.24, whichever unit that is.
        (uid("assign:kle-27.24"), {"validity": ALWAYS, "role": uid("role:Børne- og familiesager"),
                                   "kle": kle_uuid("27.24"), "aspect": "udførende"}),
    ]
    deadline = asyncio.get_running_loop().time() + within
    for key, body in wanted:
        while True:
            r = await http.put(f"/api/v1/assignments/{key}", json=body)
            if r.status_code in (200, 201):
                break
            if r.status_code != 422 or asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"demo assignment: {r.status_code} {r.text}")
            await asyncio.sleep(0.5)
