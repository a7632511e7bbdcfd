"""Sign-in with OpenID Connect: the authorization code flow with PKCE (S256), the portal as the client.

``/login`` sends the browser to the issuer's authorization endpoint with a fresh ``state``, ``nonce``
and ``code_challenge``; the three secrets wait in the user's own sealed session cookie (no server-side
store: the replica that gets the callback need not be the one that sent the user off). ``/callback``
checks the state, exchanges the code with the ``code_verifier`` at the token endpoint, checks the ID
token (signature from the issuer's JWKS, issuer, audience = the portal's client, nonce, expiry) and
keeps the access token in the session: every API call is made with it, and the services decide.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt

from orgdir.auth import Jwks, roles_from_claims
from portal.settings import PortalSettings

PENDING = "oidc"  # the session key of a sign-in under way
METADATA_SECONDS = 600


class SignInError(Exception):
    """The issuer refused, or its answer does not hold up: shown on the sign-in page, nothing kept."""


def challenge_of(verifier: str) -> str:
    """PKCE S256: base64url(SHA-256(verifier)), without padding (RFC 7636 §4.2)."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


class Oidc:
    """The issuer as the portal uses it; its discovery document and keys are public and cached per replica."""

    def __init__(self, settings: PortalSettings, http: httpx.AsyncClient) -> None:
        self.settings = settings
        self.http = http
        self.issuer = settings.oidc_issuer.rstrip("/")
        self.client_id = settings.oidc_login_client_id
        self.algorithms = settings.oidc_algorithms or ["RS256"]
        self._metadata: dict[str, Any] | None = None
        self._fetched = float("-inf")
        self._jwks: Jwks | None = None

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None or time.monotonic() - self._fetched > METADATA_SECONDS:
            url = f"{self.issuer}/.well-known/openid-configuration"
            try:
                response = await self.http.get(url)
                response.raise_for_status()
                meta: dict[str, Any] = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                raise SignInError(f"The identity provider does not answer ({type(exc).__name__}).") from exc
            if str(meta.get("issuer", "")).rstrip("/") != self.issuer:
                raise SignInError("The identity provider names another issuer than the one configured.")
            self._metadata, self._fetched = meta, time.monotonic()
            jwks_uri = self.settings.oidc_jwks_url or str(meta["jwks_uri"])
            if self._jwks is None or self._jwks.url != jwks_uri:
                self._jwks = Jwks(jwks_uri, self.settings.jwks_cache_seconds, self.settings.jwks_min_refetch_seconds)
        return self._metadata

    async def authorize_url(self, session: dict[str, Any], redirect_uri: str, next_url: str) -> str:
        """Where to send the browser; the state, nonce and verifier wait in the session until the callback."""
        meta = await self.metadata()
        state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
        session[PENDING] = {"state": state, "nonce": nonce, "verifier": verifier, "next": next_url,
                            "redirect_uri": redirect_uri}
        query = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": redirect_uri,
            "scope": self.settings.oidc_scopes,
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge_of(verifier),
            "code_challenge_method": "S256",
        }
        return f"{meta['authorization_endpoint']}?{urlencode(query)}"

    async def complete(self, session: dict[str, Any], params: dict[str, str]) -> tuple[dict[str, Any], str]:
        """The callback: (the signed-in user for the session, where to go next)."""
        pending = session.pop(PENDING, None)
        if not isinstance(pending, dict) or not params.get("state"):
            raise SignInError("No sign-in was under way in this browser; please sign in again.")
        if not secrets.compare_digest(str(params["state"]), str(pending["state"])):
            raise SignInError("The sign-in answer does not belong to this browser's sign-in (state).")
        if params.get("error"):
            raise SignInError(f"The identity provider refused: {params.get('error_description') or params['error']}")
        if not params.get("code"):
            raise SignInError("The identity provider sent no authorization code.")
        meta = await self.metadata()
        form = {"grant_type": "authorization_code", "code": params["code"], "redirect_uri": pending["redirect_uri"],
                "code_verifier": pending["verifier"], "client_id": self.client_id}
        secret = self.settings.oidc_client_secret
        try:  # a confidential client authenticates with client_secret_basic; a public one by PKCE alone
            if secret:
                response = await self.http.post(str(meta["token_endpoint"]), data=form, auth=(self.client_id, secret))
            else:
                response = await self.http.post(str(meta["token_endpoint"]), data=form)
            tokens: dict[str, Any] = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise SignInError(f"The token endpoint does not answer ({type(exc).__name__}).") from exc
        if response.status_code != 200 or "access_token" not in tokens or "id_token" not in tokens:
            raise SignInError(f"The token endpoint refused: {tokens.get('error_description') or tokens.get('error')}")
        identity = await self._verified(str(tokens["id_token"]), audience=self.client_id)
        if not secrets.compare_digest(str(identity.get("nonce", "")), str(pending["nonce"])):
            raise SignInError("The ID token was not issued for this sign-in (nonce).")
        access = str(tokens["access_token"])
        try:  # the roles only hide what may not be done; the services check the token themselves
            claims = await self._verified(access, audience=None)
        except SignInError:
            claims = identity  # an opaque access token: the roles the ID token carries
        expires = int(claims.get("exp") or time.time() + int(tokens.get("expires_in", 300)))
        user = {
            "name": str(identity.get("preferred_username") or identity.get("name") or identity["sub"]),
            "token": access,
            "roles": sorted(roles_from_claims(claims, self.settings.oidc_client_id) |
                            roles_from_claims(identity, self.settings.oidc_client_id)),
            "exp": expires,
            "oidc": True,
        }
        return user, str(pending.get("next") or "/units")

    async def _verified(self, token: str, *, audience: str | None) -> dict[str, Any]:
        assert self._jwks is not None  # set by metadata()
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            if not kid:
                raise SignInError("The token names no signing key (kid).")
            key = await self._jwks.key(str(kid))
            claims: dict[str, Any] = jwt.decode(
                token, key.key, algorithms=self.algorithms, issuer=self.settings.oidc_issuer, audience=audience,
                leeway=self.settings.oidc_leeway_seconds,
                options={"require": ["exp", "iss", "sub"], "verify_aud": audience is not None},
            )
        except jwt.PyJWTError as exc:
            raise SignInError(f"The identity provider's token does not hold up: {exc}") from exc
        except Exception as exc:  # orgdir.auth raises its 401 problem for keys it cannot get
            if isinstance(exc, SignInError):
                raise
            raise SignInError(f"The identity provider's signing keys are not available: {exc}") from exc
        return claims

    async def logout_url(self, after: str) -> str | None:
        """The issuer's end-session endpoint (RP-initiated logout), when it has one."""
        try:
            meta = await self.metadata()
        except SignInError:
            return None
        end = meta.get("end_session_endpoint")
        if not end:
            return None
        return f"{end}?{urlencode({'client_id': self.client_id, 'post_logout_redirect_uri': after})}"
