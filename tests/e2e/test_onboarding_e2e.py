"""All four services on real RabbitMQ and a MongoDB-wire server, with a real webhook receiver and scim2-server.

Create a unit, give it a role, hire a person into it: access-rights grants the role and requests
an account, the notifier delivers the events in order with valid signatures and provisions the
SCIM user into the role's group; end the engagement: the right is revoked and the SCIM user
becomes inactive. Only HTTP APIs and events connect the services.
"""

from __future__ import annotations

import contextlib
import uuid
from datetime import date, timedelta
from typing import Any

import pytest

from access_rights.app import create_app as access_app
from access_rights.settings import AccessRightsSettings
from notifier.app import create_app as notifier_app
from notifier.settings import NotifierSettings
from orgdir.settings import Settings
from orgdir_tools.testkit import RunningApp, eventually, settings_for
from orgdir_tools.testpeers import Receiver, ScimServer
from orgunits.app import create_app as orgunits_app
from orgunits.settings import OrgunitsSettings
from orgunits.vocabulary import class_uuid
from registry.app import create_app as registry_app
from registry.settings import RegistrySettings

from .conftest import ok


def uid() -> str:
    return str(uuid.uuid4())








@pytest.mark.slow
async def test_hire_grants_role_provisions_scim_and_offboarding_deactivates(
    ns: str, amqp_url: str, mongodb_url: str, peers: tuple[Receiver, ScimServer]
) -> None:
    receiver, scim = peers

    def conf(cls: type[Settings], service: str, **kw: Any) -> Any:
        return settings_for(cls, ns=ns, service=service, amqp_url=amqp_url, mongodb_url=mongodb_url,
                            declare_topology=True, **kw)

    today = date.today()
    async with contextlib.AsyncExitStack() as stack:
        # Consumers first, so nothing any service publishes at start (seeded vocabulary) is missed;
        # the topology declaration makes the order irrelevant, this just mirrors a real rollout.
        notifier = await stack.enter_async_context(RunningApp(notifier_app(conf(
            NotifierSettings, "notifier", backoff_base_seconds=0.05, backoff_max_seconds=0.5,
            delivery_timeout_seconds=5.0))))
        access = await stack.enter_async_context(RunningApp(access_app(conf(AccessRightsSettings, "access-rights"))))
        registry = await stack.enter_async_context(RunningApp(registry_app(conf(RegistrySettings, "registry"))))
        orgunits = await stack.enter_async_context(RunningApp(orgunits_app(conf(OrgunitsSettings, "orgunits"))))

        # Downstream systems subscribe.
        await ok(notifier.http.post("/api/v1/subscriptions", json={
            "kind": "webhook", "name": "HR-portal", "url": receiver.url, "secret": receiver.secret,
            "event_types": ["orgunit.*", "person.*", "engagement.*", "access.*", "account.*"]}))

        # The catalogue: an IT system (accounts disabled at once on offboarding) and a role.
        ad, role = uid(), uid()
        always = {"from": "2020-01-01", "to": None}
        await ok(access.http.put(f"/api/v1/it-systems/{ad}", json={
            "validity": always, "user_key": "AD", "name": "Active Directory",
            "username_rule": "{given:3}{surname:3}", "offboarding": "disable", "grace_days": 0}))
        await ok(access.http.put(f"/api/v1/roles/{role}", json={
            "validity": always, "it_system": ad, "name": "Fællesdrev", "sensitive": False}))
        await ok(notifier.http.post("/api/v1/subscriptions", json={
            "kind": "scim", "name": "AD via SCIM", "url": scim.url, "token": scim.token, "it_system": ad}))

        # The organisation: a municipality with a school.
        kommune, skole = uid(), uid()
        unit_classes = {"unit_type": class_uuid("unit_type", "forvaltning"),
                        "unit_level": class_uuid("unit_level", "kommune")}
        await ok(orgunits.http.put(f"/api/v1/orgunits/{kommune}", json={
            "user_key": "E2E", "name": "Testrup Kommune", "parent": None, "validity": {"from": "2020-01-01"},
            **unit_classes}))
        await ok(orgunits.http.put(f"/api/v1/orgunits/{skole}", json={
            "user_key": "E2E-SKOLE", "name": "Åskolen", "parent": kommune, "validity": {"from": "2020-01-01"},
            **unit_classes}))

        # The school's whole subtree carries the role (access-rights learns the unit from events).
        async def assign() -> bool:
            r = await access.http.put(f"/api/v1/assignments/{uid()}", json={
                "validity": always, "role": role, "unit": kommune, "inherit": True})
            return r.status_code in (200, 201)

        await eventually(assign)

        # HR hires Anne into the school from yesterday (registry learns units and classes from events).
        anne, job = uid(), uid()
        await ok(registry.http.put(f"/api/v1/persons/{anne}", json={
            "given_name": "Anne", "surname": "Jørgensen", "validity": {"from": "1990-01-01"},
            "addresses": [{"scope": "email", "value": "anne.joergensen@testrup.dk"}]}))
        engagement = {"person": anne, "unit": skole, "primary": True,
                      "job_function": class_uuid("job_function", "paedagog"),
                      "engagement_type": class_uuid("engagement_type", "ansat"),
                      "validity": {"from": (today - timedelta(days=1)).isoformat()}}

        async def hire() -> bool:
            r = await registry.http.put(f"/api/v1/engagements/{job}", json=engagement)
            assert r.status_code in (200, 201, 422), r.text
            return r.status_code in (200, 201)

        await eventually(hire)

        # Onboarding happened by itself: the right, the account, the webhook, the SCIM user in the group.
        rights = await eventually(lambda: _rights(access, anne))
        assert [r["role"] for r in rights] == [role]

        def delivered(kind: str) -> list[dict[str, Any]]:
            return [e for e in receiver.got if e["type"] == kind and e["subject"] == anne]

        granted = (await eventually(lambda: delivered("access.granted")))[0]
        assert granted["data"]["role"] == role and granted["data"]["it_system"] == ad
        account = (await eventually(lambda: [e for e in receiver.got if e["type"] == "account.requested"]))[0]
        username = account["data"]["username"]
        assert username == "annjoe"
        assert receiver.bad_signatures == 0, receiver.refusals
        user = await eventually(lambda: scim.user(username))
        assert user["active"] is True and user["externalId"] == anne
        group = await eventually(lambda: _scim_group_with(scim, user["id"]))
        assert group["displayName"] == "Fællesdrev"

        # Every event of one subject arrived in sequence order.
        for subject in {e["subject"] for e in receiver.got}:
            stream = [(e["type"].split(".")[0], e["sequence"]) for e in receiver.got if e["subject"] == subject]
            for aggregate in {a for a, _ in stream}:
                seqs = [s for a, s in stream if a == aggregate]
                assert seqs == sorted(seqs), (subject, aggregate, seqs)

        # Offboarding: the engagement ends today; the right goes, the account is disabled downstream.
        await ok(registry.http.post(f"/api/v1/engagements/{job}/terminate", json={"to": today.isoformat()}))
        await eventually(lambda: delivered("access.revoked"))

        async def disabled() -> bool:
            await access.app.state.access.tick()
            return any(e["type"] == "account.disabled" for e in receiver.got)

        await eventually(disabled)
        inactive = await eventually(lambda: (u := scim.user(username)) and u["active"] is False and u)
        assert inactive["userName"] == username
        assert await _rights(access, anne) == []


async def _rights(access: RunningApp, person: str) -> list[dict[str, Any]]:
    r = await access.http.get(f"/api/v1/persons/{person}/rights")
    if r.status_code != 200:
        return []
    body = r.json()
    items: list[dict[str, Any]] = body.get("rights", body.get("items", []))
    return items



def _scim_group_with(scim: ScimServer, user_id: str) -> dict[str, Any] | None:
    for group in scim.get("/Groups").get("Resources", []):
        if any(m.get("value") == user_id for m in group.get("members", [])):
            found: dict[str, Any] = group
            return found
    return None
