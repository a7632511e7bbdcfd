"""Notifier settings: delivery timing, retries, the circuit breaker and the replicas' leases."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from orgdir.settings import Settings


class NotifierSettings(Settings):
    """Every knob of the delivery engine; tests shrink the times, production keeps the defaults."""

    seals_data: ClassVar[bool] = True  # webhook secrets and SCIM tokens
    service_name: str = "notifier"
    delivery_timeout_seconds: float = Field(
        10.0, gt=0, description="One HTTP attempt, connect to last byte."
    )
    delivery_horizon_seconds: float = Field(
        24 * 3600.0, gt=0, description="Retry a delivery for this long, then mark it failed."
    )
    backoff_base_seconds: float = Field(
        1.0, gt=0, description="First retry delay; doubles per attempt."
    )
    backoff_max_seconds: float = Field(600.0, gt=0, description="Cap of one retry delay.")
    circuit_failures: int = Field(
        5, ge=1, description="Consecutive failures that open a target's circuit (per replica)."
    )
    circuit_cooldown_seconds: float = Field(30.0, gt=0, description="Pause of an open circuit.")
    target_concurrency: int = Field(
        16, ge=1, le=256, description="Subjects in flight per webhook target (per replica)."
    )
    scim_concurrency: int = Field(
        8,
        ge=1,
        le=64,
        description=(
            "SCIM operations in flight per target (per replica); one person's at a time. At 1 an import "
            "of 2,000 people reached the peer at about 1.5 Users/s."
        ),
    )
    delivery_lease_seconds: float = Field(
        15.0,
        gt=0,
        description=(
            "How long a replica holds a delivery it is sending; a crashed replica's deliveries "
            "are taken over this long after its last claim (never less than the timeout + 5 s)."
        ),
    )
    delivery_sweep_seconds: float = Field(
        5.0,
        gt=0,
        description="How often a replica looks for deliveries nobody holds (released or expired).",
    )

    @property
    def lease_seconds(self) -> float:
        """The lease actually taken: an attempt always fits into it."""
        return max(self.delivery_lease_seconds, self.delivery_timeout_seconds + 5.0)
