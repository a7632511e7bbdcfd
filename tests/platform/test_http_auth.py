"""HTTP conventions on a real app: problem JSON, auth modes (static and OIDC/JWKS), metrics."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from orgdir.settings import Settings
from orgdir_tools.testkit import READER, RunningApp, settings_for
from tests.platform import toy


async def test_problem_json_for_auth_and_validation(ns: str, amqp_url: str, mongodb_url: str) -> None:
    settings = settings_for(Settings, ns=ns, service="toy", amqp_url=amqp_url, mongodb_url=mongodb_url)
    async with RunningApp(toy.create(settings)) as app:
        r = await app.http.post("/api/v1/widgets", json={"name": "x"}, headers={"Authorization": ""})
        assert r.status_code == 401 and r.json()["type"] == "urn:orgdir:problem:unauthorized"
        r = await app.http.post("/api/v1/widgets", json={"name": "x"}, headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401
        r = await app.http.post("/api/v1/widgets", json={"name": "x"}, headers=READER)
        assert r.status_code == 403 and r.json()["required_role"] == "orgdir:write"
        r = await app.http.post("/api/v1/widgets", json={"nam": "x"})
        assert r.status_code == 422
        assert r.headers["content-type"].startswith("application/problem+json")
        body = r.json()
        assert body["type"] == "urn:orgdir:problem:validation-error"
        assert body["errors"][0]["field"] == "name" and body["errors"][0]["location"] == "body"
        r = await app.http.post("/api/v1/widgets", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 422
        r = await app.http.get("/api/v1/nothing-here")
        assert r.status_code == 404 and r.json()["type"] == "urn:orgdir:problem:not-found"
        assert await app.runtime.db.widgets.count_documents({}) == 0  # nothing stored by any of them
        scrape = (await app.http.get("/metrics")).text
        assert 'orgdir_http_requests_total{method="POST",route="/api/v1/widgets",service="toy",status="422"}' in scrape


@pytest.fixture(scope="module")
def jwks() -> Iterator[tuple[str, rsa.RSAPrivateKey]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "k1", "use": "sig", "alg": "RS256"})
    body = json.dumps({"keys": [jwk]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None: ...

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/certs", key
    server.shutdown()


async def test_oidc_tokens_verified_against_jwks(
    ns: str, amqp_url: str, mongodb_url: str, jwks: tuple[str, rsa.RSAPrivateKey]
) -> None:
    url, key = jwks
    settings = settings_for(
        Settings,
        ns=ns,
        service="toy",
        amqp_url=amqp_url,
        mongodb_url=mongodb_url,
        auth_mode="oidc",
        oidc_jwks_url=url,
        oidc_issuer="https://idp.example/realms/kommune",
        oidc_audience="orgdir",
        oidc_client_id="orgdir",
        oidc_algorithms=["RS256"],
        allow_static_tokens=False,
        encryption_keys={"k1": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="},
    )

    def token(roles: list[str], **over: object) -> dict[str, str]:
        claims = {
            "sub": "u1",
            "preferred_username": "hr.medarbejder",
            "iss": settings.oidc_issuer,
            "aud": "orgdir",
            "exp": int(time.time()) + 300,
            "resource_access": {"orgdir": {"roles": roles}},
            **over,
        }
        return {"Authorization": "Bearer " + jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})}

    async with RunningApp(toy.create(settings), headers={}) as app:
        r = await app.http.post("/api/v1/widgets", json={"name": "x"}, headers=token(["orgdir:write"]))
        assert r.status_code == 201, r.text
        history = await app.runtime.repositories["widgets"].history(r.json()["uuid"])
        assert history[0]["registered_by"] == "u1"  # the subject, never the token
        r = await app.http.post("/api/v1/widgets", json={"name": "x"}, headers=token(["orgdir:read"]))
        assert r.status_code == 403
        r = await app.http.post("/api/v1/widgets", json={"name": "x"}, headers=token(["orgdir:write"], aud="other"))
        assert r.status_code == 401 and "audience" in r.json()["detail"].lower()
        r = await app.http.post(
            "/api/v1/widgets", json={"name": "x"}, headers=token(["orgdir:write"], exp=int(time.time()) - 120)
        )
        assert r.status_code == 401
