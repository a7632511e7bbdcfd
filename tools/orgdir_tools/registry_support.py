"""Registry test and benchmark support: an orgunits stand-in on the bus, and a seeded test world.

The orgunits service is not imported: tests publish its events (per the
contract in orgdir.contracts.orgunits) and wait until the registry's
projection holds them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import date
from typing import Any

from orgdir.bus import Bus
from orgdir.clock import ManualClock
from orgdir.events import new_event
from orgdir.settings import Settings
from orgdir_tools.testkit import RunningApp, settings_for
from registry.service import Registry
from registry.settings import RegistrySettings

TODAY = date(2026, 3, 10)
EPOCH = date(2000, 1, 1)


def uid(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"registry-test:{name}"))


def problem_type(response: Any) -> str:
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    return str(response.json()["type"]).removeprefix("urn:orgdir:problem:")


class OrgFeed:
    """Publishes orgunit.* / class.* events the way services/orgunits does."""

    def __init__(self, settings: Settings) -> None:
        self.bus = Bus(settings)
        self.seq: dict[str, int] = {}
        self.last: dict[str, int] = {}

    async def __aenter__(self) -> OrgFeed:
        await self.bus.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.bus.close()

    def _next(self, subject: str, seq: int | None) -> int:
        n = seq if seq is not None else self.seq.get(subject, 0) + 1
        self.seq[subject] = max(self.seq.get(subject, 0), n)
        return n

    async def unit(
        self,
        name: str,
        parent: str | None = None,
        *,
        timeline: list[dict[str, Any]] | None = None,
        frm: date = EPOCH,
        to: date | None = None,
        seq: int | None = None,
        verb: str = "created",
        uuid_: str | None = None,
    ) -> str:
        u = uuid_ or uid(name)
        n = self._next(u, seq)
        slices = timeline or [
            {
                "validity": {"from": frm.isoformat(), "to": to.isoformat() if to else None},
                "user_key": name.lower().replace(" ", "-"),
                "name": name,
                "parent": parent,
            }
        ]
        data = {"uuid": u, "version": n, "timeline": slices}
        await self.bus.publish(new_event(service="orgunits", type=f"orgunit.{verb}", subject=u, sequence=n, data=data))
        self.last[u] = n
        return u

    async def cls(self, facet: str, user_key: str, name: str, *, seq: int | None = None) -> str:
        u = uid(f"class:{facet}:{user_key}")
        n = self._next(u, seq)
        data = {
            "uuid": u,
            "version": n,
            "facet": facet,
            "facet_uuid": uid(f"facet:{facet}"),
            "timeline": [
                {
                    "validity": {"from": EPOCH.isoformat(), "to": None},
                    "user_key": user_key,
                    "name": name,
                }
            ],
        }
        await self.bus.publish(new_event(service="orgunits", type="class.created", subject=u, sequence=n, data=data))
        self.last[u] = n
        return u

    async def wait(self, registry: Registry, within: float = 20) -> None:
        """Until the registry holds every subject at the last sequence published, in memory and projection.

        A replica's memory may be ahead of the projection (its view feed
        applies an event before whichever replica consumes it has stored it).
        """
        deadline = time.monotonic() + within
        d = registry.directory
        while True:
            seqs = d._seq
            missing = {s: n for s, n in self.last.items() if seqs.get(s, 0) < n}
            if not missing:
                for s, n in self.last.items():
                    doc = await d.units_projection.get(s) or await d.classes_projection.get(s)
                    if doc is None or int(doc["sequence"]) < n:
                        missing[s] = n
            if not missing:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"registry lacks {missing}")
            await asyncio.sleep(0.05)


class World:
    """A running registry, its clock, the feed, and the base vocabulary and tree."""

    def __init__(self, app: RunningApp, clock: ManualClock, feed: OrgFeed, settings: RegistrySettings) -> None:
        self.app = app
        self.clock = clock
        self.feed = feed
        self.settings = settings
        self.c: dict[str, str] = {}
        self.u: dict[str, str] = {}

    @property
    def http(self) -> Any:
        return self.app.http

    @property
    def registry(self) -> Registry:
        reg: Registry = self.app.app.state.registry
        return reg

    async def seed(self) -> None:
        f = self.feed
        for facet, key, name in [
            ("job_function", "konsulent", "Konsulent"),
            ("job_function", "leder", "Leder"),
            ("engagement_type", "ansat", "Ansat"),
            ("manager_type", "direktoer", "Direktør"),
            ("manager_level", "niveau1", "Niveau 1"),
            ("responsibility", "personale", "Personaleansvar"),
            ("association_type", "medlem", "Medlem"),
            ("leave_type", "barsel", "Barsel"),
            ("address_type", "email", "E-mail"),
            ("unit_type", "afdeling", "Afdeling"),
        ]:
            self.c[key] = await f.cls(facet, key, name)
        self.u["root"] = await f.unit("Aarhus Kommune")
        self.u["forv"] = await f.unit("Borgerservice", self.u["root"])
        self.u["afd"] = await f.unit("Afdeling for Løn", self.u["forv"])
        self.u["team"] = await f.unit("Team Ørsted", self.u["afd"])
        self.u["closing"] = await f.unit("Lukkes", self.u["root"], to=date(2026, 6, 1))
        await f.wait(self.registry)

    def person_body(self, given: str, surname: str, **kw: Any) -> dict[str, Any]:
        return {"given_name": given, "surname": surname, "validity": {"from": "2020-01-01"}, **kw}

    def engagement_body(self, person: str, unit: str, **kw: Any) -> dict[str, Any]:
        return {
            "person": person,
            "unit": unit,
            "job_function": self.c["konsulent"],
            "engagement_type": self.c["ansat"],
            "validity": {"from": "2021-01-01"},
            **kw,
        }

    async def person(self, name: str, **kw: Any) -> str:
        given, surname = name.split(" ", 1)
        p = uid(f"person:{name}")
        r = await self.http.put(f"/api/v1/persons/{p}", json=self.person_body(given, surname, **kw))
        assert r.status_code in (200, 201), r.text
        return p

    async def engagement(self, person: str, unit: str, **kw: Any) -> str:
        r = await self.http.post("/api/v1/engagements", json=self.engagement_body(person, unit, **kw))
        assert r.status_code == 201, r.text
        return str(r.json()["uuid"])


def registry_settings(ns: str, amqp_url: str, mongodb_url: str, **kw: Any) -> RegistrySettings:
    return settings_for(
        RegistrySettings,
        ns=ns,
        service="registry",
        amqp_url=amqp_url,
        mongodb_url=mongodb_url,
        **kw,
    )
