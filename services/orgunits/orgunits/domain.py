"""The rules of the organisation tree and its vocabulary, as pure functions.

Every function here works on contract models and plain mappings (a snapshot
of the other units' timelines), never on the database, so each rule is unit
tested on its own and the service layer only has to call them before it
writes. A violation raises an ``orgdir.problems`` error (``Invalid``, or
``Conflict`` for a taken user_key) whose ``kind`` names the rule; nothing has
been stored at that point.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from typing import Any

from orgdir import visibility
from orgdir.contracts.orgunits import (
    KLE_ASPECTS,
    ClassSlice,
    ClassState,
    FacetSlice,
    OrgUnitSlice,
    RelatedUnitSlice,
    RelatedUnitState,
    UnitAddress,
    UnitKle,
)
from orgdir.problems import Problem, conflict, rule
from orgdir.tree import LINE
from orgdir.validity import Validity, apply, at, normalize, overlapping, put, truncate, uncovered
from orgunits.schemas import AddressIn, KleIn, UnitFields
from orgunits.vocabulary import class_uuid

Timeline = list[OrgUnitSlice]

#: The line organisation: the hierarchy of a unit that names none (and of units stored before hierarchies).
LINE_HIERARCHY = class_uuid("unit_hierarchy", LINE)


def hierarchy_of(s: OrgUnitSlice) -> str:
    return s.hierarchy or LINE_HIERARCHY

# --------------------------------------------------------------------------- addresses

_EMAIL = re.compile(r"^[\w.!#$%&'*+/=?^`{|}~-]+@(?:[\w-]+\.)+[^\W\d_]{2,}$", re.UNICODE)
_URL = re.compile(r"^https?://(?:[\w-]+\.)+[^\W\d_]{2,}(?::\d+)?(?:[/?#]\S*)?$", re.UNICODE)
_POSTCODE = re.compile(r"(?<!\d)\d{4}(?!\d)")


def ean_check_digit(first12: str) -> int:
    """GS1 check digit: weights 1,3,1,3,… from the left over 12 digits."""
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(first12))
    return (10 - total % 10) % 10


def valid_ean(value: str) -> bool:
    return len(value) == 13 and value.isdigit() and ean_check_digit(value[:12]) == int(value[12])


def validate_address(scope: str, value: str) -> str:
    """The normalised value, or ``invalid-address`` naming what is wrong for this kind."""
    raw = value.strip()

    def bad(why: str) -> Problem:
        return rule(
            "invalid-address", f"{scope} address {value!r}: {why}", scope=scope, value=value
        )

    if not raw:
        raise bad("empty")
    compact = re.sub(r"[\s-]", "", raw)
    if scope == "email":
        if not _EMAIL.match(raw) or len(raw) > 254:
            raise bad("not an e-mail address")
        return raw
    if scope == "ean":
        if not (len(compact) == 13 and compact.isdigit()):
            raise bad("an EAN number has 13 digits")
        if not valid_ean(compact):
            raise bad(f"wrong check digit (expected {ean_check_digit(compact[:12])})")
        return compact
    if scope == "pnumber":
        if not (len(compact) == 10 and compact.isdigit()):
            raise bad("a P-number has 10 digits")
        return compact
    if scope == "phone":
        digits = compact.removeprefix("+")
        if not digits.isdigit() or not (
            (compact.startswith("+") and 7 <= len(digits) <= 15) or len(digits) == 8
        ):
            raise bad("a phone number has 8 digits, or + and 7-15 digits")
        return compact
    if scope == "www":
        url = raw if re.match(r"^[a-z]+://", raw, re.I) else f"https://{raw}"
        if not _URL.match(url):
            raise bad("not an http(s) web address")
        return url
    if scope == "postal":
        if len(raw) > 250 or not _POSTCODE.search(raw):
            raise bad("a postal address needs a 4-digit postcode, e.g. 'Akseltorv 1, 6000 Kolding'")
        return " ".join(raw.split())
    if len(raw) > 1000:
        raise bad("too long")
    return raw


# --------------------------------------------------------------------------- classes


def resolve_class(
    ref: str,
    facet: str,
    classes: Mapping[str, ClassState],
    by_key: Mapping[tuple[str, str], str],
    field: str,
) -> ClassState:
    """``ref`` is a class UUID or a user_key within ``facet``; it must belong to ``facet``."""
    cls = classes.get(ref)
    if cls is None:
        uid = by_key.get((facet, ref))
        cls = classes.get(uid) if uid else None
    if cls is None:
        raise rule(
            "unknown-class",
            f"{field}: no class {ref!r} in facet {facet}.",
            field=field,
            facet=facet,
        )
    if cls.facet != facet:
        raise rule(
            "wrong-facet",
            f"{field}: class {ref} belongs to facet {cls.facet}, not {facet}.",
            field=field,
            facet=facet,
            actual_facet=cls.facet,
        )
    return cls


def build_addresses(
    given: Sequence[AddressIn],
    classes: Mapping[str, ClassState],
    by_key: Mapping[tuple[str, str], str],
) -> list[UnitAddress]:
    out: list[UnitAddress] = []
    for i, a in enumerate(given):
        cls = resolve_class(
            a.address_type, "address_type", classes, by_key, f"addresses.{i}.address_type"
        )
        scope = cls.timeline[-1].scope if cls.timeline else None
        if scope is None:
            raise rule("wrong-facet", f"addresses.{i}: class {cls.uuid} has no address scope.")
        if a.scope is not None and a.scope != scope:
            raise rule(
                "address-scope-mismatch",
                f"addresses.{i}: address type {cls.uuid} is a {scope} address, not {a.scope}.",
            )
        seen = (
            resolve_class(a.visibility, visibility.FACET, classes, by_key, f"addresses.{i}.visibility").uuid
            if a.visibility is not None
            else None
        )
        out.append(
            UnitAddress(
                address_type=cls.uuid, scope=scope, value=validate_address(scope, a.value), visibility=seen
            )
        )
    return out


def build_kle(
    given: Sequence[KleIn],
    classes: Mapping[str, ClassState],
    by_key: Mapping[tuple[str, str], str],
) -> list[UnitKle]:
    """Each KLE number (a kle class) once, with its aspects once each, in the canonical order."""
    out: list[UnitKle] = []
    seen: dict[str, int] = {}
    for i, k in enumerate(given):
        cls = resolve_class(k.kle, "kle", classes, by_key, f"kle.{i}.kle")
        if cls.uuid in seen:
            raise rule(
                "duplicate-kle",
                f"kle.{i}: KLE {k.kle} is listed already (kle.{seen[cls.uuid]}); give all its aspects there.",
                field=f"kle.{i}.kle",
            )
        seen[cls.uuid] = i
        if len(set(k.aspects)) != len(k.aspects):
            raise rule("duplicate-aspect", f"kle.{i}.aspects: each aspect once.", field=f"kle.{i}.aspects")
        out.append(UnitKle(kle=cls.uuid, aspects=[a for a in KLE_ASPECTS if a in k.aspects]))
    return out


def check_class(
    uuid: str,
    facet: str,
    timeline: Sequence[ClassSlice],
    same_facet: Iterable[ClassState],
) -> None:
    """A class: scope iff address_type; parent in the same facet; user_key unique in the facet."""
    others = {c.uuid: c for c in same_facet if c.uuid != uuid}
    for s in timeline:
        if facet == "address_type" and s.scope is None:
            raise rule(
                "scope-required",
                "An address_type class needs a scope "
                "(email, phone, postal, ean, pnumber, www, text).",
            )
        if facet != "address_type" and s.scope is not None:
            raise rule("scope-not-allowed", f"Only address_type classes have a scope, not {facet}.")
        if s.parent is not None and s.parent not in others:
            raise rule(
                "unknown-class",
                f"parent class {s.parent} is not a class of facet {facet}.",
                field="parent",
            )
        for o in others.values():
            if any(os.user_key == s.user_key for os in o.timeline):
                raise conflict(
                    f"Facet {facet} already has a class with user_key {s.user_key!r}.",
                    kind="user-key-taken",
                    field="user_key",
                    holder=o.uuid,
                )


def check_facet(uuid: str, user_key: str, holder: str | None, current: Sequence[FacetSlice]) -> None:
    """A facet's user_key is unique and never changes (classes refer to it)."""
    if holder is not None and holder != uuid:
        raise conflict(
            f"A facet {user_key!r} exists already.", kind="user-key-taken", field="user_key", holder=holder
        )
    if current and current[0].user_key != user_key:
        raise rule("facet-key-immutable", "A facet's user_key cannot change (classes refer to it).")


def terminate_class_timeline(current: Sequence[ClassSlice], day: date) -> list[ClassSlice]:
    """Terminate a class: ``day`` is the first day it no longer holds."""
    if current and day <= current[0].validity.from_:
        raise rule("terminate-before-start", f"The class starts on {current[0].validity.from_}.")
    return truncate(current, day)


# --------------------------------------------------------------------------- units: timelines


def unit_slice(
    fields: UnitFields,
    validity: Validity,
    parent: str | None,
    unit_type: str | None,
    unit_level: str | None,
    addresses: list[UnitAddress],
    hierarchy: str = LINE_HIERARCHY,
    kle: list[UnitKle] | None = None,
) -> OrgUnitSlice:
    return OrgUnitSlice(
        validity=validity,
        user_key=fields.user_key.strip(),
        name=" ".join(fields.name.split()),
        unit_type=unit_type,
        unit_level=unit_level,
        parent=parent,
        addresses=addresses,
        hierarchy=hierarchy,
        kle=kle or [],
    )


def put_timeline(current: Sequence[OrgUnitSlice], new: OrgUnitSlice) -> Timeline:
    """PUT: the given state holds over its validity; the rest of the history stays."""
    return put(current, new)


def patch_timeline(
    current: Sequence[OrgUnitSlice], period: Validity, changes: dict[str, Any]
) -> Timeline:
    """PATCH/move: change what holds within ``period``; days the unit does not exist stay empty."""
    if uncovered(current, period) == [period]:
        raise rule(
            "unit-not-active",
            f"The unit does not exist at any day of {period.dump()}; nothing to change.",
            periods=[s.validity.dump() for s in current],
        )
    return apply(current, period, changes)


def terminate_timeline(current: Sequence[OrgUnitSlice], day: date) -> Timeline:
    """Terminate: ``day`` is the first day the unit no longer exists."""
    if current and day <= current[0].validity.from_:
        raise rule(
            "terminate-before-start",
            f"The unit starts on {current[0].validity.from_}; "
            "a termination date must be after that.",
        )
    return truncate(current, day)


def parent_changes(old: Sequence[OrgUnitSlice], new: Sequence[OrgUnitSlice]) -> bool:
    """Whether, on some day the unit exists before and after, its parent differs."""
    days = {s.validity.from_ for s in (*old, *new)} | {
        s.validity.to for s in (*old, *new) if s.validity.to
    }
    for d in days:
        a, b = at(old, d), at(new, d)
        if a is not None and b is not None and a.parent != b.parent:
            return True
    return False


def units_touched(
    uuid: str, old: Sequence[OrgUnitSlice], new: Sequence[OrgUnitSlice], since: date
) -> list[str | None]:
    """The units a write reaches from ``since`` on (scoped administration, ``orgdir.auth.check_scope``).

    Creating a unit touches its parent (a root: ``None``, only a writer
    everywhere); changing one touches the unit itself where it stands, and a
    new parent too wherever the write gives it one, so moving a unit needs the
    scope at both ends.
    """
    window = Validity(from_=since)
    if not old:
        return list(dict.fromkeys(s.parent for s in overlapping(new, window))) or [None]
    out: list[str | None] = [uuid]
    for s in overlapping(new, window):
        before = overlapping(old, s.validity)
        if not before or any(o.parent != s.parent for o in before):
            out.append(s.parent)
    return list(dict.fromkeys(out))


def with_hidden_addresses(
    old: Sequence[OrgUnitSlice],
    new: list[OrgUnitSlice],
    period: Validity,
    ceiling: visibility.Level,
    user_key_of: visibility.UserKeyOf,
) -> list[OrgUnitSlice]:
    """``new`` keeping, within ``period``, the stored addresses its writer cannot see (``visibility.keep_hidden``)."""
    if ceiling == "secret":
        return new
    for o in overlapping(old, period):
        part = o.validity.intersect(period)
        if part is None or not visibility.hidden(o.addresses, ceiling, user_key_of):
            continue

        def keep(s: OrgUnitSlice, o: OrgUnitSlice = o) -> OrgUnitSlice:
            kept = visibility.keep_hidden(s.addresses, o.addresses, ceiling, user_key_of)
            return s if kept is s.addresses else s.model_copy(update={"addresses": kept})

        new = apply(new, part, keep)
    return new


def same_timeline(a: Sequence[OrgUnitSlice], b: Sequence[OrgUnitSlice]) -> bool:
    return [s.model_dump() for s in normalize(a)] == [s.model_dump() for s in normalize(b)]


# --------------------------------------------------------------------------- units: tree rules


def check_parents(
    uuid: str, timeline: Sequence[OrgUnitSlice], units: Mapping[str, Sequence[OrgUnitSlice]]
) -> None:
    """Each slice's parent exists, is active over the slice's whole validity and is in the same hierarchy."""
    for s in timeline:
        if s.parent is None:
            continue
        if s.parent == uuid:
            raise rule(
                "cycle",
                "A unit cannot be its own parent.",
                field="parent",
                day=s.validity.from_.isoformat(),
            )
        parent = units.get(s.parent)
        if parent is None:
            raise rule(
                "parent-not-found",
                f"Parent unit {s.parent} does not exist.",
                field="parent",
                parent=s.parent,
            )
        gaps = uncovered(parent, s.validity)
        if gaps:
            raise rule(
                "parent-not-active",
                f"Parent unit {s.parent} is not active over the whole of {s.validity.dump()}.",
                field="parent",
                parent=s.parent,
                uncovered=[g.dump() for g in gaps],
            )
        for p in parent:
            overlap = p.validity.intersect(s.validity)
            if overlap is not None and hierarchy_of(p) != hierarchy_of(s):
                raise rule(
                    "parent-other-hierarchy",
                    f"Parent unit {s.parent} is in another hierarchy than the unit in {overlap.dump()}; "
                    "a unit's parent is in its own hierarchy.",
                    field="parent",
                    parent=s.parent,
                    hierarchy=hierarchy_of(s),
                    parent_hierarchy=hierarchy_of(p),
                )


def find_cycle(
    uuid: str, timeline: Sequence[OrgUnitSlice], units: Mapping[str, Sequence[OrgUnitSlice]]
) -> date | None:
    """The first day on which ``uuid`` would be its own ancestor, if any.

    Walks up from each slice's parent over exactly the period that slice
    covers, splitting by the ancestors' own slices, so a future move of any
    ancestor is taken into account day by day.
    """
    limit = len(units) + 2

    def timeline_of(u: str) -> Sequence[OrgUnitSlice]:
        return timeline if u == uuid else units.get(u, ())

    def walk(u: str, period: Validity, depth: int) -> date | None:
        if depth > limit:
            return None
        for s in timeline_of(u):
            inter = s.validity.intersect(period)
            if inter is None or s.parent is None:
                continue
            if s.parent == uuid:
                return inter.from_
            found = walk(s.parent, inter, depth + 1)
            if found is not None:
                return found
        return None

    first: date | None = None
    for s in timeline:
        if s.parent is None:
            continue
        found = s.validity.from_ if s.parent == uuid else walk(s.parent, s.validity, 1)
        if found is not None and (first is None or found < first):
            first = found
    return first


def check_no_cycle(
    uuid: str, timeline: Sequence[OrgUnitSlice], units: Mapping[str, Sequence[OrgUnitSlice]]
) -> None:
    day = find_cycle(uuid, timeline, units)
    if day is not None:
        raise rule(
            "cycle",
            f"The unit would become its own ancestor from {day}.",
            field="parent",
            day=day.isoformat(),
        )


def uncovered_children(
    uuid: str,
    timeline: Sequence[OrgUnitSlice],
    units: Mapping[str, Sequence[OrgUnitSlice]],
    children: Iterable[str],
) -> list[dict[str, Any]]:
    """Child slices under ``uuid`` that the unit's (new) timeline no longer covers."""
    out: list[dict[str, Any]] = []
    for c in sorted(set(children) - {uuid}):
        for s in units.get(c, ()):
            if s.parent == uuid and uncovered(timeline, s.validity):
                out.append(
                    {
                        "uuid": c,
                        "user_key": s.user_key,
                        "name": s.name,
                        "validity": s.validity.dump(),
                    }
                )
    return out


def check_children(
    uuid: str,
    timeline: Sequence[OrgUnitSlice],
    units: Mapping[str, Sequence[OrgUnitSlice]],
    children: Iterable[str],
) -> None:
    """Child units must stay under an active parent: terminate or move them first."""
    bad = uncovered_children(uuid, timeline, units, children)
    if bad:
        raise rule(
            "active-children",
            f"The unit still has {len({b['uuid'] for b in bad})} active child unit(s) "
            "in the period it would "
            "no longer exist; terminate or move them first.",
            children=bad,
        )


def check_children_hierarchy(
    uuid: str,
    timeline: Sequence[OrgUnitSlice],
    units: Mapping[str, Sequence[OrgUnitSlice]],
    children: Iterable[str],
) -> None:
    """A unit cannot leave its children's hierarchy: move them (or their subtree's root) first."""
    bad: list[dict[str, Any]] = []
    for c in sorted(set(children) - {uuid}):
        for cs in units.get(c, ()):
            if cs.parent != uuid:
                continue
            for s in timeline:
                overlap = s.validity.intersect(cs.validity)
                if overlap is not None and hierarchy_of(s) != hierarchy_of(cs):
                    bad.append({"uuid": c, "name": cs.name, "validity": overlap.dump()})
    if bad:
        raise rule(
            "children-other-hierarchy",
            f"{len({b['uuid'] for b in bad})} child unit(s) would be in another hierarchy than their parent; "
            "a unit's children are in its own hierarchy.",
            field="hierarchy",
            children=bad,
        )


def check_user_key(
    uuid: str,
    timeline: Sequence[OrgUnitSlice],
    units: Mapping[str, Sequence[OrgUnitSlice]],
    holders: Mapping[str, Iterable[str]],
) -> None:
    """No two units active on the same day share a user_key (compared case-insensitively)."""
    for s in timeline:
        for other in sorted(set(holders.get(s.user_key.casefold(), ())) - {uuid}):
            for o in units.get(other, ()):
                if o.user_key.casefold() == s.user_key.casefold() and o.validity.overlaps(
                    s.validity
                ):
                    overlap = o.validity.intersect(s.validity)
                    raise conflict(
                        f"user_key {s.user_key!r} is used by unit {other} "
                        f"in {overlap.dump() if overlap else ''}.",
                        kind="user-key-taken",
                        field="user_key",
                        holder=other,
                    )


def check_unit(
    uuid: str,
    timeline: Sequence[OrgUnitSlice],
    units: Mapping[str, Sequence[OrgUnitSlice]],
    children: Iterable[str],
    holders: Mapping[str, Iterable[str]],
) -> None:
    """All tree rules for a unit's proposed timeline against the others' current ones."""
    check_parents(uuid, timeline, units)
    check_no_cycle(uuid, timeline, units)
    check_children(uuid, timeline, units, children)
    check_children_hierarchy(uuid, timeline, units, children)
    check_user_key(uuid, timeline, units, holders)


def check_engagements(uuid: str, day: date, active: int) -> None:
    if active:
        raise rule(
            "active-engagements",
            f"{active} engagement(s) in unit {uuid} are active on or after {day}; "
            "end or move them first.",
            engagements=active,
        )


def engagement_periods(timeline: Iterable[Any]) -> list[dict[str, Any]]:
    """Per slice of an engagement: its unit and validity, as the projection stores them."""
    return [
        {
            "unit": s.unit,
            "from": s.validity.from_.isoformat(),
            "to": s.validity.to.isoformat() if s.validity.to else None,
        }
        for s in timeline
    ]


def count_active_engagements(docs: Iterable[Mapping[str, Any]], unit: str, day: date) -> int:
    """Engagements with a period in ``unit`` that holds on or after ``day``."""
    n = 0
    iso = day.isoformat()
    for d in docs:
        if any(
            p["unit"] == unit and (p["to"] is None or p["to"] > iso) for p in d.get("periods", [])
        ):
            n += 1
    return n


# --------------------------------------------------------------------------- related units


def related_pair(units: Sequence[str]) -> list[str]:
    """The two units of a relation, sorted; a unit is not related to itself."""
    pair = sorted(units)
    if len(pair) != 2 or pair[0] == pair[1]:
        raise rule("same-unit", "A relation needs two different units.", field="units")
    return pair


def check_relation(
    uuid: str,
    pair: Sequence[str],
    timeline: Sequence[RelatedUnitSlice],
    units: Mapping[str, Sequence[OrgUnitSlice]],
    others: Iterable[RelatedUnitState],
) -> None:
    """Both units exist over the whole relation, and the pair is not related twice on any day."""
    for u in pair:
        unit = units.get(u)
        if unit is None:
            raise rule("unknown-unit", f"units: no organisation unit {u}.", field="units", unit=u)
        for s in timeline:
            gaps = uncovered(unit, s.validity)
            if gaps:
                raise rule(
                    "unit-not-active",
                    f"units: unit {u} is not active over the whole of {s.validity.dump()}.",
                    field="units",
                    unit=u,
                    uncovered=[g.dump() for g in gaps],
                )
    for o in others:
        if o.uuid == uuid or sorted(o.units) != list(pair):
            continue
        for a in o.timeline:
            for s in timeline:
                if a.validity.overlaps(s.validity):
                    raise conflict(
                        f"units {pair[0]} and {pair[1]} are related already (relation {o.uuid}).",
                        kind="relation-exists",
                        field="units",
                        holder=o.uuid,
                    )
