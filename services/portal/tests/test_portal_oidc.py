"""Sign-in with OIDC (authorization code + PKCE) against a real issuer over HTTP (``OidcIssuer``), with
the portal as two replicas in oidc mode and an orgunits replica that accepts the issuer's tokens: the
sign-in starts on one replica and ends on the other (the state, nonce and verifier travel in the sealed
cookie, not in a server-side store), and the tree is read from orgunits with the user's own token."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from orgdir_tools.testkit import ServiceProcess, settings_for
from orgdir_tools.testpeers import OidcIssuer
from orgunits.settings import OrgunitsSettings
from portal.app import SESSION_COOKIE
from portal.oidc import challenge_of
from portal.settings import PortalSettings

from .conftest import Stack

SESSION_SECRET = "test-session-secret-" + "x" * 32


@dataclass
class Replicas:
    issuer: OidcIssuer
    portals: list[str]


@pytest.fixture(scope="module")
def issuer() -> Iterator[OidcIssuer]:
    peer = OidcIssuer(user={"sub": "u-anne", "preferred_username": "anne.admin", "name": "Anne Admin",
                            "roles": ["orgdir:admin"]})
    yield peer
    peer.close()


@pytest.fixture(scope="module")
async def replicas(stack: Stack, issuer: OidcIssuer, amqp_url: str, mongodb_url: str) -> AsyncIterator[Replicas]:
    ns = stack.ns
    oidc_env = {
        "ORGDIR_AUTH_MODE": "oidc", "ORGDIR_ALLOW_STATIC_TOKENS": "false", "ORGDIR_OIDC_ISSUER": issuer.url,
        "ORGDIR_OIDC_AUDIENCE": "orgdir", "ORGDIR_OIDC_ALGORITHMS": '["RS256"]', "ORGDIR_OIDC_JWKS_URL": "",
    }
    orgunits = ServiceProcess("orgunits", settings_for(
        OrgunitsSettings, ns=ns, service="orgunits", amqp_url=amqp_url, mongodb_url=mongodb_url,
    ), env={**oidc_env, "ORGDIR_OIDC_JWKS_URL": f"{issuer.url}/jwks"})
    async with contextlib.AsyncExitStack() as exits:
        portal_settings = settings_for(PortalSettings, ns=ns, service="portal", amqp_url=amqp_url,
                                       mongodb_url=mongodb_url)
        env = {
            **oidc_env, "ORGDIR_SESSION_SECRET": SESSION_SECRET, "ORGDIR_OIDC_LOGIN_CLIENT_ID": "orgdir-portal",
            "ORGDIR_ORGUNITS_URL": orgunits.url, "ORGDIR_REGISTRY_URL": stack.urls["registry"],
            "ORGDIR_ACCESS_RIGHTS_URL": stack.urls["access-rights"], "ORGDIR_NOTIFIER_URL": stack.urls["notifier"],
        }
        portals = [ServiceProcess("portal", portal_settings, env=env) for _ in range(2)]
        # All at once: a portal needs nothing of orgunits to start (its port is known beforehand).
        await asyncio.gather(*(exits.enter_async_context(p) for p in [orgunits, *portals]))
        yield Replicas(issuer, [p.url for p in portals])


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def start_sign_in(browser: httpx.AsyncClient, portal: str, page: str = "/units") -> str:
    """Ask for a page without a session: the portal sends the browser to the issuer; the issuer's answer."""
    r = await browser.get(f"{portal}{page}")
    assert r.status_code == 303 and r.headers["location"].startswith("/login?")
    r = await browser.get(f"{portal}{r.headers['location']}")
    assert r.status_code == 303
    return str(r.headers["location"])


async def test_sign_in_with_pkce_across_replicas_then_sign_out(replicas: Replicas, stack: Stack) -> None:
    issuer = replicas.issuer
    one, other = replicas.portals
    async with httpx.AsyncClient(timeout=30) as browser:
        authorize = await start_sign_in(browser, one, "/units?lang=en")
        assert authorize.startswith(f"{issuer.url}/authorize?")
        asked = query_of(authorize)
        assert asked["response_type"] == "code" and asked["client_id"] == "orgdir-portal"
        assert asked["code_challenge_method"] == "S256" and len(asked["code_challenge"]) == 43
        assert asked["state"] and asked["nonce"] and asked["scope"] == "openid profile email"
        # The secrets wait in the cookie, sealed: none of them can be read from it.
        cookie = browser.cookies[SESSION_COOKIE]
        readable = base64.urlsafe_b64decode(cookie + "=" * (-len(cookie) % 4))
        assert asked["state"].encode() not in readable and b"verifier" not in readable

        r = await browser.get(authorize)  # the issuer approves at once
        callback = r.headers["location"]
        assert callback.startswith(f"{one}/callback?")
        # The callback lands on the other replica: it opens the first one's cookie.
        r = await browser.get(callback.replace(one, other))
        assert r.status_code == 303 and r.headers["location"] == "/units?lang=en", r.text
        sent = issuer.token_requests[-1]
        assert sent["grant_type"] == "authorization_code"
        assert challenge_of(sent["code_verifier"]) == asked["code_challenge"]

        # Signed in: the tree comes from orgunits in oidc mode, with the issuer's token for this user.
        page = await browser.get(f"{one}/units?lang=en")
        assert page.status_code == 200, page.text
        assert "Testrup Kommune" in page.text and "anne.admin" in page.text
        assert "Create unit" in page.text  # orgdir:admin from the token's roles
        cookie = browser.cookies[SESSION_COOKIE]
        assert "eyJ" not in cookie  # the access token (a JWT) is not readable in the cookie
        readable = base64.urlsafe_b64decode(cookie + "=" * (-len(cookie) % 4))
        assert b"eyJ" not in readable and b"anne" not in readable

        # A cookie altered by one character is no session at all.
        altered = cookie[:-2] + ("A" if cookie[-2] != "A" else "B") + cookie[-1]
        async with httpx.AsyncClient(timeout=30, cookies={SESSION_COOKIE: altered}) as forger:
            r = await forger.get(f"{other}/units")
            assert r.status_code == 303 and r.headers["location"].startswith("/login?")

        # Sign out: the cookie goes, and the issuer's session too (RP-initiated logout).
        r = await browser.post(f"{other}/signout")
        assert r.status_code == 303
        logout = r.headers["location"]
        assert logout.startswith(f"{issuer.url}/logout?")
        assert query_of(logout) == {"client_id": "orgdir-portal", "post_logout_redirect_uri": f"{other}/signin"}
        assert SESSION_COOKIE not in browser.cookies
        r = await browser.get(f"{one}/units")
        assert r.status_code == 303 and r.headers["location"].startswith("/login?")


async def test_a_wrong_verifier_a_foreign_state_and_a_replayed_nonce_are_refused(replicas: Replicas) -> None:
    issuer = replicas.issuer
    portal = replicas.portals[0]
    async with httpx.AsyncClient(timeout=30) as browser:
        # The issuer's token endpoint checks the verifier against the challenge (what PKCE is for).
        authorize = await start_sign_in(browser, portal)
        code = query_of((await browser.get(authorize)).headers["location"])["code"]
        r = await browser.post(f"{issuer.url}/token", data={
            "grant_type": "authorization_code", "code": code, "client_id": "orgdir-portal",
            "redirect_uri": query_of(authorize)["redirect_uri"], "code_verifier": "x" * 43})
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant"

        # A callback whose state is not this browser's: refused, no session.
        authorize = await start_sign_in(browser, portal)
        callback = (await browser.get(authorize)).headers["location"]
        state = query_of(callback)["state"]
        r = await browser.get(callback.replace(f"state={state}", "state=someone-elses"))
        assert r.status_code == 400 and "state" in r.text
        assert (await browser.get(f"{portal}/units")).status_code == 303

        # An ID token whose nonce is not this sign-in's: refused.
        issuer.nonce_override = "an-old-nonce"
        try:
            authorize = await start_sign_in(browser, portal)
            r = await browser.get((await browser.get(authorize)).headers["location"])
        finally:
            issuer.nonce_override = None
        assert r.status_code == 400 and "nonce" in r.text
        assert (await browser.get(f"{portal}/units")).status_code == 303

        # The issuer refusing (error=access_denied) is said on the sign-in page.
        authorize = await start_sign_in(browser, portal)
        state = query_of(authorize)["state"]
        r = await browser.get(f"{portal}/callback", params={"error": "access_denied", "state": state,
                                                            "error_description": "User said no"})
        assert r.status_code == 400 and "User said no" in r.text


def test_tokens_of_the_issuer_peer_are_what_a_keycloak_client_expects(issuer: OidcIssuer) -> None:
    discovery = httpx.get(f"{issuer.url}/.well-known/openid-configuration").json()
    assert discovery["issuer"] == issuer.url and "S256" in discovery["code_challenge_methods_supported"]
    keys = httpx.get(discovery["jwks_uri"]).json()["keys"]
    assert [k["kid"] for k in keys] == [issuer.kid] and json.dumps(keys).count('"kty": "RSA"') == 1
