"""Security acceptance (issue 16): safe defaults, OIDC checks, actors not secrets, data sealed at rest.

Real servers throughout: RabbitMQ and the MongoDB-wire server of the pytest
plugin, a real HTTP server for the identity provider's JWKS, real uvicorn for
the start-up refusal.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from access_rights.app import create_app as access_app
from access_rights.settings import AccessRightsSettings
from notifier.app import create_app as notifier_app
from notifier.settings import NotifierSettings
from orgdir import crypto, logs
from orgdir.logs import JsonFormatter
from orgdir.settings import Settings, StaticToken, UnsafeSettings
from orgdir.store import connect
from orgdir_tools.cli import uvicorn_command
from orgdir_tools.localservers import free_port
from orgdir_tools.logscan import LogScanner, find_leaks
from orgdir_tools.testkit import RunningApp, settings_for
from orgunits.app import create_app as orgunits_app
from orgunits.settings import OrgunitsSettings
from registry.app import create_app as registry_app
from registry.settings import RegistrySettings
from tests.platform import toy

APPS: list[tuple[str, Any, type[Settings]]] = [
    ("orgunits", orgunits_app, OrgunitsSettings),
    ("registry", registry_app, RegistrySettings),
    ("access-rights", access_app, AccessRightsSettings),
    ("notifier", notifier_app, NotifierSettings),
]
UNCONFIGURED = {"auth_mode": None, "allow_static_tokens": False}


def key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


# --------------------------------------------------------------------------------- safe defaults


@pytest.mark.parametrize(("service", "factory", "settings_cls"), APPS, ids=[a[0] for a in APPS])
async def test_each_app_refuses_to_start_without_auth_configuration(
    service: str, factory: Any, settings_cls: type[Settings], ns: str, amqp_url: str, mongodb_url: str
) -> None:
    base = {"ns": ns, "service": service, "amqp_url": amqp_url, "mongodb_url": mongodb_url}
    with pytest.raises(UnsafeSettings, match="ORGDIR_AUTH_MODE=oidc with ORGDIR_OIDC_ISSUER") as err:
        async with RunningApp(factory(settings_for(settings_cls, **base, **UNCONFIGURED))):
            pass
    # registry and notifier store sealed values: they need real keys too, the others do not
    seals = service in ("registry", "notifier")
    assert ("ORGDIR_ENCRYPTION_KEYS" in str(err.value)) == settings_cls.seals_data == seals
    # static tokens only with the explicit flag
    static = settings_for(settings_cls, **base, auth_mode="static", allow_static_tokens=False)
    with pytest.raises(UnsafeSettings, match="ORGDIR_ALLOW_STATIC_TOKENS=true"):
        async with RunningApp(factory(static)):
            pass


def test_a_started_process_without_configuration_exits_naming_the_settings(amqp_url: str, mongodb_url: str) -> None:
    """What the container image does when started with no ORGDIR_* configuration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORGDIR_")}
    env.update({"ORGDIR_AMQP_URL": amqp_url, "ORGDIR_MONGODB_URL": mongodb_url, "ORGDIR_SERVICE_NAME": "orgunits"})
    done = subprocess.run(
        uvicorn_command("orgunits", free_port()), env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode != 0
    assert "refuses to start" in done.stderr and "ORGDIR_AUTH_MODE" in done.stderr, done.stderr[-2000:]


def test_outside_static_mode_the_public_development_keys_are_refused() -> None:
    oidc: dict[str, Any] = {
        "auth_mode": "oidc",
        "oidc_issuer": "https://idp",
        "oidc_audience": "orgdir",
        "oidc_algorithms": ["RS256"],
    }
    problems = RegistrySettings(**oidc, encryption_keys={crypto.DEV_KEY_ID: crypto.DEV_KEY}).startup_problems()
    assert any("ORGDIR_CPR_HASH_KEY" in p for p in problems)
    assert any("public development key" in p for p in problems)
    good = RegistrySettings(**oidc, encryption_keys={"k1": key()}, cpr_hash_key=secrets.token_hex(32))
    assert good.startup_problems() == []
    no_algorithms = RegistrySettings(**{**oidc, "oidc_algorithms": []}, encryption_keys={"k1": key()})
    assert any("ORGDIR_OIDC_ALGORITHMS" in p for p in no_algorithms.startup_problems())
    assert any("HS256" in p for p in Settings(**{**oidc, "oidc_algorithms": ["HS256"]}).startup_problems())
    named_by_token = {"dev-x-12345": StaticToken(token="dev-x-12345", roles=["orgdir:read"])}
    assert any(
        "cannot be the token" in p
        for p in Settings(auth_mode="static", allow_static_tokens=True, static_tokens=named_by_token).startup_problems()
    )


async def test_static_mode_warns_in_readyz(ns: str, amqp_url: str, mongodb_url: str) -> None:
    settings = settings_for(Settings, ns=ns, service="toy", amqp_url=amqp_url, mongodb_url=mongodb_url)
    async with RunningApp(toy.create(settings)) as app:
        body = (await app.http.get("/readyz")).json()
        assert body["auth_mode"] == "static" and "static bearer tokens are enabled" in body["warnings"][0]


# --------------------------------------------------------------------------------- OIDC


class Idp:
    """A real HTTP server serving a JWKS whose keys the test changes (the IdP rotating keys)."""

    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.fetches = 0
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                idp.fetches += 1
                jwks = []
                for kid, k in idp.keys.items():
                    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(k.public_key()))
                    jwks.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
                body = json.dumps({"keys": jwks}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None: ...

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/certs"

    def add(self, kid: str) -> rsa.RSAPrivateKey:
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return self.keys[kid]


@pytest.fixture
def idp() -> Iterator[Idp]:
    server = Idp()
    yield server
    server.server.shutdown()


async def test_oidc_rejects_wrong_audience_issuer_expiry_and_unknown_keys(
    ns: str, amqp_url: str, mongodb_url: str, idp: Idp
) -> None:
    k1 = idp.add("k1")
    issuer = "https://idp.example/realms/kommune"
    settings = settings_for(
        Settings,
        ns=ns,
        service="toy",
        amqp_url=amqp_url,
        mongodb_url=mongodb_url,
        auth_mode="oidc",
        allow_static_tokens=False,
        oidc_jwks_url=idp.url,
        oidc_issuer=issuer,
        oidc_audience="orgdir",
        oidc_algorithms=["RS256"],
        oidc_leeway_seconds=5,
        jwks_min_refetch_seconds=0,
        encryption_keys={"k1": key()},
    )
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def bearer(signer: rsa.RSAPrivateKey = k1, kid: str = "k1", **over: Any) -> dict[str, str]:
        now = int(time.time())
        claims = {
            "sub": "3f1c-user",
            "azp": "portal",
            "iss": issuer,
            "aud": "orgdir",
            "iat": now,
            "exp": now + 300,
            "roles": ["orgdir:write"],
            **over,
        }
        claims = {k: v for k, v in claims.items() if v is not None}
        return {"Authorization": "Bearer " + jwt.encode(claims, signer, algorithm="RS256", headers={"kid": kid})}

    async with RunningApp(toy.create(settings), headers={}) as app:

        async def post(headers: dict[str, str]) -> httpx.Response:
            return await app.http.post("/api/v1/widgets", json={"name": "x"}, headers=headers)

        r = await post(bearer())
        assert r.status_code == 201, r.text
        history = await app.runtime.repositories["widgets"].history(r.json()["uuid"])
        assert history[0]["registered_by"] == "3f1c-user via portal"  # subject and client, never the token
        now = int(time.time())
        refused = {
            "wrong audience": bearer(aud="someone-else"),
            "wrong issuer": bearer(iss="https://evil.example"),
            "expired": bearer(exp=now - 60),
            "not yet valid": bearer(nbf=now + 600),
            "no expiry": bearer(exp=None),
            "unknown key": bearer(signer=stranger, kid="k9"),
            "known kid, other key": bearer(signer=stranger, kid="k1"),
            "unsigned": {
                "Authorization": "Bearer "
                + jwt.encode(
                    {"sub": "x", "iss": issuer, "aud": "orgdir", "exp": now + 60},
                    None,
                    algorithm="none",
                    headers={"kid": "k1"},
                )
            },
        }
        for why, headers in refused.items():
            r = await post(headers)
            assert r.status_code == 401, f"{why}: {r.status_code} {r.text}"
            assert r.json()["type"] == "urn:orgdir:problem:unauthorized"
        # The IdP rotates: a token under a new key id makes the service fetch the keys again.
        k2 = idp.add("k2")
        before = idp.fetches
        r = await post(bearer(signer=k2, kid="k2"))
        assert r.status_code == 201, r.text
        assert idp.fetches == before + 1
        r = await post(bearer(signer=k2, kid="k2"))  # cached now
        assert r.status_code == 201 and idp.fetches == before + 1


# ------------------------------------------------------------- actors, sealing at rest, rotation


def raw_text(docs: list[dict[str, Any]]) -> str:
    return json.dumps(docs, default=str)


async def raw_database(mongodb_url: str, database: str) -> str:
    """Every document of every collection, history and outbox included, as text."""
    client = connect(mongodb_url)
    try:
        db = client[database]
        out = []
        for name in await db.list_collection_names():
            out.append(raw_text([d async for d in db[name].find({})]))
        return "\n".join(out)
    finally:
        await client.close()


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter("test"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def app(self, factory: Any, settings: Settings) -> Any:
        """``factory(settings)``, then this handler on the root logger again (the app set up its logging)."""
        made = factory(settings)
        root = logging.getLogger()
        if self not in root.handlers:
            root.addHandler(self)
        root.setLevel(logging.DEBUG)
        return made


async def test_cpr_secrets_and_tokens_never_at_rest_nor_in_logs_and_keys_rotate(
    ns: str, amqp_url: str, mongodb_url: str
) -> None:
    token = "tok-" + secrets.token_urlsafe(24)
    birth_token, reader_token = "tok-" + secrets.token_urlsafe(24), "tok-" + secrets.token_urlsafe(24)
    cpr = "0505" + f"{secrets.randbelow(100):02d}" + "4" + f"{secrets.randbelow(1000):03d}"  # born 2000s
    webhook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    scim_token = "scim-" + secrets.token_urlsafe(24)
    old, new = key(), key()
    common: dict[str, Any] = {
        "ns": ns,
        "amqp_url": amqp_url,
        "mongodb_url": mongodb_url,
        "static_tokens": {
            "hr-system": StaticToken(token=token, roles=["orgdir:admin", "orgdir:read:cpr"]),
            "payroll": StaticToken(token=birth_token, roles=["orgdir:read:birthdate"]),
            "reader": StaticToken(token=reader_token, roles=["orgdir:read"]),
        },
    }
    headers = {"Authorization": f"Bearer {token}"}
    person = str(uuid.uuid4())
    captured = Captured()
    root = logging.getLogger()
    previous_level = root.level
    try:
        registry_v1 = settings_for(
            RegistrySettings, service="registry", **common, encryption_keys={"k1": old}, encryption_key_id="k1"
        )
        notifier_v1 = settings_for(
            NotifierSettings, service="notifier", **common, encryption_keys={"k1": old}, encryption_key_id="k1"
        )
        async with (
            RunningApp(captured.app(registry_app, registry_v1), headers) as reg,
            RunningApp(captured.app(notifier_app, notifier_v1), headers) as notif,
        ):
            body = {"given_name": "Sofie", "surname": "Hansen", "cpr": cpr, "validity": {"from": "2020-01-01"}}
            r = await reg.http.put(f"/api/v1/persons/{person}", json=body)
            assert r.status_code == 201, r.text
            body["surname"] = "Hansen-Berg"  # a second registration (history snapshot)
            assert (await reg.http.put(f"/api/v1/persons/{person}", json=body)).status_code == 200
            r = await reg.http.put(f"/api/v1/persons/{person}", json=body)  # same again: no new version
            assert r.status_code == 200 and r.json()["version"] == 2
            assert (await reg.http.get(f"/api/v1/persons/{person}")).json()["cpr"] == f"{cpr[:6]}-{cpr[6:]}"
            assert (await reg.http.get(f"/api/v1/persons/{person}/history")).json()["cpr"] == f"{cpr[:6]}-{cpr[6:]}"
            # masking: a reader sees nothing of the number, the birth-date role the birth date only
            url = f"/api/v1/persons/{person}"
            plain = (await reg.http.get(url, headers={"Authorization": f"Bearer {reader_token}"})).json()
            assert plain["cpr"] == "XXXXXX-XXXX" and plain["has_cpr"] is True
            birth = (await reg.http.get(url, headers={"Authorization": f"Bearer {birth_token}"})).json()
            assert birth["cpr"] == f"{cpr[:6]}-XXXX"
            audit = (await reg.http.get("/api/v1/audit", params={"person": person})).json()["items"]
            assert {(a["actor"], a["action"]) for a in audit} == {
                ("static:hr-system", "read-person"),
                ("static:payroll", "read-birthdate"),
            }
            hook = {
                "kind": "webhook",
                "name": "hook",
                "url": "http://127.0.0.1:9/hook",
                "event_types": ["person.*"],
                "secret": webhook_secret,
            }
            scim = {"kind": "scim", "name": "scim", "url": "http://127.0.0.1:9/scim", "token": scim_token}
            subs = []
            for sub in (hook, scim):
                r = await notif.http.post("/api/v1/subscriptions", json=sub)
                assert r.status_code == 201, r.text
                subs.append(r.json()["uuid"])
            await reg.settle()

        dumps = {
            "registry": await raw_database(mongodb_url, registry_v1.database_name),
            "notifier": await raw_database(mongodb_url, notifier_v1.database_name),
        }
        for where, text in dumps.items():
            for secret in (
                cpr,
                f"{cpr[:6]}-{cpr[6:]}",
                webhook_secret,
                webhook_secret.removeprefix("whsec_"),
                scim_token,
                token,
            ):
                assert secret not in text, f"{where} database holds {secret!r}"
        assert '"registered_by": "static:hr-system"' in dumps["registry"]
        assert dumps["registry"].count("enc1:k1:") >= 3  # the person and both history snapshots
        assert dumps["notifier"].count("enc1:k1:") == 2

        # Rotation: k2 becomes current (k1 still opens), rotate-keys re-encrypts everything.
        keys = {"k1": old, "k2": new}
        registry_v2 = registry_v1.model_copy(update={"encryption_keys": keys, "encryption_key_id": "k2"})
        notifier_v2 = notifier_v1.model_copy(update={"encryption_keys": keys, "encryption_key_id": "k2"})
        async with (
            RunningApp(captured.app(registry_app, registry_v2), headers) as reg,
            RunningApp(captured.app(notifier_app, notifier_v2), headers) as notif,
        ):
            for app in (reg, notif):
                r = await app.http.post("/api/v1/rotate-keys")
                assert r.status_code == 200 and r.json()["key_id"] == "k2" and r.json()["values"] >= 2, r.text
                again = (await app.http.post("/api/v1/rotate-keys")).json()
                assert again["values"] == 0  # idempotent
        # Only k2 now: everything still opens.
        registry_v3 = registry_v1.model_copy(update={"encryption_keys": {"k2": new}, "encryption_key_id": "k2"})
        notifier_v3 = notifier_v1.model_copy(update={"encryption_keys": {"k2": new}, "encryption_key_id": "k2"})
        async with (
            RunningApp(captured.app(registry_app, registry_v3), headers) as reg,
            RunningApp(captured.app(notifier_app, notifier_v3), headers) as notif,
        ):
            assert (await reg.http.get(f"/api/v1/persons/{person}")).json()["cpr"] == f"{cpr[:6]}-{cpr[6:]}"
            hist = await reg.runtime.repositories["persons"].history(person)
            assert all(reg.runtime.keyring.open(h["state"]["cpr"]) == cpr for h in hist)
            stored = await notif.app.state.notifier.subscriptions.get(subs[0])
            assert stored["secret"] == webhook_secret
            assert (await notif.app.state.notifier.subscriptions.get(subs[1]))["token"] == scim_token
        for settings in (registry_v3, notifier_v3):
            text = await raw_database(mongodb_url, settings.database_name)
            assert "enc1:k1:" not in text and "enc1:k2:" in text
    finally:
        root.removeHandler(captured)
        root.setLevel(previous_level)
    logged = "\n".join(captured.lines)
    assert captured.lines  # the capture saw the services' logs
    for secret in (cpr, f"{cpr[:6]}-{cpr[6:]}", webhook_secret, scim_token, token):
        assert secret not in logged, f"a log line holds {secret!r}"


async def test_rotate_keys_seals_what_an_older_version_stored_in_plaintext(
    ns: str, amqp_url: str, mongodb_url: str
) -> None:
    """The migration for an installation that stored CPR numbers and secrets before sealing existed."""
    cpr = "0202" + f"{secrets.randbelow(100):02d}" + "4" + f"{secrets.randbelow(1000):03d}"
    webhook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    common: dict[str, Any] = {
        "ns": ns,
        "amqp_url": amqp_url,
        "mongodb_url": mongodb_url,
        "encryption_keys": {"k1": key()},
        "encryption_key_id": "k1",
    }
    person = str(uuid.uuid4())
    registry_s = settings_for(RegistrySettings, service="registry", **common)
    notifier_s = settings_for(NotifierSettings, service="notifier", **common)
    client = connect(mongodb_url)
    try:
        async with RunningApp(registry_app(registry_s)) as reg, RunningApp(notifier_app(notifier_s)) as notif:
            body = {"given_name": "Ida", "surname": "Holm", "cpr": cpr, "validity": {"from": "2020-01-01"}}
            assert (await reg.http.put(f"/api/v1/persons/{person}", json=body)).status_code == 201
            hook = {
                "kind": "webhook",
                "name": "old",
                "url": "http://127.0.0.1:9/hook",
                "event_types": ["person.*"],
                "secret": webhook_secret,
            }
            r = await notif.http.post("/api/v1/subscriptions", json=hook)
            assert r.status_code == 201, r.text
            sub = r.json()["uuid"]
            # What an older version left: the same documents with the values in plaintext.
            persons = client[registry_s.database_name]["persons"]
            await persons.update_one({"_id": person}, {"$set": {"state.cpr": cpr, "registrations.0.state.cpr": cpr}})
            subs = client[notifier_s.database_name]["subscriptions"]
            await subs.update_one({"_id": sub}, {"$set": {"secret": webhook_secret}})
            assert cpr in await raw_database(mongodb_url, registry_s.database_name)
            assert (await reg.http.get(f"/api/v1/persons/{person}")).json()["cpr"] == f"{cpr[:6]}-{cpr[6:]}"

            rotated = {}
            for name, app in (("registry", reg), ("notifier", notif)):
                r = await app.http.post("/api/v1/rotate-keys")
                assert r.status_code == 200, r.text
                rotated[name] = r.json()["values"]
            assert rotated == {"registry": 2, "notifier": 1}  # state and history snapshot; the secret

            assert cpr not in await raw_database(mongodb_url, registry_s.database_name)
            assert webhook_secret not in await raw_database(mongodb_url, notifier_s.database_name)
            assert (await reg.http.get(f"/api/v1/persons/{person}")).json()["cpr"] == f"{cpr[:6]}-{cpr[6:]}"
            assert (await notif.app.state.notifier.subscriptions.get(sub))["secret"] == webhook_secret
    finally:
        await client.close()


# --------------------------------------------------------------------------------- bounds


async def test_oversized_bodies_get_413_problem_json(ns: str, amqp_url: str, mongodb_url: str) -> None:
    settings = settings_for(
        Settings, ns=ns, service="toy", amqp_url=amqp_url, mongodb_url=mongodb_url, max_body_bytes=4096
    )
    async with RunningApp(toy.create(settings)) as app:
        big = {"name": "x" * 5000}
        r = await app.http.post("/api/v1/widgets", json=big)
        assert r.status_code == 413 and r.json()["type"] == "urn:orgdir:problem:payload-too-large", r.text

        async def chunks() -> Any:  # no Content-Length: counted while read
            for _ in range(10):
                yield b"x" * 1000

        r = await app.http.post("/api/v1/widgets", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.headers["content-type"].startswith("application/problem+json")
        assert await app.runtime.db.widgets.count_documents({}) == 0
        assert (await app.http.post("/api/v1/widgets", json={"name": "fits"})).status_code == 201


# --------------------------------------------------------------------------------- logs


def test_the_session_log_scanner_finds_cpr_numbers_and_tokens_and_survives_reconfiguration() -> None:
    """The whole test run is scanned (``orgdir_tools.logscan``); this shows the scanner can fail."""
    assert find_leaks("created person 0505124321") and find_leaks("lookup cpr=050512-4321.")
    assert find_leaks("header Authorization: Bearer eyJhbGciOi.x.y") and find_leaks("token dev-admin used")
    quiet = (
        "static Bearer tokens at 1733072400.25 took 0.0505124321 s; "
        "id 1b4e28ba-2fa1-11d2-883f-b9a761bde3fb; 3213991234; static:admin"
    )
    assert find_leaks(quiet) == []
    scanner = LogScanner()
    root = logging.getLogger()
    session_scanners = [h for h in root.handlers if isinstance(h, LogScanner)]  # must not see these leaks
    for h in session_scanners:
        root.removeHandler(h)
    root.addHandler(scanner)
    try:
        logs.configure("test", "INFO")  # what every app does at start: replaces the root's handlers
        assert scanner in root.handlers
        logging.getLogger("orgdir.test").warning("cpr %s", "0505124321", extra={"auth": "Bearer abc.defgh1"})
        assert len(scanner.leaks) == 2
    finally:
        root.removeHandler(scanner)
        for h in session_scanners:
            root.addHandler(h)
    record = logging.LogRecord("x", logging.INFO, "", 0, "GET /persons?cpr=0505124321 Bearer abc.defgh1", None, None)
    line = JsonFormatter("test").format(record)
    assert "0505124321" not in line and "defgh1" not in line and "[cpr]" in line
