"""Service settings from the environment (prefix ``ORGDIR_``).

``MONGODB_URL`` and ``AMQP_URL`` are also read without the prefix, so a
municipality's CI can point the whole suite at its own servers.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import AliasChoices, BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from orgdir import crypto

ALL_ROLES = [
    "orgdir:read",
    "orgdir:write",
    "orgdir:admin",
    "orgdir:approve",
    "orgdir:read:cpr",
    "orgdir:read:secret",
]


class StaticToken(BaseModel):
    """One static bearer token: the token is the secret, its name (the map's key) is the actor."""

    token: str = Field(min_length=8)
    roles: list[str]


# The local stack's tokens: well known, so only with ORGDIR_ALLOW_STATIC_TOKENS=true. The audit
# trail, history and logs record ``static:<name>``, never the token.
DEV_STATIC_TOKENS: dict[str, StaticToken] = {
    "admin": StaticToken(token="dev-admin", roles=ALL_ROLES),
    "approver": StaticToken(token="dev-approver", roles=["orgdir:read", "orgdir:write", "orgdir:approve"]),
    "writer": StaticToken(token="dev-writer", roles=["orgdir:read", "orgdir:write"]),
    "reader": StaticToken(token="dev-reader", roles=["orgdir:read"]),
    "secret-reader": StaticToken(token="dev-secret-reader", roles=["orgdir:read", "orgdir:read:secret"]),
}

UNSAFE_ALGORITHMS = {"none", "HS256", "HS384", "HS512"}  # no secret to share with an IdP, no unsigned tokens


class UnsafeSettings(RuntimeError):
    """The service refuses to start: its settings would leave it open or its data unprotected."""


class Settings(BaseSettings):
    """Settings every service shares; a service subclasses it for its own."""

    model_config = SettingsConfigDict(env_prefix="ORGDIR_", extra="ignore")
    # A service that stores sealed values (orgdir.crypto) needs ORGDIR_ENCRYPTION_KEYS outside static mode.
    seals_data: ClassVar[bool] = False

    service_name: str = Field("orgdir", description="Name in event sources, metrics and logs.")
    mongodb_url: str = Field(
        "mongodb://127.0.0.1:27017/",
        validation_alias=AliasChoices("ORGDIR_MONGODB_URL", "MONGODB_URL"),
    )
    database: str = Field("", description="Database name; default orgdir_<service>.")
    mongo_timeout_ms: int = Field(5000, ge=100, description="Fail (503) after this long.")
    amqp_url: str = Field(
        "amqp://guest:guest@127.0.0.1:5672/",
        validation_alias=AliasChoices("ORGDIR_AMQP_URL", "AMQP_URL"),
        description="One broker URL, or the nodes of a cluster separated by commas (reconnects go to the next).",
    )
    exchange: str = Field("orgdir.events", description="The topic exchange all events go to.")
    queue_prefix: str = Field("", description="Prefix of every queue name (test isolation).")
    declare_topology: bool = Field(True, description="Declare every known consumer queue at start.")
    prefetch: int = Field(32, ge=1, le=1000, description="Unacked messages per consumer.")
    delivery_limit: int = Field(5, ge=1, description="Attempts before a message is dead.")
    retry_delay_seconds: float = Field(0.5, ge=0, description="First retry delay; doubles.")
    transient_hold_seconds: float = Field(
        600.0,
        ge=0,
        description="While the database is unreachable a message is held and retried in place this long "
        "(not counted as an attempt); keep it below RabbitMQ's consumer_timeout (30 min).",
    )
    relay_sweep_seconds: float = Field(
        30.0, gt=0, description="Outbox crash-recovery sweep (a full scan of each collection)."
    )
    relay_lease_seconds: float = Field(30.0, gt=0, description="How long a relay owns a doc.")
    scheduler_interval_seconds: float = Field(30.0, gt=0)
    refresh_lease_seconds: float = Field(
        30.0, gt=0, description="A refresh job whose replica is gone is resumed by another after this long."
    )
    refresh_batch: int = Field(500, ge=1, le=10000, description="Refresh: events per confirmed batch and checkpoint.")
    gc_young_threshold: int = Field(
        50_000,
        ge=700,
        description="Python's generation-0 threshold (``gc.set_threshold``; its default is 700). At 700 a "
        "read that builds a page of 1,000 rows is collected mid-way, its rows are promoted to the oldest "
        "generation, and every few dozen such reads a full collection walks the whole read model: "
        "1.4 s pauses in a registry holding 30,000 persons.",
    )
    timezone: str = Field("Europe/Copenhagen", description="Where 'today' is.")
    log_level: str = "INFO"
    auth_mode: Literal["static", "oidc"] | None = Field(
        None, description="oidc (production) or static (fixed tokens; needs allow_static_tokens). Required."
    )
    allow_static_tokens: bool = Field(
        False, description="ORGDIR_ALLOW_STATIC_TOKENS=true: the explicit consent static mode needs."
    )
    static_tokens: dict[str, StaticToken] = Field(
        default_factory=dict,
        description='name -> {"token": ..., "roles": [...]} (JSON); empty: the dev tokens dev-admin, dev-writer ...',
    )
    oidc_issuer: str = Field("", description="The iss every token must carry. Required in oidc mode.")
    oidc_jwks_url: str = Field("", description="Default: the issuer's Keycloak certs endpoint.")
    oidc_audience: str = Field("", description="The aud every token must carry. Required in oidc mode.")
    oidc_algorithms: list[str] = Field(
        default_factory=list, description='Accepted signature algorithms (JSON, e.g. ["RS256"]). Required in oidc mode.'
    )
    oidc_client_id: str = Field("", description="Keycloak client whose roles count.")
    oidc_group_prefix: str = Field(
        "/orgdir/",
        description="Group paths under it grant roles: <prefix>write is orgdir:write, "
        "<prefix>write/<unit> the role on that unit's subtree.",
    )
    role_bindings: dict[str, list[str]] = Field(
        default_factory=dict,
        description='Grants by token subject or group (JSON), e.g. {"static:bou": ["orgdir:write@<unit uuid or '
        'user_key>"]}: the binding list an administrator keeps.',
    )
    oidc_leeway_seconds: int = Field(30, ge=0, le=300, description="Clock skew allowed on exp and nbf.")
    jwks_cache_seconds: float = Field(600, gt=0, description="How long fetched signing keys are kept.")
    jwks_min_refetch_seconds: float = Field(
        5, ge=0, description="Least time between two fetches for an unknown key id (forged ids cannot hammer the IdP)."
    )
    encryption_keys: dict[str, str] = Field(
        default_factory=dict,
        description="key id -> base64 of 32 random bytes (JSON): AES-256-GCM for personal data and secrets at rest.",
    )
    encryption_key_id: str = Field("", description="The key id new values are sealed with (default: the only key).")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Larger request bodies get 413.")

    @property
    def static_mode(self) -> bool:
        """The local stack and tests: fixed tokens, development keys allowed."""
        return self.auth_mode == "static" and self.allow_static_tokens

    def tokens(self) -> dict[str, StaticToken]:
        return self.static_tokens or DEV_STATIC_TOKENS

    def keyring(self) -> crypto.Keyring:
        keys = dict(self.encryption_keys)
        if not keys and self.static_mode:
            keys = {crypto.DEV_KEY_ID: crypto.DEV_KEY}
        current = self.encryption_key_id or (next(iter(keys)) if len(keys) == 1 else "")
        return crypto.Keyring(keys, current)

    def startup_problems(self) -> list[str]:
        """What keeps this configuration from starting safely; a service adds its own."""
        out: list[str] = []
        if self.auth_mode is None:
            out.append(
                "No authentication configured. Set ORGDIR_AUTH_MODE=oidc with ORGDIR_OIDC_ISSUER, "
                'ORGDIR_OIDC_AUDIENCE and ORGDIR_OIDC_ALGORITHMS (e.g. ["RS256"]); or, on a laptop only, '
                "ORGDIR_AUTH_MODE=static with ORGDIR_ALLOW_STATIC_TOKENS=true."
            )
        elif self.auth_mode == "static":
            if not self.allow_static_tokens:
                out.append(
                    "ORGDIR_AUTH_MODE=static accepts fixed bearer tokens and is refused unless "
                    "ORGDIR_ALLOW_STATIC_TOKENS=true (never in production: use ORGDIR_AUTH_MODE=oidc)."
                )
            for name, t in self.static_tokens.items():
                if t.token == name:
                    out.append(f"Static token {name!r}: its name is recorded as the actor, so it cannot be the token.")
            if len({t.token for t in self.static_tokens.values()}) < len(self.static_tokens):
                out.append("Two static tokens share one token value.")
        else:
            missing = [
                env
                for env, value in (
                    ("ORGDIR_OIDC_ISSUER", self.oidc_issuer),
                    ("ORGDIR_OIDC_AUDIENCE", self.oidc_audience),
                    ("ORGDIR_OIDC_ALGORITHMS", self.oidc_algorithms),
                )
                if not value
            ]
            if missing:
                out.append(f"ORGDIR_AUTH_MODE=oidc needs {', '.join(missing)}.")
            if bad := sorted(UNSAFE_ALGORITHMS.intersection(self.oidc_algorithms)):
                out.append(f"ORGDIR_OIDC_ALGORITHMS: {', '.join(bad)} not accepted (use RS256, PS256, ES256 ...).")
        if not self.static_mode and self.seals_data:
            if not self.encryption_keys:
                out.append(
                    "ORGDIR_ENCRYPTION_KEYS is required outside static mode: a JSON map of key id to base64 of "
                    '32 random bytes, e.g. {"k1": "..."} (python -c "import orgdir.crypto as c; print(c.new_key())").'
                )
        if not self.static_mode and crypto.DEV_KEY in self.encryption_keys.values():
            out.append("ORGDIR_ENCRYPTION_KEYS holds the public development key; generate a real one.")
        try:
            if self.encryption_keys or self.static_mode:
                self.keyring()
        except crypto.SealError as exc:
            out.append(f"ORGDIR_ENCRYPTION_KEYS / ORGDIR_ENCRYPTION_KEY_ID: {exc}.")
        return out

    def check_startup(self) -> None:
        """Raise ``UnsafeSettings`` naming every setting to fix."""
        if problems := self.startup_problems():
            raise UnsafeSettings(
                f"orgdir {self.service_name} refuses to start:\n" + "\n".join(f"  - {p}" for p in problems)
            )

    @property
    def amqp_urls(self) -> list[str]:
        """The broker nodes of ``amqp_url``, in order (a cluster: ``amqp://a/,amqp://b/``)."""
        return [u.strip() for u in self.amqp_url.split(",") if u.strip()]

    @property
    def database_name(self) -> str:
        return self.database or f"orgdir_{self.service_name.replace('-', '_')}"

    def queue(self, consumer: str) -> str:
        return f"{self.queue_prefix}{self.service_name}.{consumer}"
