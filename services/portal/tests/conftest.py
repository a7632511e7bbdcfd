"""The four services and the portal as real processes on the session's RabbitMQ and MongoDB-wire server,
with a small organisation loaded through the APIs; shared by the page tests and the browser tests."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import httpx
import pytest

from access_rights.settings import AccessRightsSettings
from notifier.settings import NotifierSettings
from orgdir.settings import Settings
from orgdir_tools.testkit import ADMIN, ServiceProcess, eventually, settings_for
from orgunits.settings import OrgunitsSettings
from orgunits.vocabulary import class_uuid
from portal.settings import PortalSettings
from registry.settings import RegistrySettings

SERVICES: list[tuple[str, str, type[Settings]]] = [
    ("orgunits", "orgunits", OrgunitsSettings),
    ("registry", "registry", RegistrySettings),
    ("access-rights", "access_rights", AccessRightsSettings),
    ("notifier", "notifier", NotifierSettings),
]
ALWAYS = {"from": "2020-01-01", "to": None}


def uid() -> str:
    return str(uuid.uuid4())


@dataclass
class Stack:
    """URLs of the running processes and the UUIDs of the data loaded into them."""

    urls: dict[str, str]
    portal: str
    ids: dict[str, str] = field(default_factory=dict)
    ns: str = ""  # the namespace of the databases, exchange and queues (another replica joins with it)

    def api(self, service: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.urls[service], headers=ADMIN, timeout=30)


async def _ok(response: Any) -> dict[str, Any]:
    r: httpx.Response = await response
    assert r.status_code in (200, 201), f"{r.request.method} {r.request.url}: {r.text}"
    body: dict[str, Any] = r.json()
    return body


async def load(stack: Stack) -> None:
    """Testrup Kommune: Økonomi og Løn, Skoleområdet (Åskolen below it) (Anne works there, Søren nowhere yet);
    a role on the whole municipality, so rights come with reasons."""
    ids = stack.ids
    ids.update(kommune=uid(), oekonomi=uid(), skoler=uid(), skole=uid(), anne=uid(), soeren=uid(), role=uid(),
               system=uid())
    kind = {"unit_type": class_uuid("unit_type", "forvaltning"), "unit_level": class_uuid("unit_level", "kommune")}
    async with stack.api("orgunits") as ou, stack.api("registry") as reg, stack.api("access-rights") as acc:
        for key, name, user_key, parent in [
            ("kommune", "Testrup Kommune", "TESTRUP", None),
            ("oekonomi", "Økonomi og Løn", "T-OEK", "kommune"),
            ("skoler", "Skoleområdet", "T-SKOLER", "kommune"),
            ("skole", "Åskolen", "T-AASKOLEN", "skoler"),
        ]:
            await _ok(ou.put(f"/api/v1/orgunits/{ids[key]}", json={
                "name": name, "user_key": user_key, "parent": ids[parent] if parent else None,
                "validity": ALWAYS, **kind}))
        await _ok(acc.put(f"/api/v1/it-systems/{ids['system']}", json={
            "validity": ALWAYS, "user_key": "AD", "name": "Active Directory", "username_rule": "{given:3}{surname:3}",
            "offboarding": "disable", "grace_days": 0}))
        await _ok(acc.put(f"/api/v1/roles/{ids['role']}", json={
            "validity": ALWAYS, "it_system": ids["system"], "name": "Fællesdrev", "sensitive": False}))

        async def assign() -> bool:  # access-rights learns the unit from orgunits' events
            r = await acc.put(f"/api/v1/assignments/{uid()}", json={
                "validity": ALWAYS, "role": ids["role"], "unit": ids["kommune"], "inherit": True})
            return r.status_code in (200, 201)

        await eventually(assign)
        people = [("anne", "Anne", "Jørgensen", "0101901234"), ("soeren", "Søren", "Sørensen", None)]
        for key, given, surname, cpr in people:
            body: dict[str, Any] = {"given_name": given, "surname": surname, "validity": {"from": "1990-01-01"}}
            if cpr:
                body["cpr"] = cpr
            await _ok(reg.put(f"/api/v1/persons/{ids[key]}", json=body))

        async def hire_anne() -> bool:  # registry learns units and classes from orgunits' events
            r = await reg.put(f"/api/v1/engagements/{uid()}", json={
                "person": ids["anne"], "unit": ids["skole"], "primary": True,
                "job_function": class_uuid("job_function", "paedagog"),
                "engagement_type": class_uuid("engagement_type", "ansat"), "validity": ALWAYS})
            return r.status_code in (200, 201)

        await eventually(hire_anne)

        async def anne_has_right() -> bool:
            r = await acc.get(f"/api/v1/persons/{ids['anne']}/rights")
            return r.status_code == 200 and bool(r.json()["rights"])

        await eventually(anne_has_right)


@pytest.fixture(scope="session")
async def stack(amqp_url: str, mongodb_url: str) -> AsyncIterator[Stack]:
    ns = f"p{uuid.uuid4().hex[:8]}"
    async with contextlib.AsyncExitStack() as exits:
        procs = {
            name: ServiceProcess(package, settings_for(cls, ns=ns, service=name, amqp_url=amqp_url,
                                                       mongodb_url=mongodb_url))
            for name, package, cls in SERVICES
        }
        urls = {name: p.url for name, p in procs.items()}
        portal_settings = settings_for(PortalSettings, ns=ns, service="portal", amqp_url=amqp_url,
                                       mongodb_url=mongodb_url)
        portal = ServiceProcess("portal", portal_settings, env={
            "ORGDIR_ORGUNITS_URL": urls["orgunits"], "ORGDIR_REGISTRY_URL": urls["registry"],
            "ORGDIR_ACCESS_RIGHTS_URL": urls["access-rights"], "ORGDIR_NOTIFIER_URL": urls["notifier"],
        })
        # All at once: the portal needs nothing of the services to start (its pages ask them later).
        await asyncio.gather(*(exits.enter_async_context(p) for p in [*procs.values(), portal]))
        s = Stack(urls=urls, portal=portal.url, ns=ns)
        await load(s)
        yield s


def first_of_next_month(today: date) -> date:
    return date(today.year + (today.month == 12), today.month % 12 + 1, 1)
