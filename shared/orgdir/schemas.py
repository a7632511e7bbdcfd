"""Request and response models every service shares, so each idea has one shape on the wire.

A validity as clients write it, the terminate body, and the history of an
aggregate. Services build their own models from these instead of
redefining them (see docs/api-conventions.md).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from orgdir import problems
from orgdir.validity import Validity


def _reject_null(value: Any) -> Any:
    if value is None:
        raise ValueError("null is not allowed here; leave the field out to keep its value")
    return value


NotNull = BeforeValidator(_reject_null)
"""For PATCH fields that may be left out but not cleared: ``name: Annotated[str | None, NotNull] = None``."""


class ValidityIn(BaseModel):
    """A period as clients write it: ``from`` defaults to today, ``to`` (exclusive) to open.

    The order of the two is checked by ``resolve`` (not by pydantic), so a
    ``to`` before a defaulted ``from`` gets the same ``invalid-validity``
    problem as one before an explicit ``from``, in every service.
    """

    model_config = ConfigDict(
        populate_by_name=True,
        extra="forbid",
        json_schema_extra={"examples": [{"from": "2027-01-01", "to": None}]},
    )

    from_: date | None = Field(None, alias="from", description="First day; default today.")
    to: date | None = Field(None, description="First day it no longer holds (half-open); null is open.")

    def resolve(self, today: date, field: str = "validity") -> Validity:
        start = self.from_ or today
        if self.to is not None and self.to <= start:
            raise problems.invalid_validity(
                f"{field}.to ({self.to}) must be after {field}.from ({start}); periods are half-open [from, to)",
                field=field,
            )
        return Validity(from_=start, to=self.to)


class TerminateIn(BaseModel):
    """Ends a thing: ``to`` is the first day it no longer holds (half-open); default today."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"to": "2027-02-01"}]})

    to: date | None = Field(None, description="First day it no longer holds; default today.")

    def day(self, today: date) -> date:
        return self.to or today


class Registration(BaseModel):
    """One write: when, by whom, which event it published, and the timeline it left."""

    version: int
    registered_at: datetime
    registered_by: str
    event_type: str
    note: str | None = None
    timeline: list[dict[str, Any]] = Field(description="The whole timeline as this write left it.")


class History(BaseModel):
    """An aggregate's every slice (``timeline``) and every registration, oldest first."""

    uuid: str
    version: int
    timeline: list[dict[str, Any]]
    registrations: list[Registration]


def history_of(doc: dict[str, Any]) -> History:
    """From a repository document with its registrations (``Repository.get_full``)."""
    return History(
        uuid=str(doc["_id"]),
        version=int(doc["version"]),
        timeline=list((doc.get("state") or {}).get("timeline", [])),
        registrations=[
            Registration(
                version=r["version"],
                registered_at=r["registered_at"],
                registered_by=str(r.get("registered_by") or "system"),
                event_type=r["event_type"],
                note=r.get("note"),
                timeline=list((r.get("state") or {}).get("timeline", [])),
            )
            for r in doc.get("registrations", [])
        ],
    )
