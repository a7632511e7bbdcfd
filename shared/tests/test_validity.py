"""Pure timeline logic: half-open intervals, splitting, merging, coverage."""

from datetime import date

import pytest
from pydantic import ValidationError

from orgdir import validity as v
from orgdir.validity import SliceBase, Validity


class Named(SliceBase):
    name: str


def d(s: str) -> date:
    return date.fromisoformat(s)


def sl(frm: str, to: str | None, name: str) -> Named:
    return Named(validity=Validity(from_=d(frm), to=d(to) if to else None), name=name)


def test_validity_is_half_open_and_rejects_to_before_from() -> None:
    x = Validity.model_validate({"from": "2026-01-01", "to": "2026-02-01"})
    assert x.contains(d("2026-01-01")) and x.contains(d("2026-01-31"))
    assert not x.contains(d("2026-02-01"))
    with pytest.raises(ValidationError, match="must be after"):
        Validity.model_validate({"from": "2026-02-01", "to": "2026-02-01"})
    assert x.dump() == {"from": "2026-01-01", "to": "2026-02-01"}


def test_overlap_cover_intersect() -> None:
    a = Validity(from_=d("2026-01-01"), to=d("2026-03-01"))
    b = Validity(from_=d("2026-03-01"))
    assert not a.overlaps(b)  # adjacent half-open intervals do not overlap
    c = Validity(from_=d("2026-02-01"))
    assert a.overlaps(c) and c.covers(b) and not a.covers(c)
    assert a.intersect(c) == Validity(from_=d("2026-02-01"), to=d("2026-03-01"))
    assert a.intersect(b) is None


def test_apply_splits_and_changes_only_the_period() -> None:
    tl = [sl("2026-01-01", None, "Skole")]
    out = v.apply(tl, Validity(from_=d("2026-06-01")), {"name": "Skolen"})
    assert [(s.validity.from_.isoformat(), s.name) for s in out] == [("2026-01-01", "Skole"), ("2026-06-01", "Skolen")]
    assert v.at(out, d("2026-05-31")).name == "Skole"  # type: ignore[union-attr]
    assert v.at(out, d("2026-06-01")).name == "Skolen"  # type: ignore[union-attr]
    middle = v.apply(tl, Validity(from_=d("2026-03-01"), to=d("2026-04-01")), {"name": "Midl."})
    assert [s.name for s in middle] == ["Skole", "Midl.", "Skole"]
    assert middle[1].validity.to == d("2026-04-01") and middle[2].validity.from_ == d("2026-04-01")


def test_normalize_merges_equal_neighbours() -> None:
    tl = [sl("2026-01-01", "2026-02-01", "A"), sl("2026-02-01", None, "A")]
    assert v.normalize(tl) == [sl("2026-01-01", None, "A")]


def test_truncate_put_and_cut() -> None:
    tl = [sl("2026-01-01", "2026-06-01", "A"), sl("2026-06-01", None, "B")]
    assert v.truncate(tl, d("2026-03-01")) == [sl("2026-01-01", "2026-03-01", "A")]
    put = v.put(tl, sl("2026-05-01", "2026-07-01", "C"))
    assert [(s.name, str(s.validity.from_)) for s in put] == [
        ("A", "2026-01-01"),
        ("C", "2026-05-01"),
        ("B", "2026-07-01"),
    ]


def test_coverage_and_gaps() -> None:
    tl = [sl("2026-01-01", "2026-03-01", "A"), sl("2026-04-01", None, "A")]
    assert v.covered(tl, Validity(from_=d("2026-01-15"), to=d("2026-02-15")))
    gaps = v.uncovered(tl, Validity(from_=d("2026-02-01")))
    assert gaps == [Validity(from_=d("2026-03-01"), to=d("2026-04-01"))]
    assert v.uncovered([], Validity(from_=d("2026-01-01"))) == [Validity(from_=d("2026-01-01"))]
    assert v.periods(tl) == [Validity(from_=d("2026-01-01"), to=d("2026-03-01")), Validity(from_=d("2026-04-01"))]


def test_next_boundary_for_the_scheduler() -> None:
    tl = [sl("2026-01-01", "2026-03-01", "A"), sl("2026-04-01", "2026-05-01", "B")]
    assert v.next_boundary(tl, d("2026-02-01")) == d("2026-03-01")
    assert v.next_boundary(tl, d("2026-03-01")) == d("2026-04-01")
    assert v.next_boundary(tl, d("2026-05-01")) is None
