"""Request and response models of the registry's HTTP API.

Requests: a full body per kind (POST, PUT) and a partial one (PATCH), each
with the shared ``ValidityIn``. Responses are the contract's slices with the
aggregate's ``uuid`` and ``version`` (persons add the masked CPR), plus the
composed reads (overview, unit people, manager, search, projection, audit).
"""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field

from orgdir.contracts.registry import (
    AssociationSlice,
    ContactAddress,
    EngagementSlice,
    LeaveSlice,
    ManagerSlice,
    PersonSlice,
)
from orgdir.schemas import History, ValidityIn
from orgdir.validity import Validity

# --- requests ----------------------------------------------------------------------------------


class WriteBase(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    validity: ValidityIn = Field(default_factory=ValidityIn)


class PersonIn(WriteBase):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "given_name": "Søren",
                    "surname": "Kierkegaard",
                    "cpr": "050513-1234",
                    "addresses": [{"scope": "email", "value": "sk@aarhus.dk"}],
                    "validity": {"from": "2026-01-01", "to": None},
                }
            ]
        }
    )

    given_name: str = Field(min_length=1)
    surname: str = Field(min_length=1)
    nickname: str | None = None
    user_key: str | None = None
    addresses: list[ContactAddress] = Field(default_factory=list)
    cpr: str | None = Field(
        None,
        description="10 digits (DDMMYY-XXXX accepted); shown unmasked only with orgdir:read:cpr.",
    )


class PersonPatch(WriteBase):
    given_name: str | None = Field(None, min_length=1)
    surname: str | None = Field(None, min_length=1)
    nickname: str | None = None
    user_key: str | None = None
    addresses: list[ContactAddress] | None = None
    cpr: str | None = None


class EngagementIn(WriteBase):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "person": "7f1c9a52-3d1e-4a57-8a8e-2a3f7b0c9d11",
                    "unit": "0b6f0a4e-5c7d-4f5b-9a0e-6d8c2b1e3f40",
                    "job_function": "3c2b1a09-8f7e-4d6c-b5a4-93827160f5e4",
                    "engagement_type": "9e8d7c6b-5a49-4382-a716-f5e4d3c2b1a0",
                    "primary": True,
                    "fraction": 1.0,
                    "user_key": "HR00042",
                    "validity": {"from": "2026-02-01", "to": None},
                }
            ]
        }
    )

    person: str
    unit: str
    job_function: str
    engagement_type: str
    primary: bool = False
    fraction: float | None = Field(None, ge=0, le=1)
    user_key: str | None = None


class EngagementPatch(WriteBase):
    person: str | None = None
    unit: str | None = None
    job_function: str | None = None
    engagement_type: str | None = None
    primary: bool | None = None
    fraction: float | None = Field(None, ge=0, le=1)
    user_key: str | None = None


class ManagerIn(WriteBase):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "person": None,
                    "unit": "0b6f0a4e-5c7d-4f5b-9a0e-6d8c2b1e3f40",
                    "manager_type": "5d4c3b2a-1908-4f7e-8d6c-5b4a39281706",
                    "manager_level": "6e5d4c3b-2a19-4087-9f6e-5d4c3b2a1908",
                    "responsibilities": [],
                    "validity": {"from": "2026-01-01", "to": None},
                }
            ]
        }
    )

    person: str | None = None
    unit: str
    manager_type: str
    manager_level: str
    responsibilities: list[str] = Field(default_factory=list)


class ManagerPatch(WriteBase):
    person: str | None = None
    unit: str | None = None
    manager_type: str | None = None
    manager_level: str | None = None
    responsibilities: list[str] | None = None


class AssociationIn(WriteBase):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "person": "7f1c9a52-3d1e-4a57-8a8e-2a3f7b0c9d11",
                    "unit": "0b6f0a4e-5c7d-4f5b-9a0e-6d8c2b1e3f40",
                    "association_type": "2a1b0c9d-8e7f-4a6b-9c5d-4e3f2a1b0c9d",
                    "substitute": "8e2d0b63-4e2f-4b68-9b9f-3b4a8c1d0e22",
                    "trade_union": "1b0a9c8d-7e6f-4d5c-8b4a-3f2e1d0c9b8a",
                    "validity": {"from": "2026-01-01", "to": None},
                }
            ]
        }
    )

    person: str
    unit: str
    association_type: str
    substitute: str | None = Field(None, description="A person who stands in; active over the validity.")
    trade_union: str | None = Field(None, description="A class of the trade_union facet.")


class AssociationPatch(WriteBase):
    person: str | None = None
    unit: str | None = None
    association_type: str | None = None
    substitute: str | None = None
    trade_union: str | None = None


class LeaveIn(WriteBase):
    person: str
    engagement: str
    leave_type: str


class LeavePatch(WriteBase):
    person: str | None = None
    engagement: str | None = None
    leave_type: str | None = None


# --- one aggregate as it is on a day ------------------------------------------------------------


class PersonOut(PersonSlice):
    uuid: str
    version: int
    has_cpr: bool
    cpr: str | None = Field(description="DDMMYY-XXXX, the last four digits only with orgdir:read:cpr.")


class EngagementOut(EngagementSlice):
    uuid: str
    version: int


class ManagerOut(ManagerSlice):
    uuid: str
    version: int


class AssociationOut(AssociationSlice):
    uuid: str
    version: int


class LeaveOut(LeaveSlice):
    uuid: str
    version: int


# A write answers the slice in force today (or the last one) and the whole timeline.


class PersonWritten(PersonOut):
    timeline: list[PersonSlice]


class EngagementWritten(EngagementOut):
    timeline: list[EngagementSlice]


class ManagerWritten(ManagerOut):
    timeline: list[ManagerSlice]


class AssociationWritten(AssociationOut):
    timeline: list[AssociationSlice]


class LeaveWritten(LeaveOut):
    timeline: list[LeaveSlice]


class PersonHistory(History):
    """The shared history, with the person's CPR number (masked unless orgdir:read:cpr; such reads are audited)."""

    has_cpr: bool
    cpr: str | None


# --- composed reads ----------------------------------------------------------------------------


class ClassRef(BaseModel):
    uuid: str
    user_key: str | None
    name: str | None


class PathStep(BaseModel):
    uuid: str
    name: str
    user_key: str


class UnitRef(BaseModel):
    uuid: str
    name: str | None
    user_key: str | None


class UnitWithPath(UnitRef):
    path: list[PathStep] = Field(description="Root first.")


class PersonRef(BaseModel):
    uuid: str
    name: str | None
    given_name: str | None = None
    surname: str | None = None
    nickname: str | None = None


class ManagerPosition(BaseModel):
    uuid: str
    version: int
    person: PersonRef | None = Field(description="Null while the position is vacant.")
    manager_type: ClassRef
    manager_level: ClassRef
    responsibilities: list[ClassRef]
    validity: Validity


class UnitManager(BaseModel):
    """The nearest filled manager position from ``unit`` up to the root."""

    unit: str
    inherited: bool = Field(description="True when the position is in a unit above.")
    manager_unit: UnitRef | None = Field(None, description="The unit of the position.")
    manager: ManagerPosition | None = Field(description="Null when no unit above has a filled position.")


class OverviewEngagement(BaseModel):
    uuid: str
    version: int
    validity: Validity
    unit: UnitWithPath
    job_function: ClassRef
    engagement_type: ClassRef
    primary: bool
    fraction: float | None
    user_key: str | None


class ManagerRole(BaseModel):
    uuid: str
    unit: UnitWithPath
    manager_type: ClassRef
    manager_level: ClassRef
    responsibilities: list[ClassRef]
    validity: Validity


class OverviewAssociation(BaseModel):
    uuid: str
    unit: UnitWithPath
    association_type: ClassRef
    substitute: PersonRef | None = None
    trade_union: ClassRef | None = None
    validity: Validity


class OverviewLeave(BaseModel):
    uuid: str
    engagement: str
    leave_type: ClassRef
    validity: Validity


class Overview(BaseModel):
    """Everything about a person on a day; ``managers`` are the person's own managers (per unit)."""

    at: date
    person: PersonOut
    engagements: list[OverviewEngagement]
    managers: list[UnitManager]
    manager_roles: list[ManagerRole]
    associations: list[OverviewAssociation]
    leaves: list[OverviewLeave]


class UnitPerson(BaseModel):
    """An engagement in force in the unit (or its subtree)."""

    engagement: str
    person: PersonRef
    unit: UnitRef
    job_function: ClassRef
    engagement_type: ClassRef
    primary: bool
    fraction: float | None
    validity: Validity


class UnitName(BaseModel):
    uuid: str
    name: str | None


class SearchHit(BaseModel):
    uuid: str
    given_name: str
    surname: str
    nickname: str | None
    emails: list[str]
    phones: list[str]
    locations: list[str]
    units: list[UnitName]


class SearchResults(BaseModel):
    """The best matches (one page only: ``next_cursor`` is always null)."""

    items: list[SearchHit]
    next_cursor: None = None


class AuditEntry(BaseModel):
    id: str
    at: datetime
    actor: str
    person: str
    endpoint: str
    action: str


class ProjectedUnit(BaseModel):
    uuid: str
    name: str
    user_key: str
    parent: str | None
    active_from: date = Field(description="First day of the unbroken period that holds the day asked.")


class ProjectedClass(BaseModel):
    facet: str
    uuid: str
    user_key: str | None
    name: str | None
    active_from: date | None
