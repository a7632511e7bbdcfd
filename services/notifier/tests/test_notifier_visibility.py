"""Address visibility downstream (issue #17): a target gets only the addresses its subscription allows.

Real broker, database, webhook receivers and scim2-server. The events on the
broker carry every address; the notifier cuts each payload to the
subscription's ``visibility`` (default ``internal``).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from notifier import domain
from notifier.app import create_app
from orgdir.events import new_event
from orgdir_tools.testkit import READER, SECRET_READER, RunningApp, eventually
from orgdir_tools.testpeers import new_secret

SECRET_PHONE = "+45 2233 4455"
INTERNAL_PHONE = "+45 8940 1000"
PUBLIC_MAIL = "hh@kommune.dk"
SECRET_UNIT_PHONE = "+45 7000 0001"


def always(**fields: Any) -> list[dict[str, Any]]:
    return [{"validity": {"from": "2020-01-01", "to": None}, **fields}]


def uid() -> str:
    return str(uuid.uuid4())


def test_redact_is_a_pure_cut_of_addresses() -> None:
    levels = {"pub": "offentlig", "sec": "hemmelig"}
    event = new_event(
        service="test",
        type="person.updated",
        subject="p",
        sequence=2,
        data={
            "uuid": "p",
            "has_cpr": True,
            "timeline": always(
                given_name="A",
                addresses=[
                    {"scope": "email", "value": "a@x.dk", "visibility": "pub"},
                    {"scope": "phone", "value": "1"},
                    {"scope": "phone", "value": "2", "visibility": "sec"},
                    {"scope": "phone", "value": "3", "visibility": "not-known"},
                ],
            ),
        },
    )

    def values(e: Any) -> list[str]:
        return [a["value"] for a in e.data["timeline"][0]["addresses"]]

    assert values(domain.redact(event, "public", levels.get)) == ["a@x.dk"]
    internal = domain.redact(event, "internal", levels.get)
    assert values(internal) == ["a@x.dk", "1"] and internal.data["has_cpr"] is True
    assert internal.id == event.id and internal.sequence == event.sequence  # the same event, cut
    assert domain.redact(event, "secret", levels.get) is event
    assert values(event) == ["a@x.dk", "1", "2", "3"]  # the original is left as it was
    assert domain.ceiling_of({}) == "internal" and domain.ceiling_of({"visibility": "secret"}) == "secret"
    assert domain.unprojected_classes(event, {"pub", "sec"}.__contains__) == {"not-known"}
    assert domain.unprojected_classes(event, lambda c: True) == set()


async def test_secret_phone_reaches_only_targets_allowed_to_see_it(
    make_settings, receiver, publisher, scim_server
) -> None:
    s = new_secret()
    default_rcv, secret_rcv, public_rcv = receiver(s), receiver(s), receiver(s)
    it, person, unit, acc = uid(), uid(), uid(), uid()
    async with RunningApp(create_app(make_settings())) as app:
        http = app.http

        async def subscribe(**body: Any) -> dict[str, Any]:
            r = await http.post("/api/v1/subscriptions", json=body)
            assert r.status_code == 201, r.text
            return dict(r.json())

        hook = {"kind": "webhook", "secret": s, "event_types": ["person.*", "orgunit.*"]}
        default = await subscribe(name="default", url=default_rcv.url, **hook)
        assert default["visibility"] == "internal"  # never secret unless an admin says so
        allowed = await subscribe(name="secret", url=secret_rcv.url, visibility="secret", **hook)
        await subscribe(name="public", url=public_rcv.url, visibility="public", **hook)
        scim = await subscribe(
            kind="scim", name="AD", url=scim_server.url, token=scim_server.token, it_system=it
        )
        assert scim["visibility"] == "internal"
        bad = await http.post(
            "/api/v1/subscriptions", json={"name": "x", "url": default_rcv.url, "visibility": "top"}
        )
        assert bad.status_code == 422

        vis = {key: uid() for key in ("offentlig", "intern", "hemmelig")}
        addresses = [
            {"scope": "email", "value": PUBLIC_MAIL, "visibility": vis["offentlig"]},
            {"scope": "phone", "value": INTERNAL_PHONE},
            {"scope": "phone", "value": SECRET_PHONE, "visibility": vis["hemmelig"]},
        ]
        await publisher.publish(
            "person.created",
            person,
            {"timeline": always(given_name="Hemmelig", surname="Hansen", addresses=addresses)},
        )
        unit_addresses = [
            {"scope": "phone", "value": SECRET_UNIT_PHONE, "address_type": uid(), "visibility": vis["hemmelig"]}
        ]
        await publisher.publish(
            "orgunit.created", unit, {"timeline": always(user_key="K", name="Krisecenter", addresses=unit_addresses)}
        )
        # The classes' events come after the addresses naming them (they come from another
        # service and may cross): the deliveries wait for them rather than cut the addresses.
        for key, cls in vis.items():
            await publisher.publish(
                "class.created",
                cls,
                {"facet": "visibility", "facet_uuid": uid(), "timeline": always(user_key=key, name=key)},
            )

        def got(rcv: Any) -> str:
            return json.dumps(rcv.got)

        await eventually(lambda: all(len(r.got) == 2 for r in (default_rcv, secret_rcv, public_rcv)))
        assert SECRET_PHONE in got(secret_rcv) and SECRET_UNIT_PHONE in got(secret_rcv)
        assert INTERNAL_PHONE in got(default_rcv) and PUBLIC_MAIL in got(default_rcv)
        assert SECRET_PHONE not in got(default_rcv) and SECRET_UNIT_PHONE not in got(default_rcv)
        assert PUBLIC_MAIL in got(public_rcv) and INTERNAL_PHONE not in got(public_rcv)
        assert SECRET_PHONE not in got(public_rcv)

        # The delivery log of the secret target shows the number only to orgdir:read:secret.
        event_id = secret_rcv.of_subject(person)[0]["id"]
        did = f"{allowed['uuid']}:{event_id}"
        as_reader = await http.get(f"/api/v1/deliveries/{did}", headers=READER)
        as_secret = await http.get(f"/api/v1/deliveries/{did}", headers=SECRET_READER)
        assert as_reader.status_code == as_secret.status_code == 200, as_reader.text
        assert SECRET_PHONE not in as_reader.text and INTERNAL_PHONE in as_reader.text
        assert SECRET_PHONE in as_secret.text
        default_log = await http.get(f"/api/v1/deliveries/{default['uuid']}:{event_id}", headers=SECRET_READER)
        assert default_log.status_code == 200 and SECRET_PHONE not in default_log.text  # never stored there

        # SCIM: the User gets the e-mail and the internal phone, not the secret one ...
        await publisher.publish(
            "account.requested",
            acc,
            {"person": person, "it_system": it, "username": "hemhan", "status": "requested"},
        )
        user = await eventually(lambda: scim_server.user("hemhan"))
        assert [e["value"] for e in user["emails"]] == [PUBLIC_MAIL]
        assert [p["value"] for p in user["phoneNumbers"]] == [INTERNAL_PHONE]
        assert SECRET_PHONE not in json.dumps(user)

        # ... until an admin allows the target secrets: then the next sync carries it.
        r = await http.patch(f"/api/v1/subscriptions/{scim['uuid']}", json={"visibility": "secret"})
        assert r.status_code == 200 and r.json()["visibility"] == "secret", r.text
        await publisher.publish(
            "person.updated",
            person,
            {"timeline": always(given_name="Hemmelig", surname="Hansen", nickname="HH", addresses=addresses)},
        )

        def phones() -> list[str]:
            u = scim_server.user("hemhan") or {}
            return [p["value"] for p in u.get("phoneNumbers", [])]

        await eventually(lambda: phones() == [INTERNAL_PHONE, SECRET_PHONE])
