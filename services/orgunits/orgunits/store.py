"""Storage helpers: stored documents as contract models, and the engagements projection.

The in-memory views over these documents are in ``readmodel``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection

from orgdir.contracts.orgunits import ClassState, FacetState, OrgUnitState, RelatedUnitState
from orgdir.store import Doc

NO_HISTORY = {"outbox": 0, "registrations": 0}


def unit_state(doc: Doc) -> OrgUnitState:
    return OrgUnitState.model_validate(
        {"uuid": doc["_id"], "version": doc["version"], **doc["state"]}
    )


def class_state(doc: Doc) -> ClassState:
    return ClassState.model_validate(
        {"uuid": doc["_id"], "version": doc["version"], **doc["state"]}
    )


def facet_state(doc: Doc) -> FacetState:
    return FacetState.model_validate(
        {"uuid": doc["_id"], "version": doc["version"], **doc["state"]}
    )


def related_state(doc: Doc) -> RelatedUnitState:
    return RelatedUnitState.model_validate(
        {"uuid": doc["_id"], "version": doc["version"], **doc["state"]}
    )


def engagement_body(person: str, periods: list[dict[str, Any]]) -> dict[str, Any]:
    return {"person": person, "units": sorted({p["unit"] for p in periods}), "periods": periods}


async def engagements_in(col: AsyncCollection[Doc], unit: str) -> list[Mapping[str, Any]]:
    """Projected engagements that ever were in ``unit`` (a scan; only terminations ask)."""
    return [d async for d in col.find({"units": unit}, {"periods": 1})]
