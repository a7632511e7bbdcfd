"""Half-open validity intervals ``[from, to)`` and timelines of slices.

A timeline is a sorted list of non-overlapping slices; each slice is a
pydantic model with a ``validity`` field plus the aggregate's fields for that
period. Gaps are allowed (a unit terminated and revived later). All functions
are pure: they return new lists and never mutate their input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import date
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Validity(BaseModel):
    """``[from, to)``: ``to`` is the first day the fact no longer holds; None is open."""

    model_config = ConfigDict(populate_by_name=True, frozen=True)

    from_: date = Field(alias="from")
    to: date | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Validity:
        if self.to is not None and self.to <= self.from_:
            raise ValueError(
                f"validity.to ({self.to}) must be after validity.from ({self.from_}); "
                "intervals are half-open [from, to)"
            )
        return self

    def contains(self, day: date) -> bool:
        return self.from_ <= day and (self.to is None or day < self.to)

    def end_ord(self) -> int:
        return self.to.toordinal() if self.to else date.max.toordinal() + 1

    def overlaps(self, other: Validity) -> bool:
        return self.from_.toordinal() < other.end_ord() and other.from_.toordinal() < self.end_ord()

    def covers(self, other: Validity) -> bool:
        return self.from_ <= other.from_ and other.end_ord() <= self.end_ord()

    def intersect(self, other: Validity) -> Validity | None:
        if not self.overlaps(other):
            return None
        start = max(self.from_, other.from_)
        ends = [d for d in (self.to, other.to) if d is not None]
        return Validity(from_=start, to=min(ends) if ends else None)

    def dump(self) -> dict[str, Any]:
        return {"from": self.from_.isoformat(), "to": self.to.isoformat() if self.to else None}


class SliceBase(BaseModel):
    """One period of an aggregate's life; subclasses add the fields."""

    model_config = ConfigDict(populate_by_name=True)

    validity: Validity

    def same_state(self, other: SliceBase) -> bool:
        return self.model_dump(exclude={"validity"}) == other.model_dump(exclude={"validity"})

    def with_validity(self: S, validity: Validity) -> S:
        return self.model_copy(update={"validity": validity})


S = TypeVar("S", bound=SliceBase)


def at(timeline: Sequence[S], day: date) -> S | None:
    """The slice in force on ``day``."""
    for s in timeline:
        if s.validity.contains(day):
            return s
    return None


def normalize(timeline: Iterable[S]) -> list[S]:
    """Sort and merge adjacent slices whose state is equal."""
    out: list[S] = []
    for s in sorted(timeline, key=lambda s: s.validity.from_):
        if out and out[-1].validity.to == s.validity.from_ and out[-1].same_state(s):
            out[-1] = out[-1].with_validity(Validity(from_=out[-1].validity.from_, to=s.validity.to))
        else:
            out.append(s)
    return out


def _split(timeline: Sequence[S], day: date) -> list[S]:
    out: list[S] = []
    for s in timeline:
        if s.validity.from_ < day and s.validity.contains(day):
            out.append(s.with_validity(Validity(from_=s.validity.from_, to=day)))
            out.append(s.with_validity(Validity(from_=day, to=s.validity.to)))
        else:
            out.append(s)
    return out


def apply(timeline: Sequence[S], period: Validity, change: Callable[[S], S] | dict[str, Any]) -> list[S]:
    """Apply ``change`` to whatever holds within ``period``; gaps stay gaps."""
    parts = _split(timeline, period.from_)
    if period.to is not None:
        parts = _split(parts, period.to)
    out: list[S] = []
    for s in parts:
        if period.covers(s.validity):
            if callable(change):
                s = change(s)
            else:
                s = type(s).model_validate({**s.model_dump(), **change, "validity": s.validity})
        out.append(s)
    return normalize(out)


def put(timeline: Sequence[S], new: S) -> list[S]:
    """Replace everything within ``new.validity`` by ``new`` (gaps filled)."""
    kept = cut(timeline, new.validity)
    return normalize([*kept, new])


def cut(timeline: Sequence[S], period: Validity) -> list[S]:
    """Remove ``period`` from the timeline."""
    parts = _split(timeline, period.from_)
    if period.to is not None:
        parts = _split(parts, period.to)
    return [s for s in parts if not period.covers(s.validity)]


def truncate(timeline: Sequence[S], day: date) -> list[S]:
    """End everything on ``day`` (termination: ``day`` is the first day it no longer holds)."""
    return cut(timeline, Validity(from_=day))


def periods(timeline: Iterable[SliceBase]) -> list[Validity]:
    """The merged periods during which the aggregate exists at all."""
    out: list[Validity] = []
    for v in sorted((s.validity for s in timeline), key=lambda v: v.from_):
        if out and out[-1].to is not None and out[-1].to >= v.from_:
            last = out[-1]
            to = None if v.to is None else max(last.to or v.to, v.to)
            out[-1] = Validity(from_=last.from_, to=to)
        elif out and out[-1].to is None:
            continue
        else:
            out.append(v)
    return out


def uncovered(timeline: Iterable[SliceBase], period: Validity) -> list[Validity]:
    """The parts of ``period`` on which the timeline has no slice."""
    gaps: list[Validity] = []
    cursor: date | None = period.from_
    for p in periods(timeline):
        if cursor is None:
            break
        if p.end_ord() <= cursor.toordinal():
            continue
        if period.to is not None and p.from_ >= period.to:
            break
        if p.from_ > cursor:
            gaps.append(Validity(from_=cursor, to=p.from_))
        cursor = p.to
    if cursor is not None and (period.to is None or cursor < period.to):
        gaps.append(Validity(from_=cursor, to=period.to))
    return gaps


def covered(timeline: Iterable[SliceBase], period: Validity) -> bool:
    return not uncovered(timeline, period)


def overlapping(timeline: Sequence[S], period: Validity) -> list[S]:
    return [s for s in timeline if s.validity.overlaps(period)]


def next_boundary(timeline: Iterable[SliceBase], after: date) -> date | None:
    """The first day after ``after`` on which what holds changes (for the scheduler)."""
    days = {s.validity.from_ for s in timeline} | {s.validity.to for s in timeline if s.validity.to}
    later = [d for d in days if d > after]
    return min(later) if later else None


def boundaries(timeline: Iterable[SliceBase]) -> list[date]:
    days = {s.validity.from_ for s in timeline} | {s.validity.to for s in timeline if s.validity.to}
    return sorted(days)
