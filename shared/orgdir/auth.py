"""Bearer tokens with roles: OIDC/JWKS (Keycloak-compatible) or, explicitly enabled, static tokens.

Roles imply others: ``orgdir:admin`` ⊃ ``orgdir:write`` ⊃ ``orgdir:read``.
A role may be held on a unit subtree only (``orgdir:write@<unit>``, see
``orgdir.scopes``): routes that accept such a principal (``ScopedWriter``)
check the units a write touches with ``check_scope``.
The actor a request is recorded under (audit, history, logs) is the token's
subject, never the token: ``static:<name>`` for a static token, the ``sub``
claim (with the client, ``azp``) for an OIDC token.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Annotated, Any

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from orgdir import context, scopes
from orgdir.problems import Forbidden, Unauthorized
from orgdir.settings import Settings

if TYPE_CHECKING:
    from orgdir.tree import UnitTree

log = logging.getLogger(__name__)

IMPLIES: dict[str, set[str]] = {
    "orgdir:admin": {"orgdir:write", "orgdir:read"},
    "orgdir:write": {"orgdir:read"},
    "orgdir:approve": {"orgdir:read"},
    "orgdir:read:cpr": {"orgdir:read:birthdate", "orgdir:read"},
    "orgdir:read:birthdate": {"orgdir:read"},
    "orgdir:read:secret": {"orgdir:read"},  # addresses of the visibility class hemmelig (orgdir.visibility)
}


@dataclass(frozen=True)
class Principal:
    subject: str
    roles: frozenset[str] = field(default_factory=frozenset)
    client_id: str | None = None
    scoped: Mapping[str, frozenset[str]] = field(default_factory=dict)  # role -> units it is held on

    def has(self, role: str) -> bool:
        """Held everywhere."""
        return role in self.roles

    def has_somewhere(self, role: str) -> bool:
        return role in self.roles or bool(self.scoped.get(role))

    @property
    def actor(self) -> str:
        """Who did it, as the audit trail and history record it."""
        return f"{self.subject} via {self.client_id}" if self.client_id else self.subject


def expand(roles: set[str] | list[str]) -> frozenset[str]:
    out = set(roles)
    while True:
        more = set().union(*(IMPLIES.get(r, set()) for r in out)) - out
        if not more:
            return frozenset(out)
        out |= more


def principal_of(subject: str, grants: Iterable[str], client_id: str | None = None) -> Principal:
    """Grants (roles, scoped roles) as a principal, with the implied roles."""
    roles, scoped = scopes.split_grants(grants)
    return Principal(
        subject=subject,
        roles=expand(roles),
        client_id=client_id,
        scoped=scopes.expand_scoped(scoped, IMPLIES),
    )


def unauthorized(detail: str) -> Unauthorized:
    return Unauthorized("unauthorized", "Unauthorized", detail)


class Jwks:
    """The identity provider's signing keys, cached; fetched again on an unknown key id.

    A per-replica cache of public data (any replica can fetch it), not a truth
    correctness rests on. Refetches for unknown key ids are spaced by
    ``min_refetch`` seconds, so a stream of forged key ids cannot hammer the IdP.
    """

    def __init__(self, url: str, lifetime: float = 600, min_refetch: float = 5) -> None:
        self.url = url
        self.lifetime = lifetime
        self.min_refetch = min_refetch
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched = float("-inf")
        self._lock = asyncio.Lock()

    def _download(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url, timeout=5) as response:  # the configured JWKS URL
            data: dict[str, Any] = json.loads(response.read())
            return data

    async def _refresh(self, *, forced: bool) -> None:
        async with self._lock:
            age = time.monotonic() - self._fetched
            if age < (self.min_refetch if forced else self.lifetime):
                return  # another request just fetched them
            try:
                data = await asyncio.to_thread(self._download)
                keys = jwt.PyJWKSet.from_dict(data).keys
            except Exception as exc:
                log.warning("JWKS fetch failed", extra={"url": self.url, "error": str(exc)[:200]})
                if not self._keys:
                    raise unauthorized("The identity provider's signing keys are not available.") from exc
                return
            self._keys = {str(k.key_id): k for k in keys if k.key_id}
            self._fetched = time.monotonic()

    async def key(self, kid: str) -> jwt.PyJWK:
        if time.monotonic() - self._fetched > self.lifetime:
            await self._refresh(forced=False)
        if kid not in self._keys:
            await self._refresh(forced=True)  # the IdP may have rotated its keys
        found = self._keys.get(kid)
        if found is None:
            raise unauthorized("The token is signed by an unknown key.")
        return found


class Authenticator:
    """Turns a bearer token into a Principal according to ``settings.auth_mode``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._jwks: Jwks | None = None
        if settings.auth_mode == "oidc":
            url = settings.oidc_jwks_url or (settings.oidc_issuer.rstrip("/") + "/protocol/openid-connect/certs")
            self._jwks = Jwks(url, lifetime=settings.jwks_cache_seconds, min_refetch=settings.jwks_min_refetch_seconds)

    @property
    def warnings(self) -> list[str]:
        """What /readyz and the start log say about an insecure mode."""
        if self.settings.auth_mode == "static":
            names = ", ".join(sorted(self.settings.tokens()))
            return [f"static bearer tokens are enabled ({names}): for a local stack only, never production"]
        return []

    async def authenticate(self, token: str) -> Principal:
        s = self.settings
        if s.auth_mode == "static" and s.allow_static_tokens:
            for name, entry in s.tokens().items():
                if hmac.compare_digest(entry.token.encode(), token.encode()):
                    subject = f"static:{name}"
                    return principal_of(subject, [*entry.roles, *s.role_bindings.get(subject, [])])
            raise unauthorized("Unknown bearer token.")
        if self._jwks is None:  # never started: Runtime.lifespan refuses such settings
            raise unauthorized("No authentication is configured.")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise unauthorized(f"Invalid token: {exc}") from exc
        if not header.get("kid"):
            raise unauthorized("The token names no signing key (kid).")
        key = await self._jwks.key(str(header["kid"]))
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=s.oidc_algorithms,
                audience=s.oidc_audience,
                issuer=s.oidc_issuer,
                leeway=s.oidc_leeway_seconds,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise unauthorized(f"Invalid token: {exc}") from exc
        client = claims.get("azp") or claims.get("client_id")
        subject = str(claims["sub"])
        grants = roles_from_claims(claims, s.oidc_client_id) | scopes.grants_from_groups(
            claims.get("groups") or [], s.oidc_group_prefix
        )
        for group in [subject, *(g for g in claims.get("groups") or [] if isinstance(g, str))]:
            grants |= set(s.role_bindings.get(group, []))  # the binding list an administrator keeps
        return principal_of(subject, grants, str(client) if client else None)


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


def require(role: str, *, scoped: bool = False) -> Callable[..., Awaitable[Principal]]:
    """FastAPI dependency: a valid bearer token carrying ``role`` (401 / 403 otherwise).

    With ``scoped`` a role held on some subtree passes too: the route's service
    then calls ``check_scope`` with the units the write touches.
    """

    async def dependency(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
    ) -> Principal:
        if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials.strip():
            raise unauthorized("A bearer token is required.")
        authenticator: Authenticator = request.app.state.authenticator
        principal = await authenticator.authenticate(credentials.credentials.strip())
        if not (principal.has_somewhere(role) if scoped else principal.has(role)):
            raise Forbidden("forbidden", "Forbidden", f"This needs the role {role}.", required_role=role)
        context.actor.set(principal.actor)
        current.set(principal)
        request.state.principal = principal
        return principal

    dependency.orgdir_role = role  # type: ignore[attr-defined]  # read by the OpenAPI completion and tests
    return dependency


def role_of(call: object) -> str | None:
    """The role an ``orgdir.auth.require`` dependency checks, else None."""
    role = getattr(call, "orgdir_role", None)
    return role if isinstance(role, str) else None


# The principal of the request being handled (None in consumers and the scheduler: the system acts).
current: ContextVar[Principal | None] = ContextVar("principal", default=None)


def check_scope(tree: UnitTree, units: Iterable[str | None], day: date, role: str = "orgdir:write") -> None:
    """403 ``out-of-scope`` unless the caller holds ``role`` everywhere or on subtrees holding every unit.

    ``units`` are all the units a write touches on ``day`` (a moved unit and
    its new parent; an engagement's old and new unit); ``None`` stands for
    "no unit" (a root, a person), which only a role held everywhere reaches.
    """
    principal = current.get()
    if principal is None or principal.has(role):
        return
    anchors = principal.scoped.get(role, frozenset())
    wanted = list(dict.fromkeys(units))
    bad = [u for u in wanted if u is not None]
    bad = scopes.outside(tree, anchors, bad, day) if anchors else bad
    if None in wanted or bad:
        scope = scopes.names(tree, sorted(anchors), day)
        where = ", ".join(scopes.names(tree, bad, day)) or "a unit-less record (a root unit, a person)"
        raise Forbidden(
            "out-of-scope",
            "Outside your scope",
            f"{role} is yours on {', '.join(scope) or 'no unit'} and below; {where} is outside it.",
            required_role=role,
            scope=sorted(anchors),
            units=bad,
        )


read = require("orgdir:read")
write = require("orgdir:write")
admin = require("orgdir:admin")
approve = require("orgdir:approve")

# The principal of a request that needs the role: route parameters, e.g. ``_: auth.Reader``.
Reader = Annotated[Principal, Depends(read)]
Writer = Annotated[Principal, Depends(write)]
Admin = Annotated[Principal, Depends(admin)]
Approver = Annotated[Principal, Depends(approve)]
# Writes whose service checks the units with ``check_scope``: a writer on a subtree passes the route.
ScopedWriter = Annotated[Principal, Depends(require("orgdir:write", scoped=True))]
