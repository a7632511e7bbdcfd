"""The registry's rules as pure functions: CPR numbers, search terms, reference checks.

Nothing here does I/O. Timelines of units, classes and the registry's own
aggregates are passed in, so every rule can be tested and reused alike.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel

from orgdir import problems, visibility
from orgdir.contracts.orgunits import ClassState, OrgUnitSlice
from orgdir.contracts.registry import (
    AssociationSlice,
    EngagementSlice,
    LeaveSlice,
    ManagerSlice,
    PersonSlice,
)
from orgdir.problems import conflict, rule
from orgdir.text import fold
from orgdir.validity import SliceBase, Validity, at, covered, overlapping, uncovered
from registry import schemas

# --- CPR ---------------------------------------------------------------------------------------

_CPR_RE = re.compile(r"^(\d{6})-?(\d{4})$")


def cpr_birth_date(digits: str) -> date | None:
    """The birth date a 10-digit CPR encodes, or None when it is not a real date.

    Century from the 7th digit (CPR-kontoret's rule): 0-3 → 1900s; 4 and 9 →
    2000s for years 00-36, else 1900s; 5-8 → 2000s for 00-57, else 1800s.
    """
    day, month, yy, seventh = int(digits[0:2]), int(digits[2:4]), int(digits[4:6]), int(digits[6])
    if seventh <= 3:
        century = 1900
    elif seventh in (4, 9):
        century = 2000 if yy <= 36 else 1900
    else:
        century = 2000 if yy <= 57 else 1800
    try:
        return date(century + yy, month, day)
    except ValueError:
        return None


def normalize_cpr(value: str) -> str:
    """``DDMMYYXXXX`` from ``DDMMYYXXXX`` or ``DDMMYY-XXXX``; raises ``invalid-cpr``."""
    m = _CPR_RE.match(value.strip())
    if not m:
        raise rule("invalid-cpr", "A CPR number is 10 digits (DDMMYY-XXXX).", field="cpr")
    digits = m.group(1) + m.group(2)
    if cpr_birth_date(digits) is None:
        raise rule(
            "invalid-cpr",
            "The first six digits of a CPR number must be a real date (DDMMYY).",
            field="cpr",
        )
    return digits


def cpr_hash(digits: str, key: str) -> str:
    return hmac.new(key.encode(), digits.encode(), hashlib.sha256).hexdigest()


CprView = Literal["full", "birthdate", "masked"]


def format_cpr(digits: str, view: CprView) -> str:
    """All of it, the birth date part only, or nothing (a birth date narrows a CPR number to ~10⁴ guesses)."""
    if view == "full":
        return f"{digits[:6]}-{digits[6:]}"
    if view == "birthdate":
        return f"{digits[:6]}-XXXX"
    return "XXXXXX-XXXX"


# --- terms for the address book ---------------------------------------------------------------

_TOKEN_RE = re.compile(r"[^\W_]+", re.UNICODE)


def tokens(text: str) -> list[str]:
    """Words of ``text`` (letters and digits), case kept; e-mail/phone parts become words.

    Composed first (NFC), so a letter typed as base + combining accent stays in its word."""
    return _TOKEN_RE.findall(unicodedata.normalize("NFC", text))


def search_terms(texts: Iterable[str]) -> set[str]:
    """Every folded term a person is found under, from names, addresses and unit names."""
    out: set[str] = set()
    for text in texts:
        if not text:
            continue
        out |= {fold(tok) for tok in tokens(text)}
        digits = re.sub(r"\D", "", text)
        if len(digits) >= 4:  # phones typed with or without spaces / country code
            out.add(digits)
            if digits.startswith("45") and len(digits) == 10:
                out.add(digits[2:])
    return {t for t in out if t}


def query_terms(q: str) -> list[set[str]]:
    """One set of alternative prefixes per word of the query: its fold (or the phone digits)."""
    out: list[set[str]] = []
    compact = re.sub(r"[\s\-+()]", "", q)
    if compact.isdigit() and len(compact) >= 4:
        return [{compact.removeprefix("45") if len(compact) == 10 else compact}]
    for tok in tokens(q):
        out.append({fold(tok)})
    return out


# --- aggregate kinds -------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """What differs between the five aggregates; the write paths are shared."""

    agg: str
    plural: str
    what: str
    slice: type[SliceBase]
    input: type[schemas.WriteBase]
    patch: type[schemas.WriteBase]
    immutable: tuple[str, ...] = ()
    filters: tuple[str, ...] = ()
    classes: Mapping[str, str] = field(default_factory=dict)
    list_classes: Mapping[str, str] = field(default_factory=dict)


PERSON = Kind("person", "persons", "person", PersonSlice, schemas.PersonIn, schemas.PersonPatch)
ENGAGEMENT = Kind(
    "engagement",
    "engagements",
    "engagement",
    EngagementSlice,
    schemas.EngagementIn,
    schemas.EngagementPatch,
    immutable=("person",),
    filters=("person", "unit"),
    classes={"job_function": "job_function", "engagement_type": "engagement_type"},
)
MANAGER = Kind(
    "manager",
    "managers",
    "manager",
    ManagerSlice,
    schemas.ManagerIn,
    schemas.ManagerPatch,
    filters=("person", "unit"),
    classes={"manager_type": "manager_type", "manager_level": "manager_level"},
    list_classes={"responsibilities": "responsibility"},
)
ASSOCIATION = Kind(
    "association",
    "associations",
    "association",
    AssociationSlice,
    schemas.AssociationIn,
    schemas.AssociationPatch,
    immutable=("person",),
    filters=("person", "unit"),
    classes={"association_type": "association_type", "trade_union": "trade_union"},
)
LEAVE = Kind(
    "leave",
    "leaves",
    "leave",
    LeaveSlice,
    schemas.LeaveIn,
    schemas.LeavePatch,
    immutable=("person",),
    filters=("person", "engagement"),
    classes={"leave_type": "leave_type"},
)
KINDS: dict[str, Kind] = {k.agg: k for k in (PERSON, ENGAGEMENT, MANAGER, ASSOCIATION, LEAVE)}


def slice_fields(body: BaseModel, *, exclude_unset: bool = False) -> dict[str, Any]:
    return body.model_dump(exclude={"validity", "cpr"}, exclude_unset=exclude_unset)


def derived(kind: Kind, timeline: Sequence[Any], today: date) -> dict[str, Any]:
    """Aggregate-level fields of the contract: the person, and the unit in force (or the last)."""
    if not timeline:
        return {}
    current = at(timeline, today) or timeline[-1]
    out: dict[str, Any] = {}
    if kind.agg in ("engagement", "association", "leave"):
        out["person"] = timeline[0].person
    if kind.agg in ("engagement", "manager"):
        out["unit"] = current.unit
    return out


# --- rules -----------------------------------------------------------------------------------


def _fmt(periods: Sequence[Validity]) -> str:
    return ", ".join(f"[{p.from_}, {p.to or '∞'})" for p in periods)


def check_immutable(kind: Kind, timeline: Sequence[SliceBase]) -> None:
    for name in kind.immutable:
        values = {getattr(s, name) for s in timeline}
        if len(values) > 1:
            raise rule(
                f"{name}-immutable",
                f"The {name} of a {kind.what} cannot change; end it and create a new one.",
                field=name,
            )


def check_unit(units: Mapping[str, Sequence[OrgUnitSlice]], unit: str, period: Validity, field_: str = "unit") -> None:
    """A unit must exist and be active over the whole period."""
    timeline = units.get(unit)
    if timeline is None:
        raise rule(
            "unknown-unit",
            f"No organisation unit {unit} is known (from orgunits events).",
            field=field_,
            unit=unit,
        )
    gaps = uncovered(timeline, period)
    if gaps:
        raise rule(
            "unit-not-active",
            f"Unit {unit} is not active over the whole period "
            f"[{period.from_}, {period.to or '∞'}); "
            f"missing {_fmt(gaps)}.",
            field=field_,
            unit=unit,
            gaps=[g.dump() for g in gaps],
        )


def check_class(classes: Mapping[str, ClassState], uuid: str, facet: str, period: Validity, field_: str) -> None:
    """A class must exist, belong to ``facet`` and be in force over the period."""
    cls = classes.get(uuid)
    if cls is None:
        raise rule("unknown-class", f"No class {uuid} is known (for {field_}).", field=field_, value=uuid)
    if cls.facet != facet:
        raise rule(
            "class-wrong-facet",
            f"{field_} must be a class of facet {facet!r}; {uuid} belongs to {cls.facet!r}.",
            field=field_,
            value=uuid,
            expected_facet=facet,
            actual_facet=cls.facet,
        )
    if cls.timeline and not covered(cls.timeline, period):
        raise rule(
            "class-not-active",
            f"Class {uuid} ({field_}) is not in force over [{period.from_}, {period.to or '∞'}).",
            field=field_,
            value=uuid,
        )


def check_person(persons: Mapping[str, Sequence[SliceBase]], person: str, period: Validity) -> None:
    timeline = persons.get(person)
    if timeline is None:
        raise rule("unknown-person", f"No person {person}.", field="person", person=person)
    gaps = uncovered(timeline, period)
    if gaps:
        raise rule(
            "person-not-active",
            f"Person {person} does not exist over the whole period; missing {_fmt(gaps)}.",
            field="person",
            person=person,
        )


def check_classes(kind: Kind, classes: Mapping[str, ClassState], s: SliceBase, period: Validity) -> None:
    for name, facet in kind.classes.items():
        value = getattr(s, name)
        if value is not None:
            check_class(classes, value, facet, period, name)
    for name, facet in kind.list_classes.items():
        for value in getattr(s, name):
            check_class(classes, value, facet, period, name)


def check_addresses(classes: Mapping[str, ClassState], s: PersonSlice, period: Validity) -> None:
    for a in s.addresses:
        if a.scope == "email" and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", a.value):
            raise rule("invalid-email", f"{a.value!r} is not an e-mail address.", field="addresses")
        if a.scope == "phone" and not re.fullmatch(r"\+?[\d\s\-()]{4,20}", a.value):
            raise rule("invalid-phone", f"{a.value!r} is not a phone number.", field="addresses")
        if a.address_type is not None:
            check_class(classes, a.address_type, "address_type", period, "addresses.address_type")
        if a.visibility is not None:
            check_class(classes, a.visibility, visibility.FACET, period, "addresses.visibility")


def check_substitute(persons: Mapping[str, Sequence[SliceBase]], s: AssociationSlice, period: Validity) -> None:
    """A substitute is another person, alive over the association's period."""
    if s.substitute is None:
        return
    if s.substitute == s.person:
        raise rule("substitute-is-person", "A person cannot be their own substitute.", field="substitute")
    timeline = persons.get(s.substitute)
    if timeline is None:
        raise rule("unknown-person", f"No person {s.substitute}.", field="substitute", person=s.substitute)
    gaps = uncovered(timeline, period)
    if gaps:
        raise rule(
            "person-not-active",
            f"The substitute {s.substitute} does not exist over the whole period; missing {_fmt(gaps)}.",
            field="substitute",
            person=s.substitute,
        )


# --- visibility of addresses --------------------------------------------------------------------


# The rule's look-up and a reader's ceiling are shared with orgunits (``orgdir.visibility``).
class_user_key = visibility.class_user_key
ceiling_of = visibility.ceiling_of


def visible_person(s: PersonSlice, ceiling: visibility.Level, classes: Mapping[str, ClassState]) -> PersonSlice:
    """The slice as a reader allowed up to ``ceiling`` sees it: addresses above it left out."""
    shown = visibility.visible(s.addresses, ceiling, class_user_key(classes))
    return s if len(shown) == len(s.addresses) else s.model_copy(update={"addresses": shown})


def keep_hidden(
    new: PersonSlice, old: PersonSlice | None, ceiling: visibility.Level, classes: Mapping[str, ClassState]
) -> PersonSlice:
    """A writer's ``addresses`` replace only those it can see: the stored ones above its ceiling stay.

    So a writer without ``orgdir:read:secret`` that reads a person and writes it
    back does not erase the secret phone number it never saw.
    """
    if old is None:
        return new
    kept = visibility.keep_hidden(new.addresses, old.addresses, ceiling, class_user_key(classes))
    return new if kept is new.addresses else new.model_copy(update={"addresses": kept})


def check_single_primary(
    engagement: str,
    timeline: Sequence[EngagementSlice],
    others: Mapping[str, Sequence[EngagementSlice]],
    period: Validity,
) -> None:
    """At most one primary engagement per person per day."""
    for s in overlapping(timeline, period):
        if not s.primary:
            continue
        for other, other_tl in others.items():
            if other == engagement:
                continue
            for o in overlapping(other_tl, s.validity):
                if o.primary:
                    clash = s.validity.intersect(o.validity)
                    assert clash is not None
                    raise rule(
                        "single-primary-engagement",
                        f"The person already has a primary engagement ({other}) in "
                        f"[{clash.from_}, {clash.to or '∞'}); at most one primary per day.",
                        field="primary",
                        conflicting=other,
                    )


def check_leave_in_engagement(
    leave: LeaveSlice, engagement: Sequence[EngagementSlice] | None, period: Validity
) -> None:
    if engagement is None:
        raise rule("unknown-engagement", f"No engagement {leave.engagement}.", field="engagement")
    if engagement and engagement[0].person != leave.person:
        raise rule(
            "leave-person-mismatch",
            f"Engagement {leave.engagement} belongs to another person.",
            field="engagement",
        )
    gaps = uncovered(engagement, period)
    if gaps:
        raise rule(
            "leave-outside-engagement",
            f"The engagement does not cover the leave; missing {_fmt(gaps)}.",
            field="validity",
            gaps=[g.dump() for g in gaps],
        )


def check_nothing_after(
    kind_what: str, day: date, dependants: Mapping[str, Sequence[SliceBase]], rule_kind: str
) -> None:
    """Termination from ``day`` is refused while dependants hold on or after it."""
    live = sorted(u for u, tl in dependants.items() if any(s.validity.end_ord() > day.toordinal() for s in tl))
    if live:
        raise conflict(
            f"{len(live)} {kind_what}(s) still hold on or after {day}; end them first.",
            kind=rule_kind,
            dependants=live[:50],
        )


def check_in_life(timeline: Sequence[SliceBase], period: Validity, what: str) -> None:
    """A PATCH changes an existing period; it cannot create life where there is none."""
    if not overlapping(timeline, period):
        raise rule(
            "not-active-in-period",
            f"The {what} does not exist in [{period.from_}, {period.to or '∞'}); nothing to change.",
            field="validity",
        )


def check_filters(kind: Kind, filters: Mapping[str, str | None]) -> None:
    """A list is filtered only by what its kind has (``engagement`` for leaves, not for persons)."""
    for name, value in filters.items():
        if value is not None and name not in kind.filters:
            raise problems.bad_request("invalid-filter", f"{kind.plural} cannot be filtered by {name}.")


def not_in_force(what: str, uuid: str, day: date, timeline: Sequence[SliceBase]) -> problems.NotFound:
    """The aggregate exists but not on ``day``: say when it does."""
    return problems.NotFound(
        "not-in-force",
        f"{what} not in force",
        f"The {what} {uuid} exists but does not hold on {day}; see validity_periods or /history.",
        validity_periods=[s.validity.dump() for s in timeline],
    )


def units_touched(
    old: Sequence[SliceBase], new: Sequence[SliceBase], since: date, unit_of_engagement: Mapping[str, set[str]]
) -> list[str | None]:
    """The units a write reaches from ``since`` on, before and after it (scoped administration).

    A unit's manager, engagement or association names its unit; a leave the
    units of its engagement; a person none (``None``: only a writer
    everywhere may change it). Both timelines count, so moving someone out
    of a scope and into one both need it.
    """
    window = Validity(from_=since)
    out: list[str | None] = []
    for s in [*overlapping(old, window), *overlapping(new, window)]:
        if (unit := getattr(s, "unit", None)) is not None:
            out.append(unit)
        elif (engagement := getattr(s, "engagement", None)) is not None:
            out.extend(sorted(unit_of_engagement.get(engagement, set())) or [None])
        else:
            out.append(None)
    return list(dict.fromkeys(out)) or [None]
