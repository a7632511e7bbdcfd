"""Events of services/access-rights: catalogue, assignments, effective rights, accounts."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from orgdir.contracts.common import AggregateState
from orgdir.events import register, register_aggregate
from orgdir.validity import SliceBase, Validity


class ITSystemFields(BaseModel):
    """An IT system's fields, as written and as published (the write model adds its validity input)."""

    user_key: str
    name: str
    username_rule: str = Field(
        "{given:3}{surname:3}",
        description="Template for account usernames: {given:N}, {surname:N}, {initials}, {user_key}.",
    )
    offboarding: Literal["disable", "delete"] = "disable"
    grace_days: int = Field(0, ge=0, description="Days the account outlives the last engagement.")


class ITSystemSlice(SliceBase, ITSystemFields):
    pass


class ITSystemState(AggregateState[ITSystemSlice]):
    pass


class RoleSlice(SliceBase):
    it_system: str
    name: str
    description: str = ""
    sensitive: bool = False


class RoleState(AggregateState[RoleSlice]):
    it_system: str


class RoleGroupSlice(SliceBase):
    name: str
    roles: list[str]


class RoleGroupState(AggregateState[RoleGroupSlice]):
    pass


class AssignmentSlice(SliceBase):
    role: str | None = None
    role_group: str | None = None
    person: str | None = None
    unit: str | None = None
    inherit: bool = Field(False, description="Unit assignment inherited by the whole subtree.")
    job_function: str | None = None
    status: Literal["pending", "approved", "active"] = "active"


class AssignmentState(AggregateState[AssignmentSlice]):
    target: Literal["person", "unit", "job_function"]
    requested_by: str | None = None
    approved_by: str | None = None
    exclusions: list[dict[str, str]] = Field(default_factory=list)


class Reason(BaseModel):
    kind: Literal["direct", "unit", "job_function"]
    assignment: str
    unit: str | None = None
    job_function: str | None = None
    role_group: str | None = None
    via_unit: str | None = Field(
        None, description="The person's own unit through which a unit/job-function right holds."
    )


class Right(BaseModel):
    role: str
    it_system: str
    validity: Validity
    reasons: list[Reason]


class AccessChange(BaseModel):
    """One right granted or revoked, with the person's full set of rights afterwards."""

    uuid: str = Field(description="The person's UUID (the event subject).")
    version: int
    person: str
    role: str
    it_system: str
    reasons: list[Reason]
    validity: Validity
    rights: list[Right] = Field(default_factory=list)
    effective_at: datetime | None = Field(
        None,
        description="Revocations: the instant the right stopped holding (start of its last day "
        "in the deployment's zone, or the causing change's time if later).",
    )


class RightsState(BaseModel):
    """A person's whole set of rights, re-sent by republish and refresh (nothing changed)."""

    uuid: str = Field(description="The person's UUID (the event subject).")
    version: int
    person: str
    rights: list[Right] = Field(default_factory=list)


class AccountState(BaseModel):
    uuid: str
    version: int
    person: str
    it_system: str
    username: str
    status: Literal["requested", "active", "disabled", "deleted"]
    disable_at: str | None = None


register_aggregate("it_system", ITSystemState, "IT system", ("created", "updated", "terminated"))
register_aggregate("role", RoleState, "role", ("created", "updated", "terminated"))
register_aggregate("role_group", RoleGroupState, "role group", ("created", "updated", "terminated"))
register_aggregate(
    "assignment",
    AssignmentState,
    "role assignment",
    ("created", "updated", "approved", "terminated", "effective"),
)
register("access.granted", AccessChange, "A person gained a right (from its validity.from).")
register("access.revoked", AccessChange, "A person lost a right (from its validity.to).")
register(
    "access.current",
    RightsState,
    "A person's current set of rights, re-sent by republish or a refresh (no right changed); same sequence "
    "stream as access.granted/access.revoked.",
)
for _verb, _text in (
    ("requested", "An account should be created in an IT system."),
    ("enabled", "A disabled account is in use again."),
    ("disabled", "An account must be disabled (offboarding)."),
    ("deleted", "An account must be deleted (offboarding)."),
):
    register(f"account.{_verb}", AccountState, _text)
