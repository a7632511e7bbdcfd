"""Events of services/registry: persons, engagements, managers, associations, leaves.

CPR numbers never appear in events: a person carries ``has_cpr`` and a keyed
hash (HMAC-SHA256 with the deployment's key) for matching.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from orgdir.contracts.common import AggregateState
from orgdir.events import register_aggregate
from orgdir.validity import SliceBase


class ContactAddress(BaseModel):
    scope: Literal["email", "phone", "location"]
    value: str
    address_type: str | None = Field(None, description="UUID of an address_type class.")
    visibility: str | None = Field(
        None,
        description="UUID of a visibility class (offentlig, intern, hemmelig); null reads as intern. "
        "Events carry every address; readers and downstream targets get only what they may see.",
    )


class PersonSlice(SliceBase):
    given_name: str
    surname: str
    nickname: str | None = None
    user_key: str | None = None
    addresses: list[ContactAddress] = Field(default_factory=list)


class PersonState(AggregateState[PersonSlice]):
    has_cpr: bool = False
    cpr_hash: str | None = Field(None, description="HMAC-SHA256 of the CPR number, hex.")


class EngagementSlice(SliceBase):
    person: str
    unit: str
    job_function: str = Field(description="UUID of a job_function class.")
    engagement_type: str = Field(description="UUID of an engagement_type class.")
    primary: bool = False
    fraction: float | None = Field(None, ge=0, le=1)
    user_key: str | None = Field(None, description="The HR system's employment number.")


class EngagementState(AggregateState[EngagementSlice]):
    person: str
    unit: str = Field(description="The unit of the slice in force (or the last one).")


class ManagerSlice(SliceBase):
    person: str | None = Field(None, description="Null while the position is vacant.")
    unit: str
    manager_type: str
    manager_level: str
    responsibilities: list[str] = Field(default_factory=list, description="UUIDs of responsibility classes.")


class ManagerState(AggregateState[ManagerSlice]):
    unit: str


class AssociationSlice(SliceBase):
    person: str
    unit: str
    association_type: str
    substitute: str | None = Field(None, description="UUID of the person who stands in (OS2mo's substitute).")
    trade_union: str | None = Field(None, description="UUID of a trade_union class.")


class AssociationState(AggregateState[AssociationSlice]):
    person: str


class LeaveSlice(SliceBase):
    person: str
    engagement: str
    leave_type: str


class LeaveState(AggregateState[LeaveSlice]):
    person: str


for _agg, _model, _what in (
    ("person", PersonState, "person"),
    ("engagement", EngagementState, "engagement"),
    ("manager", ManagerState, "manager"),
    ("association", AssociationState, "association"),
    ("leave", LeaveState, "leave"),
):
    register_aggregate(_agg, _model, _what)
