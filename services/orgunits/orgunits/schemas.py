"""Request and response models of the orgunits API.

Validity input, the terminate body, pages and the history shape are the
shared ones (``orgdir.schemas``, ``orgdir.http``), so they read the same in
every service. Write answers are the aggregate's full state, the same shape
as its events' data.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from orgdir.contracts.orgunits import (
    AddressScope,
    ClassState,
    FacetState,
    KleAspect,
    OrgUnitSlice,
    OrgUnitState,
    RelatedUnitState,
    UnitAddress,
    UnitKle,
)
from orgdir.http import Page
from orgdir.schemas import History, NotNull, TerminateIn, ValidityIn
from orgdir.validity import Validity

__all__ = [
    "AddressIn",
    "ClassOut",
    "ClassPatch",
    "ClassState",
    "ClassWrite",
    "FacetOut",
    "FacetPatch",
    "FacetState",
    "FacetWrite",
    "History",
    "KleIn",
    "MoveIn",
    "OrgUnitState",
    "Page",
    "RelatedUnitIn",
    "RelatedUnitRef",
    "RelatedUnitState",
    "TerminateIn",
    "Tree",
    "TreeNode",
    "UnitFields",
    "UnitOut",
    "UnitPatch",
    "UnitWrite",
    "ValidityIn",
]

# ---------------------------------------------------------------------------- requests


class AddressIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address_type: str = Field(description="UUID (or user_key) of an address_type class.")
    value: str
    scope: AddressScope | None = Field(None, description="Optional; taken from the class.")
    visibility: str | None = Field(
        None,
        description="UUID or user_key of a visibility class: offentlig, intern (also when absent) or hemmelig "
        "(shown only to readers with orgdir:read:secret).",
    )


class KleIn(BaseModel):
    """A KLE number the unit works with, and in which aspects."""

    model_config = ConfigDict(extra="forbid")

    kle: str = Field(description="UUID of a kle class, or its number (user_key), e.g. 27.24.")
    aspects: list[KleAspect] = Field(min_length=1, max_length=3, description="udførende, ansvarlig, indsigt.")


class UnitFields(BaseModel):
    """The fields of one slice of a unit, as written by clients."""

    user_key: str = Field(min_length=1, max_length=100)
    name: str = Field(min_length=1, max_length=300)
    unit_type: str | None = Field(None, description="UUID or user_key of a unit_type class.")
    unit_level: str | None = Field(None, description="UUID or user_key of a unit_level class.")
    parent: str | None = Field(None, description="Parent unit UUID; null for a root.")
    addresses: list[AddressIn] = Field(default_factory=list)
    hierarchy: str | None = Field(
        None,
        description="UUID or user_key of a unit_hierarchy class (linje, med, projekt); default the line "
        "organisation. The parent must be in the same hierarchy.",
    )
    kle: list[KleIn] = Field(default_factory=list, max_length=500, description="KLE numbers with aspects.")


class UnitWrite(UnitFields):
    """PUT/POST body: the unit's state from ``validity.from`` (default today).

    Unknown members are ignored, not refused: clients PUT back what they read
    (with ``uuid`` and ``version``).
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_key": "BU-MUNK",
                    "name": "Munkevængets Skole",
                    "unit_type": "skole",
                    "unit_level": "afdeling",
                    "parent": "5f0e3c1a-8a53-5d5e-9f4e-0b1f6c1d2e3f",
                    "addresses": [{"address_type": "email", "value": "munk@kolding.dk"}],
                    "kle": [{"kle": "17", "aspects": ["udførende"]}],
                    "validity": {"from": "2027-01-01", "to": None},
                }
            ]
        }
    )

    validity: ValidityIn = Field(default_factory=ValidityIn)


class UnitPatch(BaseModel):
    """PATCH body: only the given fields change, from ``validity.from`` (until ``to``)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"name": "Munkevængets Skole og SFO", "validity": {"from": "2027-08-01"}}]},
    )

    user_key: Annotated[str | None, NotNull] = Field(None, min_length=1, max_length=100)
    name: Annotated[str | None, NotNull] = Field(None, min_length=1, max_length=300)
    unit_type: str | None = None
    unit_level: str | None = None
    parent: str | None = None
    addresses: list[AddressIn] | None = None
    hierarchy: str | None = Field(None, description="null: the line organisation.")
    kle: list[KleIn] | None = Field(None, max_length=500)
    validity: ValidityIn = Field(default_factory=ValidityIn)


class RelatedUnitIn(BaseModel):
    """PUT/POST body of a relation between two units, from ``validity.from`` (default today)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "units": ["5f0e3c1a-8a53-5d5e-9f4e-0b1f6c1d2e3f", "0b7a1d2c-3e4f-5a6b-7c8d-9e0f1a2b3c4d"],
                    "validity": {"from": "2027-01-01"},
                }
            ]
        }
    )

    units: list[str] = Field(min_length=2, max_length=2, description="The two units' UUIDs (any order).")
    validity: ValidityIn = Field(default_factory=ValidityIn)


class MoveIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"parent": "5f0e3c1a-8a53-5d5e-9f4e-0b1f6c1d2e3f", "validity": {"from": "2027-01-01"}}]
        },
    )

    parent: str | None = Field(description="The new parent's UUID; null makes the unit a root.")
    validity: ValidityIn = Field(default_factory=ValidityIn)


class FacetWrite(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"user_key": "skoleform", "description": "Skoleform"}]})

    user_key: str = Field(min_length=1, max_length=100, pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""


class FacetPatch(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"description": "Skoleform"}]})

    description: str


class ClassWrite(BaseModel):
    """PUT/POST body of a class: its state from ``validity.from`` (unknown members ignored, as for units)."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"facet": "job_function", "user_key": "tandplejer", "name": "Tandplejer"}]}
    )

    facet: str | None = Field(None, description="Facet UUID or user_key; required when creating.")
    user_key: str = Field(min_length=1, max_length=100)
    name: str = Field(min_length=1, max_length=300)
    scope: AddressScope | None = None
    parent: str | None = None
    validity: ValidityIn = Field(default_factory=ValidityIn)


class ClassPatch(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "Tandplejer (klinik)"}]})

    user_key: Annotated[str | None, NotNull] = Field(None, min_length=1, max_length=100)
    name: Annotated[str | None, NotNull] = Field(None, min_length=1, max_length=300)
    scope: AddressScope | None = None
    parent: str | None = None
    validity: ValidityIn = Field(default_factory=ValidityIn)


# ---------------------------------------------------------------------------- responses


class FacetOut(FacetState):
    """A facet with its current user_key and description beside its timeline."""

    user_key: str
    description: str


class ClassOut(ClassState):
    """A class with the slice in force on the day asked (else its last one) beside its timeline."""

    validity: Validity
    user_key: str
    name: str
    scope: AddressScope | None = None
    parent: str | None = None
    active: bool = Field(description="Whether the class holds on the day asked.")


class RelatedUnitRef(BaseModel):
    """A relation of a unit, seen from the unit: the other unit and the period."""

    uuid: str = Field(description="The relation's UUID (/related-units/{uuid}).")
    unit: str = Field(description="The other unit.")
    validity: Validity


class UnitOut(BaseModel):
    """A unit as of one day: the slice in force, with the unit's uuid and version."""

    model_config = ConfigDict(populate_by_name=True)

    uuid: str
    version: int
    validity: Validity = Field(description="The validity of the slice in force on the day.")
    user_key: str
    name: str
    unit_type: str | None = None
    unit_level: str | None = None
    parent: str | None = None
    addresses: list[UnitAddress] = Field(default_factory=list)
    hierarchy: str | None = Field(None, description="UUID of the unit's unit_hierarchy class.")
    kle: list[UnitKle] = Field(default_factory=list)
    related_units: list[RelatedUnitRef] = Field(default_factory=list, description="Relations holding on the day.")

    @classmethod
    def of(
        cls,
        uuid: str,
        version: int,
        s: OrgUnitSlice,
        related: list[RelatedUnitRef],
        sight: Callable[[list[UnitAddress]], list[UnitAddress]],
    ) -> UnitOut:
        """The slice as a reader sees it: only the addresses ``sight`` allows."""
        fields = {**dict(s), "addresses": sight(s.addresses)}
        return cls(uuid=uuid, version=version, **fields, related_units=related)



class TreeNode(BaseModel):
    """A unit in the tree; ``children`` is absent below the depth asked."""

    uuid: str
    user_key: str
    name: str
    unit_type: str | None
    unit_level: str | None
    hierarchy: str | None = None
    child_count: int = Field(description="Children on the day, also when they are not listed.")
    children: list[TreeNode] = Field(default_factory=list, description="Absent below the depth asked.")


class Tree(BaseModel):
    """Every unit active on the day, nested under its parent."""

    at: date
    count: int = Field(description="Units active on the day.")
    roots: list[TreeNode]
