"""Service settings from the environment (prefix ``ORGDIR_``).

``MONGODB_URL`` and ``AMQP_URL`` are also read without the prefix, so a
municipality's CI can point the whole suite at its own servers.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ALL_ROLES = [
    "orgdir:read",
    "orgdir:write",
    "orgdir:admin",
    "orgdir:approve",
    "orgdir:read:cpr",
]


class Settings(BaseSettings):
    """Settings every service shares; a service subclasses it for its own."""

    model_config = SettingsConfigDict(env_prefix="ORGDIR_", extra="ignore")

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
    )
    exchange: str = Field("orgdir.events", description="The topic exchange all events go to.")
    queue_prefix: str = Field("", description="Prefix of every queue name (test isolation).")
    declare_topology: bool = Field(True, description="Declare every known consumer queue at start.")
    prefetch: int = Field(32, ge=1, le=1000, description="Unacked messages per consumer.")
    delivery_limit: int = Field(5, ge=1, description="Attempts before a message is dead.")
    retry_delay_seconds: float = Field(0.5, ge=0, description="First retry delay; doubles.")
    relay_sweep_seconds: float = Field(
        30.0, gt=0, description="Outbox crash-recovery sweep (a full scan of each collection)."
    )
    relay_lease_seconds: float = Field(30.0, gt=0, description="How long a relay owns a doc.")
    scheduler_interval_seconds: float = Field(30.0, gt=0)
    timezone: str = Field("Europe/Copenhagen", description="Where 'today' is.")
    log_level: str = "INFO"
    auth_mode: Literal["static", "oidc"] = "static"
    static_tokens: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "dev-admin": ALL_ROLES,
            "dev-approver": ["orgdir:read", "orgdir:write", "orgdir:approve"],
            "dev-writer": ["orgdir:read", "orgdir:write"],
            "dev-reader": ["orgdir:read"],
        },
        description="token -> roles, for the local stack only.",
    )
    oidc_issuer: str = ""
    oidc_jwks_url: str = ""
    oidc_audience: str = ""
    oidc_client_id: str = Field("", description="Keycloak client whose roles count.")

    @property
    def database_name(self) -> str:
        return self.database or f"orgdir_{self.service_name.replace('-', '_')}"

    def queue(self, consumer: str) -> str:
        return f"{self.queue_prefix}{self.service_name}.{consumer}"
