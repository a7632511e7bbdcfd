"""{{name}} against a real RabbitMQ and MongoDB-wire server (the orgdir_tools pytest plugin starts them).

Events are published as Orgdir's services publish them; the consumer must
store the newest state of each person and of each person's rights, and a
repeated or older event must change nothing.
"""

from __future__ import annotations

import uuid
from typing import Any

from orgdir.bus import Bus
from orgdir.events import new_event
from orgdir_tools.testkit import RunningApp, eventually, settings_for
from {{package}}.app import create_app
from {{package}}.settings import ConsumerSettings


def person(uid: str, version: int, given: str) -> dict[str, Any]:
    timeline = [{"validity": {"from": "2020-01-01", "to": None}, "given_name": given, "surname": "Hansen"}]
    return {"uuid": uid, "version": version, "timeline": timeline, "has_cpr": False}


def rights(uid: str, version: int, roles: list[str]) -> dict[str, Any]:
    held = [{"role": r, "it_system": "ad", "validity": {"from": "2020-01-01", "to": None},
             "reasons": [{"kind": "direct", "assignment": "a1"}]} for r in roles]
    return {"uuid": uid, "version": version, "person": uid, "rights": held}


async def test_stores_the_newest_person_and_rights_and_ignores_older_events(
    ns: str, amqp_url: str, mongodb_url: str
) -> None:
    settings = settings_for(ConsumerSettings, ns=ns, service="{{name}}", amqp_url=amqp_url, mongodb_url=mongodb_url)
    async with RunningApp(create_app(settings)) as app:
        assert (await app.http.get("/readyz")).status_code == 200
        publisher = Bus(settings.model_copy(update={"service_name": "registry"}))
        await publisher.connect()
        uid = str(uuid.uuid4())
        db = app.runtime.db

        async def send(type: str, sequence: int, data: dict[str, Any]) -> None:
            await publisher.publish(new_event(service="registry", type=type, subject=uid, sequence=sequence, data=data))

        await send("person.created", 1, person(uid, 1, "Anne"))
        await send("person.updated", 2, person(uid, 2, "Anna"))
        await send("access.current", 3, rights(uid, 3, ["r1", "r2"]))
        stored = await eventually(lambda: db.persons.find_one({"_id": uid, "sequence": 2}))
        assert stored["state"]["timeline"][0]["given_name"] == "Anna"
        held = await eventually(lambda: db.rights.find_one({"_id": uid, "sequence": 3}))
        assert [r["role"] for r in held["rights"]] == ["r1", "r2"]

        await send("person.created", 1, person(uid, 1, "Anne"))  # redelivered / reordered: older
        await send("person.updated", 3, person(uid, 3, "Annie"))  # a later one, to know the older was handled
        await eventually(lambda: db.persons.find_one({"_id": uid, "sequence": 3}))
        assert (await db.persons.find_one({"_id": uid}))["state"]["timeline"][0]["given_name"] == "Annie"
        metrics = (await app.http.get("/metrics")).text
        assert 'outcome="stale"' in metrics
        await publisher.close()
