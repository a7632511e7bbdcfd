"""Events of services/access-rights: catalogue, assignments, effective rights, accounts."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from orgdir.contracts.common import AggregateState
from orgdir.contracts.orgunits import KleAspect
from orgdir.events import register, register_aggregate, register_previous
from orgdir.validity import SliceBase, Validity

#: dataversion 2 of assignment.* and access.*: KLE assignments (target ``kle``, reasons of kind ``kle``) are new
#: enumeration values, which version 1 promised never to add (docs/consumer-guide.md).
KLE_DATAVERSION = "2"


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
    kle: str | None = Field(
        None, description="KLE assignments: a kle class; everyone engaged in a unit carrying it with `aspect` holds it."
    )
    aspect: KleAspect | None = Field(None, description="KLE assignments: udførende, ansvarlig or indsigt.")


class AssignmentState(AggregateState[AssignmentSlice]):
    target: Literal["person", "unit", "job_function", "kle"]
    requested_by: str | None = None
    approved_by: str | None = None
    exclusions: list[dict[str, str]] = Field(default_factory=list)
    rejected_by: str | None = Field(
        None, description="Set when a pending request was rejected (assignment.rejected): it never grants anything."
    )
    rejected_at: datetime | None = None
    rejection_reason: str | None = None


class Reason(BaseModel):
    kind: Literal["direct", "unit", "job_function", "kle"]
    assignment: str
    unit: str | None = Field(
        None, description="unit: the assigned unit; job_function: its subtree, if any; kle: the unit carrying the KLE."
    )
    job_function: str | None = None
    role_group: str | None = None
    via_unit: str | None = Field(
        None, description="The person's own unit through which a unit/job-function/KLE right holds."
    )
    kle: str | None = Field(None, description="kle: the kle class the unit carries.")
    aspect: KleAspect | None = Field(None, description="kle: the aspect the unit carries it with.")


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
for _verb, _text in (
    ("created", "A role assignment was created."),
    ("updated", "A role assignment changed from a date."),
    ("approved", "A role assignment: approved."),
    ("rejected", "A pending role assignment was rejected: it stays pending and never grants (see rejected_by)."),
    ("terminated", "A role assignment ends from a date."),
    ("effective", "A future-dated change of a role assignment became current today."),
):
    register(f"assignment.{_verb}", AssignmentState, _text, KLE_DATAVERSION)
register("access.granted", AccessChange, "A person gained a right (from its validity.from).", KLE_DATAVERSION)
register("access.revoked", AccessChange, "A person lost a right (from its validity.to).", KLE_DATAVERSION)
register(
    "access.current",
    RightsState,
    "A person's current set of rights, re-sent by republish or a refresh (no right changed); same sequence "
    "stream as access.granted/access.revoked.",
    KLE_DATAVERSION,
)


# Version 1 of assignment.* and access.* is still emitted beside version 2 for this release
# (docs/consumer-guide.md): a KLE reason reads as what it is on the ground, a right via the unit
# that carries the KLE number; a KLE assignment, which version 1 has no words for, is left out.
V1_TARGETS = {"person", "unit", "job_function"}
V1_STATUSES = {"pending", "approved", "active"}


def _reason_v1(reason: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in reason.items() if k not in ("kle", "aspect")}
    if reason.get("kind") == "kle":
        out.update(kind="unit", via_unit=reason.get("via_unit") or reason.get("unit"))
    return out


def _rights_v1(rights: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, "reasons": [_reason_v1(x) for x in r.get("reasons", [])]} for r in rights]


def assignment_v1(data: dict[str, Any]) -> dict[str, Any] | None:
    if data.get("target") not in V1_TARGETS:
        return None
    timeline = data.get("timeline", [])
    if any(x.get("status", "active") not in V1_STATUSES for x in timeline):
        return None
    return {**data, "timeline": [{k: v for k, v in x.items() if k not in ("kle", "aspect")} for x in timeline]}


def access_v1(data: dict[str, Any]) -> dict[str, Any]:
    out = {**data, "rights": _rights_v1(data.get("rights", []))}
    if "reasons" in data:
        out["reasons"] = [_reason_v1(x) for x in data["reasons"]]
    return out


for _verb in ("created", "updated", "approved", "terminated", "effective"):  # the types version 1 had
    register_previous(f"assignment.{_verb}", "1", assignment_v1)
for _type in ("access.granted", "access.revoked", "access.current"):
    register_previous(_type, "1", access_v1)

for _verb, _text in (
    ("requested", "An account should be created in an IT system."),
    ("enabled", "A disabled account is in use again."),
    ("disabled", "An account must be disabled (offboarding)."),
    ("deleted", "An account must be deleted (offboarding)."),
):
    register(f"account.{_verb}", AccountState, _text)
