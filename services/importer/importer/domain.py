"""Planning, pure: an export and what the services hold now → the writes that make them agree.

No I/O here, so the plan is testable without servers and ``--dry-run`` shows
exactly what a run would write. The rules:

- Each record is compared with the thing's slice *on the day* (``State.day``,
  default today) — or, for a record that does not hold on that day (future
  hires, ended leaves), on its own first day. Same fields and same end →
  unchanged, and nothing is written (so a second run writes nothing and
  publishes no event).
- Missing → ``create``: a PUT of the record's whole period under its stable UUID.
- Different fields → ``change``: a PUT from the day on (history before it is
  kept). A new end date alone → ``terminate`` (one write, one event); an end
  date that moves later → a PUT up to it.
- ``full_sync_from``: what is in force on the day but absent from the export
  is terminated from that date (leaves first, units deepest first).
- References are checked here (unknown unit, person, engagement, class,
  parent; cycles), so a bad row is refused with its line before anything is
  written, and what depends on it is refused with it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from importer.records import (
    KINDS,
    OPTIONAL_KINDS,
    SINGULAR,
    Assignment,
    Association,
    Engagement,
    Export,
    Invalid,
    ITSystem,
    Leave,
    Manager,
    Origin,
    Person,
    Record,
    Role,
    RoleGroup,
    Unit,
    stable_uuid,
)

ACTIONS = ("create", "change", "terminate")

#: which service owns each kind, and its path
SERVICE = {"units": "orgunits", "persons": "registry", "engagements": "registry", "managers": "registry",
           "associations": "registry", "leaves": "registry", "it_systems": "access-rights",
           "roles": "access-rights", "role_groups": "access-rights", "assignments": "access-rights"}
PATH = {"units": "/api/v1/orgunits", "persons": "/api/v1/persons", "engagements": "/api/v1/engagements",
        "managers": "/api/v1/managers", "associations": "/api/v1/associations", "leaves": "/api/v1/leaves",
        "it_systems": "/api/v1/it-systems", "roles": "/api/v1/roles", "role_groups": "/api/v1/role-groups",
        "assignments": "/api/v1/assignments"}
#: when each kind is written (what a kind refers to is written in an earlier phase); units go level by level.
#: Role assignments come before the engagements: then each engagement grants its person's rights as it
#: arrives, instead of every assignment recomputing the rights of a whole subtree of people at the end.
#: Role groups name roles, and assignments name role groups: a phase of their own between the two.
PHASE = {"units": 0, "it_systems": 0, "persons": 1, "roles": 1, "role_groups": 2, "assignments": 3, "engagements": 4,
         "managers": 4, "associations": 4, "leaves": 5}
#: ``--full-sync`` terminations: what refers to others ends first
END_PHASE = {"leaves": 6, "assignments": 6, "engagements": 7, "managers": 7, "associations": 7, "role_groups": 7,
             "persons": 8, "roles": 8, "units": 9, "it_systems": 9}
#: an IT system's fields when the export leaves them empty (access-rights' own defaults)
IT_SYSTEM_DEFAULTS = {"username_rule": "{given:3}{surname:3}", "offboarding": "disable", "grace_days": 0}

#: unit address columns → address_type class user_key (the seeded vocabulary's)
UNIT_ADDRESS_TYPES = {"email": "email", "phone": "telefon", "address": "postadresse"}


@dataclass(frozen=True)
class Write:
    """One HTTP request of the plan."""

    service: str
    method: str
    path: str
    body: dict[str, Any]


@dataclass(frozen=True)
class Op:
    """What happens to one thing: its writes, in order, and a line for people."""

    kind: str
    action: str
    uuid: str
    key: str
    origin: Origin | None
    writes: tuple[Write, ...]
    detail: str = ""
    phase: int = 0
    order: int = 0

    def label(self) -> str:
        where = f" ({self.origin})" if self.origin else ""
        return f"{self.action} {SINGULAR[self.kind]} {self.key}{where}{': ' + self.detail if self.detail else ''}"


@dataclass
class State:
    """What the services hold, as the planner needs it.

    ``current[kind][uuid]`` is the thing as read on the day (from the lists) or,
    for records that do not hold on the day, as read on the record's first day.
    ``listed[kind]`` is what the lists returned (in force on the day).
    ``classes[facet][user_key]`` is a class UUID.
    """

    day: date
    classes: dict[str, dict[str, str]] = field(default_factory=dict)
    current: dict[str, dict[str, dict[str, Any]]] = field(default_factory=lambda: {k: {} for k in KINDS})
    listed: dict[str, set[str]] = field(default_factory=lambda: {k: set() for k in KINDS})


@dataclass
class Plan:
    day: date
    ops: list[Op] = field(default_factory=list)
    unchanged: Counter[str] = field(default_factory=Counter)
    rejected: list[Invalid] = field(default_factory=list)
    full_sync_terminations: int = 0

    def counts(self) -> dict[str, dict[str, int]]:
        """kind → action → number, with ``unchanged`` and ``rejected``."""
        out = {k: {a: 0 for a in (*ACTIONS, "unchanged", "rejected")} for k in KINDS}
        for op in self.ops:
            out[op.kind][op.action] += 1
        for k, n in self.unchanged.items():
            out[k]["unchanged"] = n
        for r in self.rejected:
            if r.kind in out:
                out[r.kind]["rejected"] += 1
        return out

    def writes(self) -> int:
        return sum(len(op.writes) for op in self.ops)

    def phases(self) -> list[list[Op]]:
        """Groups to apply one after the other (each group may run concurrently)."""
        groups: dict[tuple[int, int], list[Op]] = {}
        for op in self.ops:
            groups.setdefault((op.phase, op.order), []).append(op)
        return [groups[k] for k in sorted(groups)]


def compare_day(record: Record, day: date) -> date:
    """The day a record is compared on: the plan's day if it holds then, else its own first day."""
    return day if record.validity.holds(day) else record.validity.from_


def lookups(export: Export, day: date) -> list[tuple[str, str, date]]:
    """(kind, uuid, day) of records the lists on ``day`` cannot show: read each on its own day."""
    return [(k, r.uuid, r.validity.from_) for k in KINDS for r in export.of(k) if not r.validity.holds(day)]


# ---------------------------------------------------------------------------- the comparable fields


class Refused(Exception):
    """A record refused while planning (unknown reference)."""


class Resolver:
    """Source keys and class user_keys → UUIDs, refusing what is not known."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.known: dict[str, set[str]] = {k: set(state.current[k]) | state.listed[k] for k in KINDS}
        self.class_uuids = {u for facet in state.classes.values() for u in facet.values()}

    def ref(self, kind: str, key: str) -> str:
        uid = stable_uuid(kind, key)
        if uid not in self.known[kind]:
            raise Refused(f"unknown {SINGULAR[kind]} {key!r}")
        return uid

    def cls(self, facet: str, value: str) -> str:
        found = self.state.classes.get(facet, {}).get(value)
        if found:
            return found
        if value in self.class_uuids:
            return value
        raise Refused(f"unknown {facet} class {value!r}")


def desired(record: Record, r: Resolver) -> dict[str, Any]:
    """The write body's fields (without validity), references resolved."""
    if isinstance(record, Unit):
        addresses = [
            {"address_type": r.cls("address_type", cls), "value": value}
            for column, cls in UNIT_ADDRESS_TYPES.items()
            if (value := getattr(record, column))
        ]
        return {
            "user_key": record.key,
            "name": record.name,
            "parent": r.ref("units", record.parent) if record.parent else None,
            "unit_type": r.cls("unit_type", record.unit_type),
            "unit_level": r.cls("unit_level", record.unit_level) if record.unit_level else None,
            "addresses": addresses,
        }
    if isinstance(record, Person):
        contact = [{"scope": s, "value": v} for s, v in (("email", record.email), ("phone", record.phone)) if v]
        return {
            "given_name": record.given_name,
            "surname": record.surname,
            "nickname": None,
            "user_key": record.key,
            "addresses": contact,
            "cpr": record.cpr,
        }
    if isinstance(record, Engagement):
        return {
            "person": r.ref("persons", record.person),
            "unit": r.ref("units", record.unit),
            "job_function": r.cls("job_function", record.job_function),
            "engagement_type": r.cls("engagement_type", record.engagement_type),
            "primary": record.primary,
            "fraction": record.fraction,
            "user_key": record.key,
        }
    if isinstance(record, Manager):
        return {
            "person": r.ref("persons", record.person) if record.person else None,
            "unit": r.ref("units", record.unit),
            "manager_type": r.cls("manager_type", record.manager_type),
            "manager_level": r.cls("manager_level", record.manager_level),
            "responsibilities": sorted(r.cls("responsibility", x) for x in record.responsibilities),
        }
    if isinstance(record, Leave):
        return {
            "person": r.ref("persons", record.person),
            "engagement": r.ref("engagements", record.engagement),
            "leave_type": r.cls("leave_type", record.leave_type),
        }
    if isinstance(record, Association):
        return {
            "person": r.ref("persons", record.person),
            "unit": r.ref("units", record.unit),
            "association_type": r.cls("association_type", record.association_type),
            "substitute": r.ref("persons", record.substitute) if record.substitute else None,
            "trade_union": r.cls("trade_union", record.trade_union) if record.trade_union else None,
        }
    if isinstance(record, ITSystem):
        return {
            "user_key": record.key,
            "name": record.name,
            "username_rule": record.username_rule or IT_SYSTEM_DEFAULTS["username_rule"],
            "offboarding": record.offboarding or IT_SYSTEM_DEFAULTS["offboarding"],
            "grace_days": IT_SYSTEM_DEFAULTS["grace_days"] if record.grace_days is None else record.grace_days,
        }
    if isinstance(record, Role):
        return {
            "it_system": r.ref("it_systems", record.it_system),
            "name": record.name,
            "description": record.description,
            "sensitive": record.sensitive,
        }
    if isinstance(record, RoleGroup):
        return {"name": record.name, "roles": [r.ref("roles", role) for role in record.roles]}
    if isinstance(record, Assignment):
        return {
            "role": r.ref("roles", record.role) if record.role else None,
            "role_group": r.ref("role_groups", record.role_group) if record.role_group else None,
            "person": r.ref("persons", record.person) if record.person else None,
            "unit": r.ref("units", record.unit) if record.unit else None,
            "inherit": record.inherit,
            "job_function": r.cls("job_function", record.job_function) if record.job_function else None,
        }
    raise TypeError(record)


def _address(value: Any) -> str:
    """An address value as the services store it: white space collapsed, phone numbers compact."""
    text = " ".join(str(value or "").split())
    return re.sub(r"[\s-]", "", text) if re.fullmatch(r"\+?[\d\s-]+", text) else text


def _digits(value: Any) -> str:
    return "".join(c for c in str(value or "") if c.isdigit())


def comparable(kind: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Fields as compared: lists as sorted tuples, numbers rounded, CPR as digits."""
    if kind == "units":
        keys = ("user_key", "name", "parent", "unit_type", "unit_level")
        out = {k: fields.get(k) for k in keys}
        addresses = fields.get("addresses") or ()
        out["addresses"] = tuple(sorted((a["address_type"], _address(a["value"])) for a in addresses))
        return out
    if kind == "persons":
        out = {k: fields.get(k) for k in ("given_name", "surname", "nickname", "user_key")}
        out["addresses"] = tuple(sorted((a["scope"], _address(a["value"])) for a in fields.get("addresses") or ()))
        return out
    if kind == "engagements":
        out = {k: fields.get(k) for k in ("person", "unit", "job_function", "engagement_type", "user_key")}
        out["primary"] = bool(fields.get("primary"))
        fraction = fields.get("fraction")
        out["fraction"] = None if fraction is None else round(float(fraction), 4)
        return out
    if kind == "managers":
        out = {k: fields.get(k) for k in ("person", "unit", "manager_type", "manager_level")}
        out["responsibilities"] = tuple(sorted(fields.get("responsibilities") or ()))
        return out
    if kind == "associations":
        return {k: fields.get(k) for k in ("person", "unit", "association_type", "substitute", "trade_union")}
    if kind == "it_systems":
        return {k: fields.get(k) for k in ("user_key", "name", "username_rule", "offboarding", "grace_days")}
    if kind == "roles":
        out = {k: fields.get(k) for k in ("it_system", "name")}
        out["description"] = fields.get("description") or ""
        out["sensitive"] = bool(fields.get("sensitive"))
        return out
    if kind == "role_groups":
        return {"name": fields.get("name"), "roles": tuple(sorted(fields.get("roles") or ()))}
    if kind == "assignments":
        out = {k: fields.get(k) for k in ("role", "role_group", "person", "unit", "job_function")}
        out["inherit"] = bool(fields.get("inherit"))
        return out
    return {k: fields.get(k) for k in ("person", "engagement", "leave_type")}


def _same_cpr(wanted: str | None, current: Mapping[str, Any]) -> bool:
    """A CPR number compares by digits; a masked one (no ``read:cpr``) by its birth date only."""
    have = _digits(current.get("cpr"))
    want = _digits(wanted)
    if not want:
        return not current.get("has_cpr") and not have
    if len(have) == 10:
        return have == want
    return bool(current.get("has_cpr")) and have[:6] == want[:6]


def _validity_to(item: Mapping[str, Any]) -> date | None:
    to = (item.get("validity") or {}).get("to")
    return date.fromisoformat(to) if to else None


# ---------------------------------------------------------------------------- the plan


def plan(
    export: Export,
    state: State,
    *,
    full_sync_from: date | None = None,
) -> Plan:
    """The writes that make the services agree with ``export`` (see the module's rules)."""
    out = Plan(day=state.day, rejected=list(export.invalid))
    resolver = Resolver(state)
    names = _names(export)
    seen: dict[str, dict[str, Origin]] = {k: {} for k in KINDS}

    def refuse(record: Record, message: str) -> None:
        out.rejected.append(Invalid(record.kind, record.key, record.origin, message))

    def unique(record: Record) -> bool:
        first = seen[record.kind].get(record.key)
        if first is not None:
            refuse(record, f"duplicate key (first at {first})")
            return False
        seen[record.kind][record.key] = record.origin
        return True

    # Units parents first: a unit is known once its parent is.
    units = [u for u in export.units if unique(u)]
    for depth, unit in _by_depth(units, resolver, refuse):
        if _plan_record(unit, state, resolver, out, names, phase=0, order=depth, refuse=refuse):
            resolver.known["units"].add(unit.uuid)
    # Everything else, in KINDS order (what a record refers to is planned before it).
    for kind in KINDS[1:]:
        records = [r for r in export.of(kind) if unique(r)]
        if kind in ("persons", "engagements", "it_systems", "roles", "role_groups"):
            resolver.known[kind] |= {r.uuid for r in records if _refs_ok(r, resolver)}
        for record in records:
            _plan_record(record, state, resolver, out, names, phase=PHASE[kind], order=0, refuse=refuse)

    if full_sync_from is not None:
        mentioned = {k: {r.uuid for r in export.of(k)} for k in KINDS}
        for inv in export.invalid:
            if inv.key:
                mentioned[inv.kind].add(stable_uuid(inv.kind, inv.key))
        depths = _current_depths(state)
        for kind in KINDS:
            if kind in OPTIONAL_KINDS and not export.of(kind):
                continue  # the export does not hold this kind at all (the role catalogue, say): not its to end
            for uid in sorted(state.listed[kind] - mentioned[kind]):
                item = state.current[kind].get(uid, {})
                to = _validity_to(item)
                if to is not None and to <= full_sync_from:
                    continue  # already ends by then
                end = {"to": full_sync_from.isoformat()}
                write = Write(SERVICE[kind], "POST", f"{PATH[kind]}/{uid}/terminate", end)
                out.ops.append(Op(kind, "terminate", uid, str(item.get("user_key") or uid), None, (write,),
                                  f"not in the export; ends {full_sync_from}", END_PHASE[kind],
                                  -depths.get(uid, 0) if kind == "units" else 0))
                out.full_sync_terminations += 1
    return out


def _refs_ok(record: Record, r: Resolver) -> bool:
    """Whether a record's own references resolve (so others may refer to it)."""
    try:
        desired(record, r)
    except Refused:
        return False
    return True


def _by_depth(units: list[Unit], r: Resolver, refuse: Any) -> list[tuple[int, Unit]]:
    """Units with their depth in the export's tree, parents first; unknown parents and cycles refused."""
    by_key = {u.key: u for u in units}
    depth: dict[str, int | None] = {}  # None: refused
    for start in units:
        path: list[Unit] = []
        node = start
        result: int | None
        while True:
            if node.key in depth:
                result = depth[node.key]
                break
            if node in path:
                i = path.index(node)
                for u in path[i:]:
                    depth[u.key] = None
                    refuse(u, "its parent chain is a cycle")
                path, result = path[:i], None
                break
            path.append(node)
            parent = node.parent
            if parent is None or (parent not in by_key and stable_uuid("units", parent) in r.known["units"]):
                result = -1  # a root, or under a unit that exists outside the export
                break
            if parent in by_key:
                node = by_key[parent]
                continue
            path.pop()
            depth[node.key], result = None, None
            refuse(node, f"unknown parent unit {parent!r}")
            break
        for u in reversed(path):
            if result is None:
                depth[u.key] = None
                refuse(u, f"its parent unit {u.parent!r} is refused")
            else:
                result += 1
                depth[u.key] = result
    out = [(d, u) for u in units if (d := depth.get(u.key)) is not None]
    out.sort(key=lambda pair: pair[0])
    return out


def _plan_record(
    record: Record, state: State, r: Resolver, out: Plan, names: dict[str, str], *, phase: int, order: int,
    refuse: Any,
) -> bool:
    """Add the record's op (if any) to ``out``; False when it is refused."""
    try:
        body = desired(record, r)
    except Refused as exc:
        refuse(record, str(exc))
        return False
    kind = record.kind
    path = f"{PATH[kind]}/{record.uuid}"
    service = SERVICE[kind]
    v = record.validity
    current = state.current[kind].get(record.uuid)

    def put(start: date, end: date | None) -> Write:
        return Write(service, "PUT", path, {**body, "validity": {"from": start.isoformat(),
                                                                  "to": end.isoformat() if end else None}})

    if current is None:
        out.ops.append(Op(kind, "create", record.uuid, record.key, record.origin, (put(v.from_, v.to),),
                          _describe_new(record, names), phase, order))
        return True
    want, have = comparable(kind, body), comparable(kind, current)
    same = want == have and (not isinstance(record, Person) or _same_cpr(record.cpr, current))
    have_to = _validity_to(current)
    if same and have_to == v.to:
        out.unchanged[kind] += 1
        return True
    day = compare_day(record, state.day)
    writes: list[Write] = []
    if v.to is None:
        writes.append(put(day, None))
    else:
        if not same or (have_to is not None and have_to < v.to):
            writes.append(put(day, v.to))
        if have_to is None or have_to > v.to:
            writes.append(Write(service, "POST", f"{path}/terminate", {"to": v.to.isoformat()}))
    action = "change" if any(w.method == "PUT" for w in writes) else "terminate"
    detail = _diff(have, want, names) if not same else ""
    if have_to != v.to:
        detail = ", ".join(x for x in (detail, f"ends {v.to or 'never'} (was {have_to or 'open'})") if x)
    out.ops.append(Op(kind, action, record.uuid, record.key, record.origin, tuple(writes), detail, phase, order))
    return True


def _names(export: Export) -> dict[str, str]:
    """UUID → source key, to show references in the plan as people know them."""
    return {r.uuid: r.key for k in KINDS for r in export.of(k)}


def _short(value: Any, names: Mapping[str, str]) -> str:
    if isinstance(value, str):
        return names.get(value, value if len(value) <= 40 else value[:37] + "…")
    if isinstance(value, tuple):
        return "[" + ", ".join(_short(v, names) for v in value) + "]"
    return str(value)


def _diff(have: Mapping[str, Any], want: Mapping[str, Any], names: Mapping[str, str]) -> str:
    return ", ".join(
        f"{k} {_short(have.get(k), names)} → {_short(want.get(k), names)}" for k in want if have.get(k) != want.get(k)
    ) or "cpr"


def _describe_new(record: Record, names: Mapping[str, str]) -> str:
    if isinstance(record, Unit):
        return f"{record.name!r} under {record.parent or '(root)'}"
    if isinstance(record, Person):
        return f"{record.given_name} {record.surname}"
    if isinstance(record, Engagement):
        return f"{record.person} in {record.unit} from {record.validity.from_}"
    if isinstance(record, Manager):
        return f"{record.person or 'vacant'} heads {record.unit}"
    if isinstance(record, Leave):
        return f"{record.person} on {record.leave_type} from {record.validity.from_}"
    if isinstance(record, Association):
        return f"{record.person} {record.association_type} in {record.unit}"
    if isinstance(record, ITSystem):
        return repr(record.name)
    if isinstance(record, Role):
        return f"{record.name!r} in {record.it_system}"
    if isinstance(record, RoleGroup):
        return f"{record.name!r} of {', '.join(record.roles)}"
    if isinstance(record, Assignment):
        target = record.person or " ".join(x for x in (record.job_function, "in" if record.job_function and
                                                       record.unit else "", record.unit) if x)
        what = record.role or f"role group {record.role_group}"
        return f"{what} to {target}{' and below' if record.inherit else ''}"
    return ""


def _current_depths(state: State) -> dict[str, int]:
    parents = {u: (item.get("parent") or None) for u, item in state.current["units"].items()}
    out: dict[str, int] = {}
    for u in parents:
        d, node, hops = 0, parents.get(u), 0
        while node is not None and hops < 100:
            d, node, hops = d + 1, parents.get(node), hops + 1
        out[u] = d
    return out


# ---------------------------------------------------------------------------- showing a plan


def describe(plan: Plan, examples: int = 3) -> str:
    """The plan for people: per kind the numbers, then the first examples of each action."""
    lines = [f"Plan for {plan.day} ({plan.writes()} writes):"]
    counts = plan.counts()
    for kind in KINDS:
        c = counts[kind]
        lines.append(
            f"  {kind:<12} create {c['create']:>6}  change {c['change']:>6}  terminate {c['terminate']:>6}"
            f"  unchanged {c['unchanged']:>6}  rejected {c['rejected']:>5}"
        )
        for action in ACTIONS:
            shown = [op for op in plan.ops if op.kind == kind and op.action == action][:examples]
            lines.extend(f"      {op.label()}" for op in shown)
    if plan.rejected:
        lines.append(f"Rejected ({len(plan.rejected)}):")
        lines.extend(f"  {r}" for r in sorted(plan.rejected, key=lambda r: r.origin))
    return "\n".join(lines)


def examples_of(ops: Iterable[Op], kind: str, action: str) -> list[Op]:
    return [op for op in ops if op.kind == kind and op.action == action]
