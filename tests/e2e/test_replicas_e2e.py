"""Two replicas of every service on one database and one broker, one of each killed mid-flow.

Writes are spread over both replicas of each service (as a load balancer
would), one replica of every service is SIGKILLed while the organisation
changes and started again, and the downstream systems (a signature-checking
webhook receiver and scim2-server) must end exactly where one replica would
have left them: onboarding, a move and offboarding, each effect once.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import date, timedelta
from typing import Any

import aio_pika
import pytest

from orgdir.settings import Settings
from orgdir_tools.testkit import ServiceProcess, eventually, settings_for
from orgdir_tools.testpeers import Receiver, ScimServer
from orgunits.vocabulary import class_uuid

from .conftest import Replicas, ok

PEOPLE = 6
SERVICES = {  # package, service name, extra environment
    "orgunits": ("orgunits", {}),
    "registry": ("registry", {}),
    "access-rights": ("access_rights", {"ORGDIR_SCHEDULER_INTERVAL_SECONDS": "1"}),
    "notifier": (
        "notifier",
        {"ORGDIR_BACKOFF_BASE_SECONDS": "0.05", "ORGDIR_BACKOFF_MAX_SECONDS": "0.5",
         "ORGDIR_DELIVERY_TIMEOUT_SECONDS": "5"},
    ),
}
DEAD_QUEUES = ["orgunits.registry", "registry.orgunits", "access-rights.org", "notifier.all"]


def uid() -> str:
    return str(uuid.uuid4())








@contextlib.asynccontextmanager
async def stack(ns: str, amqp_url: str, mongodb_url: str) -> AsyncIterator[dict[str, Replicas]]:
    async with contextlib.AsyncExitStack() as es:
        out: dict[str, Replicas] = {}
        for service, (package, env) in SERVICES.items():
            settings = settings_for(Settings, ns=ns, service=service, amqp_url=amqp_url, mongodb_url=mongodb_url)
            env = {**env, "ORGDIR_RELAY_SWEEP_SECONDS": "1"}
            procs = [ServiceProcess(package, settings, env=env) for _ in range(2)]
            await asyncio.gather(*(p.start() for p in procs))
            for p in procs:
                es.callback(p.stop)
            out[service] = Replicas(procs)
            es.push_async_callback(out[service].close)
        yield out


@pytest.mark.slow
async def test_two_replicas_each_killed_once_end_in_the_single_replica_state(
    ns: str, amqp_url: str, mongodb_url: str, peers: tuple[Receiver, ScimServer]
) -> None:
    receiver, scim = peers
    today = date.today()
    always = {"from": "2020-01-01", "to": None}
    async with stack(ns, amqp_url, mongodb_url) as s:
        org, reg, acc, notif = s["orgunits"], s["registry"], s["access-rights"], s["notifier"]
        await ok(notif.next().post("/api/v1/subscriptions", json={
            "kind": "webhook", "name": "HR-portal", "url": receiver.url, "secret": receiver.secret,
            "event_types": ["person.*", "engagement.*", "access.*", "account.*"]}))

        # Catalogue: one system; "Skoleintra" held in school A only, "Fællesdrev" in the whole municipality.
        ad, intra, drev = uid(), uid(), uid()
        await ok(acc.next().put(f"/api/v1/it-systems/{ad}", json={
            "validity": always, "user_key": "AD", "name": "Active Directory",
            "username_rule": "{given:3}{surname:3}", "offboarding": "disable", "grace_days": 0}))
        for role, name in ((intra, "Skoleintra"), (drev, "Fællesdrev")):
            await ok(acc.next().put(f"/api/v1/roles/{role}", json={
                "validity": always, "it_system": ad, "name": name, "sensitive": False}))
        await ok(notif.next().post("/api/v1/subscriptions", json={
            "kind": "scim", "name": "AD via SCIM", "url": scim.url, "token": scim.token, "it_system": ad}))

        kommune, skole_a, skole_b = uid(), uid(), uid()
        classes = {"unit_type": class_uuid("unit_type", "forvaltning"),
                   "unit_level": class_uuid("unit_level", "kommune")}
        for unit, key, parent in ((kommune, "K", None), (skole_a, "K-A", kommune), (skole_b, "K-B", kommune)):
            await ok(org.next().put(f"/api/v1/orgunits/{unit}", json={
                "user_key": key, "name": f"Enhed {key}", "parent": parent, "validity": {"from": "2020-01-01"},
                **classes}))

        async def assign(role: str, unit: str, inherit: bool) -> bool:
            r = await acc.next().put(f"/api/v1/assignments/{uid()}", json={
                "validity": always, "role": role, "unit": unit, "inherit": inherit})
            return r.status_code in (200, 201)

        await eventually(lambda: assign(intra, skole_a, False))
        await eventually(lambda: assign(drev, kommune, True))

        # Onboarding: six people hired into school A through both registry replicas.
        people = [uid() for _ in range(PEOPLE)]
        jobs = {p: uid() for p in people}
        surnames = ["Hansen", "Jensen", "Nielsen", "Larsen", "Olsen", "Berg"]
        for i, person in enumerate(people):
            await ok(reg.next().put(f"/api/v1/persons/{person}", json={
                "given_name": f"Ane{chr(97 + i)}", "surname": surnames[i], "validity": {"from": "1990-01-01"}}))

        async def hire(person: str) -> bool:
            r = await reg.next().put(f"/api/v1/engagements/{jobs[person]}", json={
                "person": person, "unit": skole_a, "primary": True,
                "job_function": class_uuid("job_function", "paedagog"),
                "engagement_type": class_uuid("engagement_type", "ansat"),
                "validity": {"from": (today - timedelta(days=1)).isoformat()}})
            assert r.status_code in (200, 201, 422), r.text
            return r.status_code in (200, 201)

        for person in people[:3]:
            await eventually(lambda person=person: hire(person))
        # One replica of every service dies mid-flow, without a chance to flush anything.
        for replicas in s.values():
            replicas.procs[0].kill()
        for person in people[3:]:
            await eventually(lambda person=person: hire(person))
        await asyncio.gather(*(r.procs[0].start() for r in s.values()))

        async def rights(person: str, via: int) -> list[str]:
            r = await acc.clients[via].get(f"/api/v1/persons/{person}/rights")
            if r.status_code != 200:
                return []
            body = r.json()
            return sorted(x["role"] for x in body.get("rights", body.get("items", [])))

        for person in people:
            await eventually(lambda person=person: _equal(rights(person, 0), rights(person, 1), sorted([intra, drev])),
                             within=60)

        # A move: three people to school B (they lose Skoleintra, keep Fællesdrev); offboarding: three leave.
        moved, leaving = people[:3], people[3:]
        for person in moved:
            await ok(reg.next().patch(f"/api/v1/engagements/{jobs[person]}", json={
                "unit": skole_b, "validity": {"from": today.isoformat()}}))
        for person in leaving:
            await ok(reg.next().post(f"/api/v1/engagements/{jobs[person]}/terminate",
                                     json={"to": today.isoformat()}))

        for person in moved:
            await eventually(lambda person=person: _equal(rights(person, 0), rights(person, 1), [drev]), within=60)
        for person in leaving:
            await eventually(lambda person=person: _equal(rights(person, 0), rights(person, 1), []), within=60)

        # Every acknowledged write reads back through both replicas of its owner.
        for client in reg.clients:
            for person in moved:
                body = await ok(client.get(f"/api/v1/engagements/{jobs[person]}", params={"at": today.isoformat()}))
                assert body["unit"] == skole_b, body
            for person in leaving:
                r = await client.get(f"/api/v1/engagements/{jobs[person]}", params={"at": today.isoformat()})
                assert r.status_code == 404 and r.json()["type"].endswith("not-in-force"), r.text

        # Downstream: SCIM users of the movers active in Fællesdrev only; leavers inactive.
        usernames = {}
        for person in people:
            account = await eventually(lambda person=person: [
                e for e in receiver.got if e["type"] == "account.requested" and e["data"].get("person") == person])
            usernames[person] = account[0]["data"]["username"]
        assert len(set(usernames.values())) == PEOPLE, usernames

        async def scim_state() -> bool:
            groups = {g["displayName"]: {m["value"] for m in g.get("members", [])}
                      for g in scim.get("/Groups").get("Resources", [])}
            for person in people:
                user = scim.user(usernames[person])
                if user is None:
                    return False
                want_active = person in moved
                if user["active"] is not want_active:
                    return False
                in_intra = user["id"] in groups.get("Skoleintra", set())
                in_drev = user["id"] in groups.get("Fællesdrev", set())
                if in_intra or in_drev != want_active:
                    return False
            return True

        await eventually(scim_state, within=90)

        # Webhooks: valid signatures, each delivery once in effect, every stream in sequence order.
        assert receiver.bad_signatures == 0, receiver.refusals
        for subject in {e["subject"] for e in receiver.got}:
            for aggregate in {e["type"].split(".")[0] for e in receiver.got if e["subject"] == subject}:
                seqs = [e["sequence"] for e in receiver.got
                        if e["subject"] == subject and e["type"].split(".")[0] == aggregate]
                assert seqs == sorted(seqs), (subject, aggregate, seqs)
        def effects(kind: str, person: str) -> list[str]:
            """Roles granted or revoked, one entry per distinct event (a redelivery has the same id)."""
            unique = {e["id"]: e for e in receiver.got if e["type"] == kind and e["subject"] == person}
            return sorted(e["data"]["role"] for e in unique.values())

        # A killed replica's deliveries go out once their lease runs out (seconds): the SCIM peer,
        # sent to in parallel, can be in its final state before the receiver has every grant.
        def seen() -> str:
            """What the receiver has per person, for a failure to be read."""
            names = {intra: "Skoleintra", drev: "Fællesdrev"}
            return "; ".join(
                f"{'moved' if p in moved else 'left'} {p[:8]}: granted "
                f"{[names[r] for r in effects('access.granted', p)]} revoked "
                f"{[names[r] for r in effects('access.revoked', p)]}" for p in people
            ) + f"; cut requests {receiver.cut}"

        try:
            await eventually(lambda: all(effects("access.granted", p) == sorted([intra, drev]) for p in people),
                             within=60)
            await eventually(lambda: all(effects("access.revoked", p) == sorted([intra, drev]) for p in leaving)
                             and all(effects("access.revoked", p) == [intra] for p in moved), within=60)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {seen()}") from exc
        for person in people:
            assert effects("access.granted", person) == sorted([intra, drev]), person
        for person in moved:
            assert effects("access.revoked", person) == [intra], person
        for person in leaving:
            assert effects("access.revoked", person) == sorted([intra, drev]), person

        # Nothing dead-lettered anywhere.
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            for queue in DEAD_QUEUES:
                q = await channel.declare_queue(f"{ns}.{queue}.dead", passive=True)
                assert q.declaration_result.message_count == 0, queue


async def _equal(a: Any, b: Any, want: list[str]) -> bool:
    first, second = await a, await b
    return first == second == want

