"""Subscriptions API: validation, write-only secrets, idempotent PUT, If-Match, auth."""

from __future__ import annotations

import base64
import secrets
import uuid

from notifier.app import create_app
from orgdir_tools.testkit import READER, WRITER, RunningApp


def secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


async def test_subscription_crud_and_rules(make_settings) -> None:
    async with RunningApp(create_app(make_settings())) as app:
        http = app.http
        s = secret()
        body = {
            "name": "Lønsystem",
            "url": "http://127.0.0.1:9/hook",
            "event_types": ["person.*"],
            "secret": s,
        }
        r = await http.post("/api/v1/subscriptions", json=body)
        assert r.status_code == 201, r.text
        sub = r.json()
        assert sub["has_secret"] is True and "secret" not in sub and s not in r.text
        assert sub["kind"] == "webhook" and sub["version"] == 1 and r.headers["etag"] == '"1"'

        # PUT with a client uuid is idempotent; the secret may be omitted (kept)
        sid = str(uuid.uuid4())
        r1 = await http.put(f"/api/v1/subscriptions/{sid}", json=body)
        assert r1.status_code == 201
        r2 = await http.put(f"/api/v1/subscriptions/{sid}", json={**body, "secret": None})
        assert r2.status_code == 200 and r2.json()["version"] == 1
        r3 = await http.patch(
            f"/api/v1/subscriptions/{sid}", json={"active": False}, headers={"If-Match": '"1"'}
        )
        assert r3.status_code == 200 and r3.json()["version"] == 2 and r3.json()["active"] is False
        r4 = await http.patch(
            f"/api/v1/subscriptions/{sid}", json={"active": True}, headers={"If-Match": '"1"'}
        )
        assert r4.status_code == 412

        # rules, each naming what is wrong, nothing stored
        cases = [
            ({**body, "secret": "plain"}, "invalid-secret"),
            ({**body, "secret": None}, "secret-required"),
            ({**body, "event_types": ["nosuch.thing"]}, "unknown-event-type"),
            ({**body, "event_types": ["Person!"]}, "invalid-event-pattern"),
            ({**body, "event_types": []}, "event-types-required"),
            ({**body, "url": "ftp://x"}, "validation-error"),
        ]
        for bad, kind in cases:
            r = await http.post("/api/v1/subscriptions", json=bad)
            assert r.status_code == 422, (kind, r.text)
            assert r.json()["type"] == f"urn:orgdir:problem:{kind}"

        listed = (await http.get("/api/v1/subscriptions", params={"limit": 1})).json()
        assert len(listed["items"]) == 1 and listed["next_cursor"]
        rest = (
            await http.get("/api/v1/subscriptions", params={"cursor": listed["next_cursor"]})
        ).json()
        assert len(rest["items"]) == 1 and rest["next_cursor"] is None

        # scim kind: token is write-only, default event types
        r = await http.post(
            "/api/v1/subscriptions",
            json={"kind": "scim", "name": "AD", "url": "http://127.0.0.1:9/v2", "token": "t0p"},
        )
        assert r.status_code == 201 and r.json()["has_token"] and "t0p" not in r.text
        assert "account.*" in r.json()["event_types"]

        # auth: readers read, only admins write
        assert (await http.get("/api/v1/subscriptions", headers=READER)).status_code == 200
        assert (
            await http.post("/api/v1/subscriptions", json=body, headers=WRITER)
        ).status_code == 403
        # malformed parameters are 400s naming what is wrong; pages are 100 by default, at most 1000
        for path, params, kind in [
            ("/api/v1/deliveries", {"status": "nope"}, "invalid-status"),
            ("/api/v1/deliveries", {"subscription": "nope"}, "invalid-uuid"),
            ("/api/v1/subscriptions/nope", {}, "invalid-uuid"),
            ("/api/v1/subscriptions", {"cursor": "_w"}, "invalid-cursor"),
        ]:
            r = await http.get(path, params=params)
            assert r.status_code == 400 and r.json()["type"] == f"urn:orgdir:problem:{kind}", r.text
        r = await http.post(
            f"/api/v1/subscriptions/{sid}/replay", params={"since": "2020-01-01T00:00:00Z", "status": "pending"}
        )
        assert r.status_code == 400 and r.json()["type"] == "urn:orgdir:problem:invalid-status"
        r = await http.post(f"/api/v1/subscriptions/{sid}/replay", params={"since": "2020-01-01T00:00:00Z"})
        assert r.json() == {"subscription": sid, "replayed": 0}
        assert (await http.get("/api/v1/deliveries", params={"limit": 1000})).status_code == 200
        assert (await http.get("/api/v1/deliveries", params={"limit": 1001})).status_code == 422
        got = (await http.get(f"/api/v1/subscriptions/{sid}")).json()
        assert got["status"] == {"circuit": "closed", "consecutive_failures": 0, "in_flight": 0, "backlog": 0}
        assert (await http.delete(f"/api/v1/subscriptions/{sid}")).status_code == 204
        assert (await http.get(f"/api/v1/subscriptions/{sid}")).status_code == 404


async def test_demo_loads_idempotently(make_settings) -> None:
    from orgdir_tools.demo import notifier as demo

    async with RunningApp(create_app(make_settings())) as app:
        await demo.load(app.http)
        await demo.load(app.http)
        items = (await app.http.get("/api/v1/subscriptions")).json()["items"]
        assert len(items) == 4 and all(i["version"] == 1 for i in items)
        assert sorted(i["visibility"] for i in items) == ["internal", "internal", "public", "secret"]


async def test_openapi_documents_every_answer(make_settings) -> None:
    async with RunningApp(create_app(make_settings())) as app:
        doc = (await app.http.get("/api/v1/openapi.json")).json()
        put = doc["paths"]["/api/v1/subscriptions/{sid}"]["put"]
        assert {"200", "201", "400", "404", "409", "412", "422"} <= set(put["responses"])
        assert any(p["name"] == "If-Match" for p in put["parameters"])
        replay = doc["paths"]["/api/v1/deliveries/{did}/replay"]["post"]["responses"]
        assert "202" in replay and "409" in replay
        for path, item in doc["paths"].items():
            if not path.startswith(("/api/v1/subscriptions", "/api/v1/deliveries")):
                continue  # the shared operations are orgdir's
            for method, op in item.items():
                ok = [s for s in op["responses"] if s.startswith("2")]
                assert ok, (method, path)
                for s in ok:
                    if s != "204":
                        assert "$ref" in str(op["responses"][s]["content"]), (method, path, s)
