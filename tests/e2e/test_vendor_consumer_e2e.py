"""The vendor kit end to end: a consumer rendered from templates/consumer, bootstrapped by refresh.

Render ``vendor-ad`` into a temporary folder, run its own tests, start it as a
process once the four services already hold persons and rights, refresh its
queue on registry and access-rights: it then holds exactly their current
persons and rights. A second refresh changes nothing in it, and another
consumer's queue received nothing from either.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from access_rights.app import create_app as access_app
from access_rights.settings import AccessRightsSettings
from notifier.app import create_app as notifier_app
from notifier.settings import NotifierSettings
from orgdir.bus import declare_consumer_queue
from orgdir.settings import Settings
from orgdir.store import connect
from orgdir_tools.template import render
from orgdir_tools.testkit import RunningApp, ServiceProcess, eventually, settings_for
from orgunits.app import create_app as orgunits_app
from orgunits.settings import OrgunitsSettings
from orgunits.vocabulary import class_uuid
from registry.app import create_app as registry_app
from registry.settings import RegistrySettings

from .conftest import ok

AUTH_ENV = {"ORGDIR_AUTH_MODE": "static", "ORGDIR_ALLOW_STATIC_TOKENS": "true"}


def uid() -> str:
    return str(uuid.uuid4())


async def run_rendered_tests(project: Path, amqp_url: str, mongodb_url: str) -> None:
    """The rendered project's own pytest run, with this workspace's venv, against this session's servers."""
    env = {**os.environ, **AUTH_ENV, "AMQP_URL": amqp_url, "MONGODB_URL": mongodb_url, "PYTHONPATH": str(project)}
    result = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "1 passed" in result.stdout, result.stdout[-2000:]


@pytest.mark.slow
async def test_rendered_consumer_is_bootstrapped_by_refresh_of_its_queue_only(
    ns: str, amqp_url: str, mongodb_url: str, tmp_path: Path
) -> None:
    project = tmp_path / "vendor-ad"
    render("consumer", "vendor-ad", project)
    assert (project / "vendor_ad" / "consumers.py").is_file() and (project / "Dockerfile").is_file()
    await run_rendered_tests(project, amqp_url, mongodb_url)

    def conf(cls: type[Settings], service: str, **kw: Any) -> Any:
        return settings_for(cls, ns=ns, service=service, amqp_url=amqp_url, mongodb_url=mongodb_url,
                            declare_topology=True, **kw)

    async with contextlib.AsyncExitStack() as stack:
        notifier = await stack.enter_async_context(RunningApp(notifier_app(conf(NotifierSettings, "notifier"))))
        access = await stack.enter_async_context(RunningApp(access_app(conf(AccessRightsSettings, "access-rights"))))
        registry = await stack.enter_async_context(RunningApp(registry_app(conf(RegistrySettings, "registry"))))
        orgunits = await stack.enter_async_context(RunningApp(orgunits_app(conf(OrgunitsSettings, "orgunits"))))

        # Data first: a unit whose subtree holds a role, two people engaged there (one also with a direct
        # role), and one person with no engagement and no rights.
        always = {"from": "2020-01-01", "to": None}
        ad, staff, admin = uid(), uid(), uid()
        await ok(access.http.put(f"/api/v1/it-systems/{ad}", json={"validity": always, "user_key": "AD",
                                                                   "name": "Active Directory"}))
        await ok(access.http.put(f"/api/v1/roles/{staff}", json={"validity": always, "it_system": ad,
                                                                 "name": "Medarbejder"}))
        await ok(access.http.put(f"/api/v1/roles/{admin}", json={"validity": always, "it_system": ad,
                                                                 "name": "Administrator"}))
        unit = uid()
        await ok(orgunits.http.put(f"/api/v1/orgunits/{unit}", json={
            "user_key": "VK", "name": "Vendorrup Kommune", "parent": None, "validity": {"from": "2020-01-01"},
            "unit_type": class_uuid("unit_type", "forvaltning"), "unit_level": class_uuid("unit_level", "kommune")}))

        async def assign() -> bool:
            r = await access.http.put(f"/api/v1/assignments/{uid()}", json={
                "validity": always, "role": staff, "unit": unit, "inherit": True})
            return r.status_code in (200, 201)

        await eventually(assign)
        persons = {name: uid() for name in ("Anne", "Bo", "Carl")}
        for name, p in persons.items():
            await ok(registry.http.put(f"/api/v1/persons/{p}", json={
                "given_name": name, "surname": "Vendorsen", "validity": {"from": "1990-01-01"}}))

        async def assign_anne() -> bool:  # once access-rights has seen Anne (from registry's events)
            r = await access.http.put(f"/api/v1/assignments/{anne_assignment}", json={
                "validity": always, "role": admin, "person": persons["Anne"]})
            return r.status_code in (200, 201)

        anne_assignment = uid()
        await eventually(assign_anne)
        for name in ("Anne", "Bo"):
            engagement = {"person": persons[name], "unit": unit, "primary": True,
                          "job_function": class_uuid("job_function", "paedagog"),
                          "engagement_type": class_uuid("engagement_type", "ansat"),
                          "validity": {"from": "2021-01-01"}}

            async def hire(body: dict[str, Any] = engagement) -> bool:
                r = await registry.http.put(f"/api/v1/engagements/{uid()}", json=body)
                assert r.status_code in (200, 201, 422), r.text
                return r.status_code in (200, 201)

            await eventually(hire)
        await ok(registry.http.patch(f"/api/v1/persons/{persons['Bo']}", json={"nickname": "Bosse"}))

        async def roles_in_access(person: str) -> set[str]:
            r = await access.http.get(f"/api/v1/persons/{person}/rights", params={"history": "true"})
            return {x["role"] for x in r.json()["rights"]} if r.status_code == 200 else set()

        expected_rights = {persons["Anne"]: {staff, admin}, persons["Bo"]: {staff}}  # Carl: none, never had any

        async def rights_settled() -> bool:
            return all([await roles_in_access(p) == expected_rights.get(p, set()) for p in persons.values()])

        await eventually(rights_settled)
        for app in (orgunits, registry, access, notifier):
            await app.settle()

        # Another consumer's queue, bound to the same events, declared once everything is published.
        conn = await aio_pika.connect(amqp_url)
        stack.push_async_callback(conn.close)
        channel = await conn.channel()
        other = await declare_consumer_queue(channel, f"{ns}.events", f"{ns}.other.events", ["person.*", "access.*"], 5)
        await other.purge()

        # The vendor's consumer starts now: its queue is new, so it has seen nothing yet.
        settings = settings_for(Settings, ns=ns, service="vendor-ad", amqp_url=amqp_url, mongodb_url=mongodb_url)
        consumer = ServiceProcess("vendor_ad", settings, env={**AUTH_ENV, "PYTHONPATH": str(project)})
        await stack.enter_async_context(consumer)
        client = connect(mongodb_url)
        stack.push_async_callback(client.close)
        db = client[settings.database_name]
        assert await db.persons.count_documents({}) == 0 and await db.rights.count_documents({}) == 0
        queue = f"{ns}.vendor-ad.events"

        async def refresh_all() -> list[dict[str, Any]]:
            jobs = []
            for app, body in ((registry, {"queue": queue}), (access, {"queue": queue, "event_types": ["access.*"]})):
                r = await app.http.post("/api/v1/refresh", json=body)
                assert r.status_code == 202, r.text

                async def done(app: RunningApp = app, location: str = r.headers["location"]) -> dict[str, Any] | None:
                    job: dict[str, Any] = (await app.http.get(location)).json()
                    return job if job["state"] == "completed" else None

                jobs.append(await eventually(done))
            ids = {j["id"] for j in jobs}

            async def markers_handled() -> bool:
                return await db.refreshes.count_documents({"_id": {"$in": list(ids)}}) == 2

            await eventually(markers_handled)
            return jobs

        async def consumer_matches_services() -> bool:
            held = {d["_id"]: d["sequence"] async for d in db.persons.find()}
            versions = {p: (await registry.http.get(f"/api/v1/persons/{p}")).json()["version"]
                        for p in persons.values()}
            rights = {d["_id"]: {r["role"] for r in d["rights"]} async for d in db.rights.find()}
            return held == versions and rights == expected_rights

        jobs = await refresh_all()
        reg_job, acc_job = jobs
        assert reg_job["published"] >= 5 and acc_job["published"] == 2  # persons + engagements; two rights sets
        await eventually(consumer_matches_services)
        snapshot = ([d async for d in db.persons.find().sort("_id")], [d async for d in db.rights.find().sort("_id")])

        # Again: every event is stale for it now, so nothing changes (not even applied_at).
        await refresh_all()
        await asyncio.sleep(0.5)
        assert ([d async for d in db.persons.find().sort("_id")], [d async for d in db.rights.find().sort("_id")]) \
            == snapshot
        assert await consumer_matches_services()

        # The other consumer's queue got nothing from either refresh.
        depth = (await channel.declare_queue(f"{ns}.other.events", passive=True)).declaration_result.message_count
        assert depth == 0
