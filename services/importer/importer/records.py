"""The export's records: one frozen dataclass per kind, parsed from a row and checked on their own.

Pure: no I/O. A row is a mapping of column to value (CSV gives strings, JSON
typed values); ``parse`` turns it into a record or raises ``RecordError`` with
a message meant for the person who fixes the export. Every record carries its
``Origin`` (file and line), so anything said about it later can point there.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

#: UUIDs of imported things are uuid5(NAMESPACE, "<kind>:<source key>"): the same key, the same UUID, always.
NAMESPACE = uuid.UUID("6a0d6f43-1c2e-5b7a-9e41-0f3d2b8c7a15")

#: the kinds, in the order they are read, planned and written
KINDS: tuple[str, ...] = (
    "units", "persons", "engagements", "managers", "associations", "leaves", "it_systems", "roles", "role_groups",
    "assignments",
)
#: the kinds access-rights holds (the role catalogue and its assignments)
ACCESS_KINDS: tuple[str, ...] = ("it_systems", "roles", "role_groups", "assignments")
#: kinds many HR systems do not hold: ``--full-sync`` ends them only when the export has records of the kind
OPTIONAL_KINDS: tuple[str, ...] = ("associations", *ACCESS_KINDS)

#: CSV header of each kind (also the JSON members); ``from``/``to`` are ISO dates, ``to`` exclusive
COLUMNS: dict[str, tuple[str, ...]] = {
    "units": ("key", "name", "parent", "unit_type", "unit_level", "email", "phone", "address", "from", "to"),
    "persons": ("key", "given_name", "surname", "cpr", "email", "phone", "from", "to"),
    "engagements": (
        "key", "person", "unit", "job_function", "engagement_type", "primary", "fraction", "from", "to",
    ),
    "managers": ("key", "unit", "person", "manager_type", "manager_level", "responsibilities", "from", "to"),
    "associations": ("key", "person", "unit", "association_type", "substitute", "trade_union", "from", "to"),
    "leaves": ("key", "person", "engagement", "leave_type", "from", "to"),
    "it_systems": ("key", "name", "username_rule", "offboarding", "grace_days", "from", "to"),
    "roles": ("key", "it_system", "name", "description", "sensitive", "from", "to"),
    "role_groups": ("key", "name", "roles", "from", "to"),
    "assignments": ("key", "role", "role_group", "unit", "inherit", "job_function", "person", "from", "to"),
}
REQUIRED: dict[str, tuple[str, ...]] = {
    "units": ("key", "name", "unit_type", "from"),
    "persons": ("key", "given_name", "surname", "from"),
    "engagements": ("key", "person", "unit", "job_function", "engagement_type", "from"),
    "managers": ("key", "unit", "manager_type", "manager_level", "from"),
    "associations": ("key", "person", "unit", "association_type", "from"),
    "leaves": ("key", "person", "engagement", "leave_type", "from"),
    "it_systems": ("key", "name", "from"),
    "roles": ("key", "it_system", "name", "from"),
    "role_groups": ("key", "name", "roles", "from"),
    "assignments": ("key", "from"),  # and exactly one of role and role_group (checked in ``parse``)
}
SINGULAR = {"units": "unit", "persons": "person", "engagements": "engagement", "managers": "manager",
            "associations": "association", "leaves": "leave", "it_systems": "it_system", "roles": "role",
            "role_groups": "role_group", "assignments": "assignment"}


def stable_uuid(kind: str, key: str) -> str:
    """The UUID of the thing with source key ``key`` (``kind`` plural or singular)."""
    return str(uuid.uuid5(NAMESPACE, f"{SINGULAR.get(kind, kind)}:{key}"))


class RecordError(ValueError):
    """A record that cannot be imported as written; the message says why."""


@dataclass(frozen=True, order=True)
class Origin:
    """Where a record came from: file and line (1-based; the header is line 1 in CSV)."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Period:
    """Half-open ``[from_, to)``: ``to`` is the first day it no longer holds; ``None`` is open."""

    from_: date
    to: date | None = None

    def holds(self, day: date) -> bool:
        return self.from_ <= day and (self.to is None or day < self.to)

    def dump(self) -> dict[str, str | None]:
        return {"from": self.from_.isoformat(), "to": self.to.isoformat() if self.to else None}


@dataclass(frozen=True)
class Record:
    """What every kind has: a source key, a period and an origin."""

    key: str
    validity: Period
    origin: Origin = field(compare=False)

    kind: str = field(default="", init=False, repr=False, compare=False)

    @property
    def uuid(self) -> str:
        return stable_uuid(self.kind, self.key)


@dataclass(frozen=True)
class Unit(Record):
    name: str = ""
    unit_type: str = ""
    parent: str | None = None
    unit_level: str | None = None
    email: str | None = None
    phone: str | None = None
    address: str | None = None
    kind: str = field(default="units", init=False, repr=False, compare=False)


@dataclass(frozen=True)
class Person(Record):
    given_name: str = ""
    surname: str = ""
    cpr: str | None = None
    email: str | None = None
    phone: str | None = None
    kind: str = field(default="persons", init=False, repr=False, compare=False)


@dataclass(frozen=True)
class Engagement(Record):
    person: str = ""
    unit: str = ""
    job_function: str = ""
    engagement_type: str = ""
    primary: bool = False
    fraction: float | None = None
    kind: str = field(default="engagements", init=False, repr=False, compare=False)


@dataclass(frozen=True)
class Manager(Record):
    unit: str = ""
    manager_type: str = ""
    manager_level: str = ""
    person: str | None = None
    responsibilities: tuple[str, ...] = ()
    kind: str = field(default="managers", init=False, repr=False, compare=False)


@dataclass(frozen=True)
class Association(Record):
    """A person's tie to a unit that is not employment: union representative, MED member, external consultant."""

    person: str = ""
    unit: str = ""
    association_type: str = ""
    substitute: str | None = None  # a person's source key
    trade_union: str | None = None  # a trade_union class's user_key
    kind: str = field(default="associations", init=False, repr=False, compare=False)


@dataclass(frozen=True)
class ITSystem(Record):
    """An IT system of the role catalogue; ``None`` fields get access-rights' defaults."""

    name: str = ""
    username_rule: str | None = None
    offboarding: str | None = None
    grace_days: int | None = None
    kind: str = field(default="it_systems", init=False, repr=False, compare=False)


@dataclass(frozen=True)
class Role(Record):
    it_system: str = ""
    name: str = ""
    description: str = ""
    sensitive: bool = False
    kind: str = field(default="roles", init=False, repr=False, compare=False)


@dataclass(frozen=True)
class RoleGroup(Record):
    """Roles given together: an assignment may name the group instead of one role."""

    name: str = ""
    roles: tuple[str, ...] = ()  # roles' source keys, sorted
    kind: str = field(default="role_groups", init=False, repr=False, compare=False)


@dataclass(frozen=True)
class Assignment(Record):
    """A role or a role group (exactly one) to a unit (``inherit``: its whole subtree), to a job function
    (optionally within a unit), or to a person."""

    role: str | None = None
    role_group: str | None = None
    unit: str | None = None
    inherit: bool = False
    job_function: str | None = None
    person: str | None = None
    kind: str = field(default="assignments", init=False, repr=False, compare=False)


@dataclass(frozen=True)
class Leave(Record):
    person: str = ""
    engagement: str = ""
    leave_type: str = ""
    kind: str = field(default="leaves", init=False, repr=False, compare=False)


@dataclass(frozen=True)
class Invalid:
    """A row that could not become a record (or was refused while planning), and why."""

    kind: str
    key: str | None
    origin: Origin
    message: str

    def __str__(self) -> str:
        return f"{self.origin}: {self.kind[:-1]} {self.key or '?'}: {self.message}"


# ---------------------------------------------------------------------------- parsing


def _text(row: Mapping[str, Any], name: str) -> str | None:
    value = row.get(name)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _day(row: Mapping[str, Any], name: str) -> date | None:
    text = _text(row, name)
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise RecordError(f"{name} {text!r} is not a date (YYYY-MM-DD)") from None


def _bool(row: Mapping[str, Any], name: str) -> bool:
    value = row.get(name)
    if isinstance(value, bool):
        return value
    text = (_text(row, name) or "").lower()
    if text in ("", "0", "false", "nej", "no", "n"):
        return False
    if text in ("1", "true", "ja", "yes", "y"):
        return True
    raise RecordError(f"{name} {text!r} is not true/false")


def _fraction(row: Mapping[str, Any], name: str) -> float | None:
    text = _text(row, name)
    if text is None:
        return None
    try:
        value = float(text.replace(",", "."))
    except ValueError:
        raise RecordError(f"{name} {text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise RecordError(f"{name} {value} must be between 0 and 1")
    return value


def _count(row: Mapping[str, Any], name: str) -> int | None:
    text = _text(row, name)
    if text is None:
        return None
    if not text.isdigit():
        raise RecordError(f"{name} {text!r} is not a whole number of 0 or more")
    return int(text)


def _list(row: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = row.get(name)
    if isinstance(value, list):
        return tuple(sorted(str(v).strip() for v in value if str(v).strip()))
    text = _text(row, name) or ""
    return tuple(sorted(p.strip() for p in text.split(";") if p.strip()))


def parse(kind: str, row: Mapping[str, Any], origin: Origin) -> Record:
    """A record of ``kind`` from one row; ``RecordError`` says what is wrong with it."""
    missing = [c for c in REQUIRED[kind] if _text(row, c) is None]
    if missing:
        raise RecordError(f"missing {', '.join(missing)}")
    key = _text(row, "key") or ""
    start = _day(row, "from")
    end = _day(row, "to")
    assert start is not None
    if end is not None and end <= start:
        raise RecordError(f"to ({end}) must be after from ({start}); to is the first day it no longer holds")
    period = Period(start, end)
    t = lambda name: _text(row, name)  # noqa: E731 - a short local reader
    if kind == "units":
        return Unit(key, period, origin, name=t("name") or "", unit_type=t("unit_type") or "", parent=t("parent"),
                    unit_level=t("unit_level"), email=t("email"), phone=t("phone"), address=t("address"))
    if kind == "persons":
        return Person(key, period, origin, given_name=t("given_name") or "", surname=t("surname") or "",
                      cpr=t("cpr"), email=t("email"), phone=t("phone"))
    if kind == "engagements":
        return Engagement(key, period, origin, person=t("person") or "", unit=t("unit") or "",
                          job_function=t("job_function") or "", engagement_type=t("engagement_type") or "",
                          primary=_bool(row, "primary"), fraction=_fraction(row, "fraction"))
    if kind == "managers":
        return Manager(key, period, origin, unit=t("unit") or "", manager_type=t("manager_type") or "",
                       manager_level=t("manager_level") or "", person=t("person"),
                       responsibilities=_list(row, "responsibilities"))
    if kind == "leaves":
        return Leave(key, period, origin, person=t("person") or "", engagement=t("engagement") or "",
                     leave_type=t("leave_type") or "")
    if kind == "associations":
        return Association(key, period, origin, person=t("person") or "", unit=t("unit") or "",
                           association_type=t("association_type") or "", substitute=t("substitute"),
                           trade_union=t("trade_union"))
    if kind == "it_systems":
        offboarding = t("offboarding")
        if offboarding not in (None, "disable", "delete"):
            raise RecordError(f"offboarding {offboarding!r} must be disable or delete")
        return ITSystem(key, period, origin, name=t("name") or "", username_rule=t("username_rule"),
                        offboarding=offboarding, grace_days=_count(row, "grace_days"))
    if kind == "roles":
        return Role(key, period, origin, it_system=t("it_system") or "", name=t("name") or "",
                    description=t("description") or "", sensitive=_bool(row, "sensitive"))
    if kind == "role_groups":
        roles = _list(row, "roles")
        if not roles:
            raise RecordError("roles names no role (role keys separated by ;)")
        twice = sorted({r for r in roles if roles.count(r) > 1})
        if twice:
            raise RecordError(f"roles lists {', '.join(twice)} more than once")
        return RoleGroup(key, period, origin, name=t("name") or "", roles=roles)
    if kind == "assignments":
        role, role_group = t("role"), t("role_group")
        if role and role_group:
            raise RecordError("names both role and role_group: an assignment gives one of them")
        if not (role or role_group):
            raise RecordError("missing role or role_group")
        unit, job_function, person, inherit = t("unit"), t("job_function"), t("person"), _bool(row, "inherit")
        if person and (unit or job_function):
            raise RecordError("a person assignment names no unit or job_function")
        if not (person or unit or job_function):
            raise RecordError("missing a target: unit, job_function or person")
        if inherit and (person or job_function):
            raise RecordError("inherit is for unit assignments only (not with job_function or person)")
        return Assignment(key, period, origin, role=role, role_group=role_group, unit=unit, inherit=inherit,
                          job_function=job_function, person=person)
    raise RecordError(f"unknown kind {kind!r}")


def to_row(record: Record) -> dict[str, str]:
    """The CSV row of a record (the inverse of ``parse``)."""
    out: dict[str, str] = {}
    for column in COLUMNS[record.kind]:
        if column == "from":
            value: Any = record.validity.from_.isoformat()
        elif column == "to":
            value = record.validity.to.isoformat() if record.validity.to else ""
        else:
            value = getattr(record, column)
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, tuple):
            value = ";".join(value)
        out[column] = "" if value is None else str(value)
    return out


@dataclass
class Export:
    """Every record of one export, by kind, and the rows that could not be read."""

    units: list[Unit] = field(default_factory=list)
    persons: list[Person] = field(default_factory=list)
    engagements: list[Engagement] = field(default_factory=list)
    managers: list[Manager] = field(default_factory=list)
    associations: list[Association] = field(default_factory=list)
    leaves: list[Leave] = field(default_factory=list)
    it_systems: list[ITSystem] = field(default_factory=list)
    roles: list[Role] = field(default_factory=list)
    role_groups: list[RoleGroup] = field(default_factory=list)
    assignments: list[Assignment] = field(default_factory=list)
    invalid: list[Invalid] = field(default_factory=list)

    def of(self, kind: str) -> list[Record]:
        records: list[Record] = getattr(self, kind)
        return records

    def add(self, item: Record | Invalid) -> None:
        if isinstance(item, Invalid):
            self.invalid.append(item)
        else:
            self.of(item.kind).append(item)

    def counts(self) -> dict[str, int]:
        return {k: len(self.of(k)) for k in KINDS}
