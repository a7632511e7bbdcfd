"""Events of services/orgunits: facets, classes and organisation units."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from orgdir.contracts.common import AggregateState
from orgdir.events import register_aggregate
from orgdir.validity import SliceBase

AddressScope = Literal["email", "phone", "postal", "ean", "pnumber", "www", "text"]


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


class OrgUnitSlice(SliceBase):
    user_key: str
    name: str
    unit_type: str | None = Field(None, description="UUID of a unit_type class.")
    unit_level: str | None = Field(None, description="UUID of a unit_level class.")
    parent: str | None = Field(None, description="Parent unit UUID; null for a root.")
    addresses: list[UnitAddress] = Field(default_factory=list)


class OrgUnitState(AggregateState[OrgUnitSlice]):
    """A unit's whole life: names, types, parents and addresses over time."""


register_aggregate("facet", FacetState, "facet", ("created", "updated"))
register_aggregate("class", ClassState, "class", ("created", "updated", "terminated", "effective"))
register_aggregate(
    "orgunit", OrgUnitState, "organisation unit", ("created", "updated", "moved", "terminated", "effective")
)
