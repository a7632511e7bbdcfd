"""Shapes every aggregate's event data shares."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from orgdir.validity import SliceBase

S = TypeVar("S", bound=SliceBase)


class AggregateState(BaseModel, Generic[S]):
    """Full state: the aggregate's whole validity timeline at ``version``."""

    model_config = ConfigDict(populate_by_name=True)

    uuid: str = Field(description="The aggregate's UUID (also the event subject).")
    version: int = Field(ge=1, description="Equals the event's sequence.")
    timeline: list[S] = Field(description="Validity slices, sorted, non-overlapping, half-open.")
