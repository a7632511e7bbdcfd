"""Events of services/orgunits: facets, classes and organisation units."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from orgdir.contracts.common import AggregateState
from orgdir.events import register_aggregate
from orgdir.validity import SliceBase

AddressScope = Literal["email", "phone", "postal", "ean", "pnumber", "www", "text"]
KleAspect = Literal["udførende", "ansvarlig", "indsigt"]
KLE_ASPECTS: tuple[KleAspect, ...] = ("udførende", "ansvarlig", "indsigt")


class FacetSlice(SliceBase):
    user_key: str
    description: str = ""


class FacetState(AggregateState[FacetSlice]):
    """A facet: a named vocabulary such as ``job_function``."""


class ClassSlice(SliceBase):
    user_key: str
    name: str
    scope: AddressScope | None = Field(None, description="For address_type classes: the kind of value.")
    parent: str | None = Field(None, description="UUID of a parent class in the same facet.")


class ClassState(AggregateState[ClassSlice]):
    facet: str = Field(description="The facet's user_key, e.g. job_function.")
    facet_uuid: str


class UnitAddress(BaseModel):
    address_type: str = Field(description="UUID of an address_type class.")
    scope: AddressScope
    value: str
    visibility: str | None = Field(
        None, description="UUID of a visibility class (offentlig, intern, hemmelig); null reads as intern."
    )


class UnitKle(BaseModel):
    """A KLE number the unit works with, and how (OS2mo's KLE aspects)."""

    kle: str = Field(description="UUID of a class of the kle facet (a main group, group or topic).")
    aspects: list[KleAspect] = Field(description="Each aspect once, in the order udførende, ansvarlig, indsigt.")


class OrgUnitSlice(SliceBase):
    user_key: str
    name: str
    unit_type: str | None = Field(None, description="UUID of a unit_type class.")
    unit_level: str | None = Field(None, description="UUID of a unit_level class.")
    parent: str | None = Field(None, description="Parent unit UUID; null for a root.")
    addresses: list[UnitAddress] = Field(default_factory=list)
    hierarchy: str | None = Field(
        None,
        description="UUID of a unit_hierarchy class (the line organisation, MED, a project …); a unit's parent "
        "is in the same hierarchy. Null only in states written before hierarchies existed: the line organisation.",
    )
    kle: list[UnitKle] = Field(default_factory=list, description="KLE numbers with aspects, each number once.")


class OrgUnitState(AggregateState[OrgUnitSlice]):
    """A unit's whole life: names, types, parents and addresses over time."""


class RelatedUnitSlice(SliceBase):
    """A period in which the two units are related (no other fields: the pair is fixed)."""


class RelatedUnitState(AggregateState[RelatedUnitSlice]):
    """Two units related to each other (e.g. after a merger), as OS2mo's related units."""

    units: list[str] = Field(description="The two units' UUIDs, sorted; fixed for the relation's life.")


register_aggregate("facet", FacetState, "facet", ("created", "updated"))
register_aggregate("class", ClassState, "class", ("created", "updated", "terminated", "effective"))
register_aggregate(
    "orgunit", OrgUnitState, "organisation unit", ("created", "updated", "moved", "terminated", "effective")
)
register_aggregate("related_unit", RelatedUnitState, "relation between two units", ("created", "updated", "terminated"))
