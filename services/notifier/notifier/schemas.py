"""Request and response models of the notifier API: subscriptions and the delivery log."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Kind = Literal["webhook", "scim"]
Visibility = Literal["public", "internal", "secret"]
VISIBILITY_HELP = (
    "The most a target may see of addresses (orgdir.visibility): `public` (offentlig only), "
    "`internal` (also intern and unclassified; the default) or `secret` (also hemmelig: set it only "
    "for a system allowed to hold secret addresses). Payloads carry nothing above it."
)
Circuit = Literal["closed", "open", "half-open"]

_SECRET_EXAMPLE = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class SubscriptionIn(BaseModel):
    """A downstream target. ``secret`` and ``token`` are write-only: never returned."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "kind": "webhook",
                    "name": "Lønsystem",
                    "url": "https://payroll.example.org/orgdir-hook",
                    "event_types": ["person.*", "engagement.*"],
                    "secret": _SECRET_EXAMPLE,
                },
                {
                    "kind": "scim",
                    "name": "Microsoft Entra ID",
                    "url": "https://scim.example.org/v2",
                    "token": "scim-bearer-token",
                    "it_system": "6f1d7c1e-5c1b-4b1e-9f3e-6a0d5e6b7c01",
                },
            ]
        },
    )

    kind: Kind = "webhook"
    name: str = Field(min_length=1, max_length=200)
    url: str = Field(description="Webhook URL, or the SCIM service's base URL (…/v2).")
    event_types: list[str] | None = Field(
        None, description="Routing-key patterns (`person.*`, `access.granted`, `#`)."
    )
    unit: str | None = Field(None, description="Only events about this unit's subtree.")
    secret: str | None = Field(None, description="whsec_<base64>; write-only.", repr=False)
    token: str | None = Field(None, description="SCIM bearer token; write-only.", repr=False)
    it_system: str | None = Field(
        None, description="SCIM: only accounts and roles of this IT system."
    )
    active: bool = True
    latest_state_only: bool = Field(
        False, description="A newer state supersedes an undelivered older one."
    )
    visibility: Visibility = Field("internal", description=VISIBILITY_HELP)

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not re.match(r"^https?://[^\s/]+(/\S*)?$", v):
            raise ValueError("must be an absolute http(s) URL")
        return v


class SubscriptionPatch(BaseModel):
    """Fields a PATCH may change; absent fields stay."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"active": True}, {"event_types": ["person.*"]}]}
    )

    name: str | None = Field(None, min_length=1, max_length=200)
    url: str | None = None
    event_types: list[str] | None = None
    unit: str | None = None
    secret: str | None = Field(None, repr=False)
    token: str | None = Field(None, repr=False)
    it_system: str | None = None
    active: bool | None = None
    latest_state_only: bool | None = None
    visibility: Visibility | None = None


class SubscriptionStatus(BaseModel):
    """The backlog as the database counts it (the same through every replica); the circuit and
    what is in flight as the answering replica sees them (each replica has its own breaker)."""

    circuit: Circuit
    consecutive_failures: int
    in_flight: int
    backlog: int


class SubscriptionOut(BaseModel):
    uuid: str
    version: int
    kind: Kind
    name: str
    url: str
    event_types: list[str]
    unit: str | None = None
    it_system: str | None = None
    active: bool
    latest_state_only: bool
    visibility: Visibility = Field(description=VISIBILITY_HELP)
    has_secret: bool
    has_token: bool
    created_at: datetime | None = None
    updated_at: datetime | None = None
    status: SubscriptionStatus


class ReplayOut(BaseModel):
    subscription: str
    replayed: int = Field(description="Deliveries queued again.")


class DeliveryOut(BaseModel):
    id: str
    subscription: str
    kind: Kind
    event_id: str
    event_type: str
    subject: str
    sequence: int
    event_time: datetime
    status: Literal["pending", "delivered", "failed", "superseded"]
    attempts: int
    next_attempt_at: datetime | None = None
    created_at: datetime
    delivered_at: datetime | None = None
    last_status: int | None = None
    last_error: str | None = None
    event: dict[str, Any] | None = Field(None, description="The CloudEvent sent (single reads only).")

    @classmethod
    def of(cls, doc: Mapping[str, Any]) -> DeliveryOut:
        return cls(id=doc["_id"], **{k: v for k, v in doc.items() if k in cls.model_fields and k != "id"})
