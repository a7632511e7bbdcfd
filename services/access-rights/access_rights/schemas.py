"""Request and response models of the access-rights API.

Catalogue bodies carry one slice (its fields and a ``validity``, ``from``
defaulting to today); PATCH bodies name the fields to change over a period.
Responses are the aggregates' states (``orgdir.contracts.access``) with the
slice ``current`` on the day read, and the effective-rights reads.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from orgdir.contracts.access import (
    AssignmentSlice,
    AssignmentState,
    ITSystemFields,
    ITSystemSlice,
    ITSystemState,
    Reason,
    Right,
    RoleGroupSlice,
    RoleGroupState,
    RoleSlice,
    RoleState,
)
from orgdir.contracts.orgunits import KleAspect
from orgdir.schemas import ValidityIn
from orgdir.validity import SliceBase, Validity, at

# ---------------------------------------------------------------------------- requests


class SliceIn(BaseModel):
    """One slice as clients write it; ``validity.from`` defaults to today."""

    model_config = ConfigDict(extra="forbid")

    validity: ValidityIn = Field(default_factory=ValidityIn, description="Default: from today, open-ended.")

    def fields(self) -> dict[str, Any]:
        return self.model_dump(exclude={"validity"})


class ITSystemIn(SliceIn, ITSystemFields):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "validity": {"from": "2024-01-01", "to": None},
                    "user_key": "AD",
                    "name": "Active Directory",
                    "username_rule": "{given:3}{surname:3}",
                    "offboarding": "disable",
                    "grace_days": 30,
                }
            ]
        },
    )



class RoleIn(SliceIn):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"validity": {"from": "2024-01-01"}, "it_system": "sys-ad", "name": "VPN", "sensitive": False}]
        },
    )

    it_system: str = Field(description="The IT system the role belongs to (fixed for its life).")
    name: str
    description: str = ""
    sensitive: bool = Field(False, description="Person assignments need a second person's approval.")


class RoleGroupIn(SliceIn):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"validity": {"from": "2024-01-01"}, "name": "Kontor", "roles": ["role-a", "role-b"]}]
        },
    )

    name: str
    roles: list[str] = Field(description="Each role once; at least one.")


class AssignmentIn(SliceIn):
    """A role or a role group, to a person, a unit (optionally its subtree) or a job function.

    The status is not written: the approval workflow sets it.
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"validity": {"from": "2025-01-01"}, "role": "role-a", "unit": "u-forv-a", "inherit": True},
                {"validity": {"from": "2025-01-01"}, "role_group": "g-1", "job_function": "jf-1", "unit": "u-1"},
                {"validity": {"from": "2025-01-01"}, "role": "role-s", "person": "p-1"},
                {"validity": {"from": "2025-01-01"}, "role": "role-k", "kle": "27.24", "aspect": "udførende"},
            ]
        },
    )

    role: str | None = None
    role_group: str | None = None
    person: str | None = None
    unit: str | None = None
    inherit: bool = Field(False, description="Unit assignment inherited by the whole subtree.")
    job_function: str | None = None
    kle: str | None = Field(
        None, description="A kle class (UUID, or a KLE number such as 27.24): everyone engaged in a unit carrying it "
        "with `aspect` on the day holds the role (target `kle`)."
    )
    aspect: KleAspect | None = Field(None, description="With `kle`: udførende, ansvarlig or indsigt.")


class PatchIn(BaseModel):
    """Fields to change from ``validity.from`` (default today) to ``validity.to`` (or open); omitted ones stay."""

    model_config = ConfigDict(extra="forbid")

    validity: ValidityIn = Field(default_factory=ValidityIn, description="Default: from today, open-ended.")

    def changes(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True, exclude={"validity"})


class ITSystemPatch(PatchIn):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"validity": {"from": "2025-06-01"}, "grace_days": 14}]}
    )

    user_key: str | None = None
    name: str | None = None
    username_rule: str | None = None
    offboarding: Literal["disable", "delete"] | None = None
    grace_days: int | None = Field(None, ge=0)


class RolePatch(PatchIn):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"validity": {"from": "2025-06-01"}, "name": "VPN (ny)"}]}
    )

    it_system: str | None = Field(None, description="Cannot change: a role keeps its IT system.")
    name: str | None = None
    description: str | None = None
    sensitive: bool | None = None


class RoleGroupPatch(PatchIn):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"validity": {"from": "2025-06-01"}, "roles": ["role-a"]}]}
    )

    name: str | None = None
    roles: list[str] | None = None


class AssignmentPatch(PatchIn):
    """Only ``inherit`` changes in place; anything else is a new assignment."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"validity": {"from": "2025-06-01"}, "inherit": False}]}
    )

    inherit: bool | None = None


class ExclusionIn(BaseModel):
    """Exempts one person from an inherited (unit or job-function) assignment."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"person": "p-2", "reason": "Orlov"}]})

    person: str
    reason: str


class RejectIn(BaseModel):
    """Why a pending assignment is rejected (kept in its history and its event)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"reason": "Not needed for the job."}]})

    reason: str | None = Field(None, max_length=1000)


# ---------------------------------------------------------------------------- catalogue responses


class ITSystemOut(ITSystemState):
    current: ITSystemSlice | None = Field(description="The slice in force on the day read (`at`).")


class RoleOut(RoleState):
    current: RoleSlice | None = Field(description="The slice in force on the day read (`at`).")


class RoleGroupOut(RoleGroupState):
    current: RoleGroupSlice | None = Field(description="The slice in force on the day read (`at`).")


class AssignmentOut(AssignmentState):
    current: AssignmentSlice | None = Field(description="The slice in force on the day read (`at`).")


CatalogueOut = ITSystemOut | RoleOut | RoleGroupOut | AssignmentOut


def catalogue_out(model: type[BaseModel], doc: dict[str, Any], day: date) -> Any:
    """A stored document as its response: the state and the slice in force on ``day``."""
    state = model.model_validate({"uuid": doc["_id"], "version": doc["version"], **doc["state"], "current": None})
    timeline: list[SliceBase] = state.timeline  # type: ignore[attr-defined]
    return state.model_copy(update={"current": at(timeline, day)})


# ---------------------------------------------------------------------------- rights


class NamedRight(Right):
    """A right with the latest names of its role and IT system."""

    role_name: str | None = None
    it_system_name: str | None = None


class PersonRights(BaseModel):
    person: str
    at: date
    rights: list[NamedRight] = Field(description="Held on `at`; with `history=true` every period.")


class Holder(BaseModel):
    person: str
    validity: Validity
    reasons: list[Reason]


class Holders(BaseModel):
    """A cursor page of a role's holders on ``at``."""

    role: str
    at: date
    items: list[Holder]
    next_cursor: str | None = None


class ToMembers(BaseModel):
    model_config = ConfigDict(extra="forbid")

    members: Literal[True] = Field(description="Every member of the unit.")


class ToJobFunction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job_function: str | None = Field(description="Members with this job function.")


class UnitRight(BaseModel):
    role: str
    it_system: str
    applies_to: ToMembers | ToJobFunction
    reason: Reason
    role_name: str | None = None
    it_system_name: str | None = None


class UnitRights(BaseModel):
    unit: str
    at: date
    ancestors: list[str] = Field(description="The units above, nearest first, on `at`.")
    rights: list[UnitRight]
    members: list[str] = Field(description="Persons with an engagement in the unit itself on `at`.")


# ---------------------------------------------------------------------------- held batches


class BatchCount(BaseModel):
    role: str
    it_system: str
    count: int
    role_name: str | None = None
    it_system_name: str | None = None


class BatchCause(BaseModel):
    what: str
    time: datetime | None = None


class HeldRevocation(BaseModel):
    person: str
    role: str
    it_system: str
    stop: date = Field(description="The first day the right no longer held.")
    validity: Validity


class HeldBatch(BaseModel):
    """Revocations the mass-change guard held back, until an administrator releases or cancels them."""

    id: str
    status: Literal["held", "released", "cancelled"]
    created_at: datetime
    cause: BatchCause
    persons: int
    revocation_count: int
    counts: list[BatchCount]
    decided_by: str | None = None
    decided_at: datetime | None = None


class HeldBatchDetail(HeldBatch):
    revocations: list[HeldRevocation]
