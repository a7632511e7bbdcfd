"""Bearer tokens with roles: OIDC/JWKS (Keycloak-compatible) or static tokens locally.

Roles imply others: ``orgdir:admin`` ⊃ ``orgdir:write`` ⊃ ``orgdir:read``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from orgdir import context
from orgdir.problems import Forbidden, Unauthorized
from orgdir.settings import Settings

IMPLIES: dict[str, set[str]] = {
    "orgdir:admin": {"orgdir:write", "orgdir:read"},
    "orgdir:write": {"orgdir:read"},
    "orgdir:approve": {"orgdir:read"},
    "orgdir:read:cpr": {"orgdir:read"},
}


@dataclass(frozen=True)
class Principal:
    subject: str
    roles: frozenset[str] = field(default_factory=frozenset)

    def has(self, role: str) -> bool:
        return role in self.roles


def expand(roles: set[str] | list[str]) -> frozenset[str]:
    out = set(roles)
    for r in list(out):
        out |= IMPLIES.get(r, set())
    return frozenset(out)


def unauthorized(detail: str) -> Unauthorized:
    return Unauthorized("unauthorized", "Unauthorized", detail)


class Authenticator:
    """Turns a bearer token into a Principal according to ``settings.auth_mode``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._jwks: jwt.PyJWKClient | None = None
        if settings.auth_mode == "oidc":
            url = settings.oidc_jwks_url or (settings.oidc_issuer.rstrip("/") + "/protocol/openid-connect/certs")
            self._jwks = jwt.PyJWKClient(url, cache_keys=True, lifespan=600)

    async def authenticate(self, token: str) -> Principal:
        s = self.settings
        if s.auth_mode == "static":
            roles = s.static_tokens.get(token)
            if roles is None:
                raise unauthorized("Unknown bearer token.")
            return Principal(subject=f"static:{token}", roles=expand(roles))
        assert self._jwks is not None
        try:
            key = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"],
                audience=s.oidc_audience or None,
                issuer=s.oidc_issuer or None,
                options={"verify_aud": bool(s.oidc_audience)},
            )
        except jwt.PyJWTError as exc:
            raise unauthorized(f"Invalid token: {exc}") from exc
        return Principal(
            subject=str(claims.get("preferred_username") or claims.get("sub")),
            roles=expand(roles_from_claims(claims, s.oidc_client_id)),
        )


def roles_from_claims(claims: dict[str, Any], client_id: str = "") -> set[str]:
    """Keycloak puts roles in realm_access and resource_access; others use scope or roles."""
    roles: set[str] = set(claims.get("realm_access", {}).get("roles", []))
    if client_id:
        roles |= set(claims.get("resource_access", {}).get(client_id, {}).get("roles", []))
    roles |= set(claims.get("roles", []) or [])
    roles |= set(str(claims.get("scope", "")).split())
    return {r for r in roles if r.startswith("orgdir:")}


# Declared as a security scheme so the OpenAPI document says which operations need a token.
bearer = HTTPBearer(auto_error=False, scheme_name="bearer", description="An OIDC access token (or a static dev token).")


def require(role: str) -> Callable[..., Awaitable[Principal]]:
    """FastAPI dependency: a valid bearer token carrying ``role`` (401 / 403 otherwise)."""

    async def dependency(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
    ) -> Principal:
        if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials.strip():
            raise unauthorized("A bearer token is required.")
        authenticator: Authenticator = request.app.state.authenticator
        principal = await authenticator.authenticate(credentials.credentials.strip())
        if not principal.has(role):
            raise Forbidden("forbidden", "Forbidden", f"This needs the role {role}.", required_role=role)
        context.actor.set(principal.subject)
        request.state.principal = principal
        return principal

    dependency.orgdir_role = role  # type: ignore[attr-defined]  # read by the OpenAPI completion and tests
    return dependency


def role_of(call: object) -> str | None:
    """The role an ``orgdir.auth.require`` dependency checks, else None."""
    role = getattr(call, "orgdir_role", None)
    return role if isinstance(role, str) else None


read = require("orgdir:read")
write = require("orgdir:write")
admin = require("orgdir:admin")
approve = require("orgdir:approve")

# The principal of a request that needs the role: route parameters, e.g. ``_: auth.Reader``.
Reader = Annotated[Principal, Depends(read)]
Writer = Annotated[Principal, Depends(write)]
Admin = Annotated[Principal, Depends(admin)]
Approver = Annotated[Principal, Depends(approve)]
