"""Access-rights rules as pure functions: catalogue validation, the approval workflow's steps,
effective rights, diffs, usernames.

Everything here works on the in-memory views of ``readmodel`` (``OrgView`` of
the unit tree and engagements learnt from events, ``CatalogueView`` of IT
systems, roles, role groups and assignments) and returns new values or raises
``orgdir.problems`` errors; nothing touches a database or the clock, so the
same inputs give the same rights whatever order events came in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, TypeVar

from pydantic import ValidationError

from access_rights.readmodel import CatalogueView, OrgView
from orgdir import problems
from orgdir.clock import start_of_day
from orgdir.contracts.access import (
    AssignmentSlice,
    AssignmentState,
    ITSystemState,
    Reason,
    Right,
    RoleGroupState,
    RoleState,
)
from orgdir.contracts.orgunits import OrgUnitSlice
from orgdir.contracts.registry import EngagementState
from orgdir.text import spell_out
from orgdir.validity import SliceBase, Validity, apply, at, covered, overlapping, truncate

S = TypeVar("S", bound=SliceBase)

DAY = timedelta(days=1)


# --------------------------------------------------------------------------- catalogue rules


def unknown(what: str, uuid: str) -> problems.Problem:
    return problems.rule(f"unknown-{what.replace('_', '-')}", f"No {what.replace('_', ' ')} with id {uuid}.")


def require_covering(what: str, uuid: str, timeline: Sequence[SliceBase], period: Validity) -> None:
    """The referenced thing must exist during the whole period of the referring slice."""
    if not covered(timeline, period):
        raise problems.rule(
            "outside-validity",
            f"The {what.replace('_', ' ')} {uuid} is not valid during the whole of "
            f"[{period.from_}, {period.to or '∞'}).",
            reference=uuid,
        )


USERNAME_TOKEN = re.compile(r"\{(given|surname|user_key|initials)(?::(\d+))?\}")


def check_username_rule(rule: str) -> None:
    rest = USERNAME_TOKEN.sub("", rule)
    if not USERNAME_TOKEN.search(rule) or "{" in rest or "}" in rest or not re.fullmatch(r"[a-z0-9._-]*", rest):
        raise problems.rule(
            "invalid-username-rule",
            f"{rule!r}: use {{given:N}}, {{surname:N}}, {{initials}} or {{user_key}} "
            "and lowercase letters, digits, '.', '_' or '-'.",
        )


def check_it_system(state: ITSystemState) -> None:
    for s in state.timeline:
        check_username_rule(s.username_rule)


def check_role(state: RoleState, cat: CatalogueView) -> None:
    if len({s.it_system for s in state.timeline}) > 1:
        raise problems.rule("it-system-fixed", "A role belongs to one IT system for its whole life.")
    for s in state.timeline:
        system = cat.it_systems.get(s.it_system)
        if system is None:
            raise unknown("it_system", s.it_system)
        require_covering("it_system", s.it_system, system.timeline, s.validity)


def check_role_group(state: RoleGroupState, cat: CatalogueView) -> None:
    for s in state.timeline:
        dupes = sorted({r for r in s.roles if s.roles.count(r) > 1})
        if dupes:
            raise problems.rule("duplicate-role", f"A role group lists each role once; twice: {dupes}.", roles=dupes)
        if not s.roles:
            raise problems.rule("empty-role-group", "A role group needs at least one role.")
        for r in s.roles:
            role = cat.roles.get(r)
            if role is None:
                raise unknown("role", r)
            require_covering("role", r, role.timeline, s.validity)


def assignment_target(s: AssignmentSlice) -> str:
    if s.person:
        return "person"
    if s.job_function:
        return "job_function"
    if s.kle:
        return "kle"
    return "unit"


def check_assignment(state: AssignmentState, org: OrgView, cat: CatalogueView) -> None:
    """Every slice names one role or role group and one existing, valid target."""
    for s in state.timeline:
        if (s.role is None) == (s.role_group is None):
            raise problems.rule("role-or-role-group", "Name exactly one of role and role_group.")
        targets = [t for t in (s.person, s.job_function, s.kle) if t]
        if (
            len(targets) > 1
            or ((s.person or s.kle) and s.unit)
            or not (s.person or s.unit or s.job_function or s.kle)
        ):
            raise problems.rule(
                "one-target",
                "Assign to a person, a unit, a job function (optionally within a unit subtree) "
                "or a KLE number with an aspect.",
            )
        if (s.kle is None) != (s.aspect is None):
            raise problems.rule(
                "kle-needs-aspect",
                "A KLE assignment names a KLE class and one aspect (udførende, ansvarlig, indsigt).",
                field="aspect" if s.kle else "kle",
            )
        if assignment_target(s) != state.target:
            raise problems.rule("target-changed", "An assignment keeps its kind of target; create a new one.")
        if s.inherit and state.target != "unit":
            raise problems.rule("inherit-needs-unit", "Only unit assignments can be inherited by the subtree.")
        if s.role:
            role = cat.roles.get(s.role)
            if role is None:
                raise unknown("role", s.role)
            require_covering("role", s.role, role.timeline, s.validity)
        if s.role_group:
            group = cat.role_groups.get(s.role_group)
            if group is None:
                raise unknown("role_group", s.role_group)
            require_covering("role_group", s.role_group, group.timeline, s.validity)
        if s.person:
            if not org.person_known(s.person):
                raise unknown("person", s.person)
            person = org.persons.get(s.person)
            if person is not None:
                require_covering("person", s.person, person.timeline, s.validity)
        if s.unit:
            if s.unit not in org.units:
                raise unknown("unit", s.unit)
            require_covering("unit", s.unit, org.units[s.unit], s.validity)
        if s.job_function:
            cls = org.classes.get(s.job_function)
            if cls is None or cls.facet != "job_function":
                raise unknown("job_function", s.job_function)
            require_covering("job_function", s.job_function, cls.timeline, s.validity)
        if s.kle:
            cls = org.classes.get(s.kle)
            if cls is None or cls.facet != "kle":
                raise problems.rule("unknown-kle", f"kle: no KLE class {s.kle}.", field="kle")
            require_covering("kle", s.kle, cls.timeline, s.validity)


def is_sensitive(s: AssignmentSlice, cat: CatalogueView) -> bool:
    """A sensitive role, or a group holding one at any time, needs a second person's approval."""
    roles: set[str] = {s.role} if s.role else set()
    group = cat.role_groups.get(s.role_group or "")
    if group is not None:
        roles |= {r for g in group.timeline for r in g.roles}
    return any(t.sensitive for r in roles if r in cat.roles for t in cat.roles[r].timeline)


def role_fields(timeline: Sequence[Any], prev: dict[str, Any]) -> dict[str, Any]:
    """A role's state names its IT system (fixed for its life) beside the timeline."""
    return {"it_system": timeline[-1].it_system if timeline else prev.get("it_system", "")}


def assignment_fields(timeline: Sequence[AssignmentSlice], prev: dict[str, Any]) -> dict[str, Any]:
    """An assignment's state beside the timeline: its kind of target and its workflow so far."""
    return {
        "target": assignment_target(timeline[0]) if timeline else prev.get("target", "person"),
        "requested_by": prev.get("requested_by"),
        "approved_by": prev.get("approved_by"),
        "exclusions": prev.get("exclusions", []),
        "rejected_by": prev.get("rejected_by"),
        "rejected_at": prev.get("rejected_at"),
        "rejection_reason": prev.get("rejection_reason"),
    }


def with_approval_status(
    timeline: Sequence[AssignmentSlice], fields: dict[str, Any], cat: CatalogueView
) -> list[AssignmentSlice]:
    """Person assignments of sensitive roles wait for approval; the status spans all slices."""
    sensitive = fields.get("target") == "person" and any(is_sensitive(s, cat) for s in timeline)
    status = "active"
    if sensitive:
        status = "approved" if fields.get("approved_by") else "pending"
    return [s.model_copy(update={"status": status}) for s in timeline]


def _require_pending(state: dict[str, Any], actor: str, verb: str) -> None:
    """The four-eyes rule and the workflow's one open state, for approving and rejecting alike."""
    if state.get("rejected_by"):
        raise problems.conflict(
            f"The assignment was rejected by {state['rejected_by']}; request a new one.", kind="not-pending"
        )
    if not state["timeline"] or state["timeline"][0].get("status") != "pending":
        raise problems.conflict(f"Only a pending assignment can be {verb}d.", kind="not-pending")
    if state.get("requested_by") == actor:
        raise problems.Forbidden("self-approval", "Self-approval", f"The requester cannot {verb} their own assignment.")


def approved(state: dict[str, Any], approver: str) -> dict[str, Any]:
    """A pending assignment approved by someone other than its requester (the four-eyes rule)."""
    _require_pending(state, approver, "approve")
    timeline = [{**s, "status": "approved"} for s in state["timeline"]]
    return {**state, "timeline": timeline, "approved_by": approver}


def rejected(state: dict[str, Any], rejecter: str, reason: str | None, when: datetime) -> dict[str, Any]:
    """A pending assignment turned down, by someone other than its requester.

    The slices stay ``pending`` (event consumers that know no rejection see a
    request that is never approved, so never grants) and ``rejected_by``
    closes the workflow: it can no longer be approved or changed.
    """
    _require_pending(state, rejecter, "reject")
    return {**state, "rejected_by": rejecter, "rejected_at": when.isoformat(), "rejection_reason": reason}


def is_rejected(state: dict[str, Any]) -> bool:
    return bool(state.get("rejected_by"))


def assignment_units_touched(
    old: Sequence[AssignmentSlice], new: Sequence[AssignmentSlice], since: date
) -> list[str | None]:
    """The units an assignment write reaches from ``since`` on, before and after it (scoped administration).

    A unit assignment names its unit; any other (a person, a job function —
    even within a subtree —, a KLE number) is ``None``: only a writer
    everywhere may change it. When nothing lies after ``since`` (ending
    something already over), every slice counts.
    """
    window = Validity(from_=since)
    slices = [*overlapping(old, window), *overlapping(new, window)] or [*old, *new]
    out = [s.unit if assignment_target(s) == "unit" else None for s in slices]
    return list(dict.fromkeys(out)) or [None]


def with_exclusion(state: dict[str, Any], person: str, reason: str, by: str, org: OrgView) -> list[dict[str, str]]:
    """The exclusions of an inherited (unit or job-function) assignment with ``person`` excluded."""
    if state["target"] == "person":
        raise problems.rule("not-inherited", "Only unit and job-function assignments have exclusions.")
    if not org.person_known(person):
        raise unknown("person", person)
    others = [x for x in state.get("exclusions", []) if x.get("person") != person]
    return sorted([*others, {"person": person, "reason": reason, "by": by}], key=lambda x: x["person"])


def without_exclusion(state: dict[str, Any], person: str) -> list[dict[str, str]]:
    return [x for x in state.get("exclusions", []) if x.get("person") != person]


def patched(timeline: Sequence[S], period: Validity, changes: dict[str, Any], what: str) -> list[S]:
    """``changes`` applied within ``period``; the thing must exist in some of it."""
    if not any(s.validity.overlaps(period) for s in timeline):
        raise problems.rule("not-active", f"The {what} does not exist in that period.")
    try:
        return apply(timeline, period, changes)
    except ValidationError as exc:
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise problems.Invalid("validation-error", "Invalid request", detail) from exc


def terminated(timeline: Sequence[S], day: date, what: str) -> list[S]:
    """Ended from ``day`` (the first day it no longer holds); something must be left."""
    out = truncate(timeline, day)
    if not out:
        raise problems.rule("terminate-before-start", f"{day} is not after the {what}'s first day.")
    return out


def require_timeline(timeline: Sequence[SliceBase], what: str) -> None:
    if not timeline:
        raise problems.rule("empty-timeline", f"The {what} would have no validity left.")


# --------------------------------------------------------------------------- effective rights


def _window_contains(eng_periods: Sequence[Validity], grace: int, day: date) -> bool:
    return any(p.from_ <= day and (p.to is None or day < p.to + timedelta(days=grace)) for p in eng_periods)


def window_open(org: OrgView, cat: CatalogueView, person: str, it_system: str, day: date) -> bool:
    """Is ``day`` within an engagement of the person, or within the system's grace after one?"""
    return _window_contains(org.engagement_periods(person), _grace(cat, it_system), day)


def window_end_after(org: OrgView, cat: CatalogueView, person: str, it_system: str, day: date) -> date | None:
    """The next day after ``day`` on which the account window closes (for the scheduler)."""
    grace = _grace(cat, it_system)
    ends = [p.to + timedelta(days=grace) for p in org.engagement_periods(person) if p.to is not None]
    later = [d for d in ends if d > day]
    return min(later) if later else None


def _grace(cat: CatalogueView, it_system: str) -> int:
    system = cat.it_systems.get(it_system)
    if system is None or not system.timeline:
        return 0
    return system.timeline[-1].grace_days


def _reason_key(r: Reason) -> tuple[str, ...]:
    return (
        r.kind,
        r.assignment,
        r.via_unit or "",
        r.unit or "",
        r.job_function or "",
        r.role_group or "",
        r.kle or "",
        r.aspect or "",
    )


def relevant_assignments(person: str, org: OrgView, cat: CatalogueView) -> list[AssignmentState]:
    units: set[str] = set()
    jfs: set[str] = set()
    for e in org.eng_by_person.get(person, ()):
        for s in org.engagements[e].timeline:
            units.add(s.unit)
            jfs.add(s.job_function)
    ancestors: set[str] = set()
    kles: set[str] = set()
    for u in units:
        ancestors |= org.ancestors_any_time(u)
        kles |= {k.kle for s in org.units.get(u, []) for k in s.kle}
    ids = set(cat.by_person.get(person, ()))
    for u in ancestors:
        ids |= cat.by_unit.get(u, set())
    for jf in jfs:
        ids |= cat.by_job_function.get(jf, set())
    for kle in kles:
        ids |= cat.by_kle.get(kle, set())
    return [cat.assignments[a] for a in sorted(ids)]


def compute_rights(person: str, org: OrgView, cat: CatalogueView) -> list[Right]:
    """The person's rights over all time: per role, the periods it holds, with their reasons.

    The state is constant between consecutive boundaries of every input that
    can matter (engagements, the units above them, assignments, role groups,
    roles, IT systems, grace windows), so evaluating once per boundary is exact.
    """
    assignments = relevant_assignments(person, org, cat)
    if not assignments:
        return []
    engagements = [org.engagements[e] for e in sorted(org.eng_by_person.get(person, ()))]
    eng_periods = org.engagement_periods(person)
    days: set[date] = set()
    units: set[str] = set()

    def add(timeline: Iterable[SliceBase]) -> None:
        for s in timeline:
            days.add(s.validity.from_)
            if s.validity.to:
                days.add(s.validity.to)

    for e in engagements:
        add(e.timeline)
        for es in e.timeline:
            units |= org.ancestors_any_time(es.unit)
    for u in units:
        add(org.units.get(u, []))
    systems: set[str] = set()
    for a in assignments:
        add(a.timeline)
        for s in a.timeline:
            roles: set[str] = {s.role} if s.role else set()
            if s.role_group and s.role_group in cat.role_groups:
                group = cat.role_groups[s.role_group]
                add(group.timeline)
                roles |= {r for g in group.timeline for r in g.roles}
            for r in roles:
                if r in cat.roles:
                    add(cat.roles[r].timeline)
                    systems.add(cat.roles[r].it_system)
    for system in systems:
        if system in cat.it_systems:
            add(cat.it_systems[system].timeline)
        grace = _grace(cat, system)
        days.update(p.to + timedelta(days=grace) for p in eng_periods if p.to is not None)

    ordered = sorted(days)
    open_: dict[str, tuple[date, dict[tuple[str, ...], Reason]]] = {}
    out: list[Right] = []

    def close(role: str, end: date | None) -> None:
        start, reasons = open_.pop(role)
        out.append(
            Right(
                role=role,
                it_system=cat.roles[role].it_system,
                validity=Validity(from_=start, to=end),
                reasons=[reasons[k] for k in sorted(reasons)],
            )
        )

    for day in ordered:
        holding = holding_on(person, day, engagements, eng_periods, assignments, org, cat)
        for role in [r for r in open_ if r not in holding]:
            close(role, day)
        for role, reasons in holding.items():
            if role not in open_:
                open_[role] = (day, {})
            for reason in reasons:
                open_[role][1].setdefault(_reason_key(reason), reason)
    for role in list(open_):
        close(role, None)
    return sorted(out, key=lambda r: (r.role, r.validity.from_))


def holding_on(
    person: str,
    day: date,
    engagements: Sequence[EngagementState],
    eng_periods: Sequence[Validity],
    assignments: Sequence[AssignmentState],
    org: OrgView,
    cat: CatalogueView,
) -> dict[str, list[Reason]]:
    """Role → reasons on one day."""
    active = [s for e in engagements if (s := at(e.timeline, day)) is not None]
    chains = {s.unit: org.chain_at(s.unit, day) for s in active}
    out: dict[str, list[Reason]] = {}
    for a in assignments:
        sl = at(a.timeline, day)
        if sl is None or sl.status == "pending":
            continue
        excluded = any(x.get("person") == person for x in a.exclusions)
        reasons: list[Reason] = []
        if a.target == "person":
            if sl.person == person:
                reasons.append(Reason(kind="direct", assignment=a.uuid))
        elif not excluded and a.target == "unit":
            for s in active:
                if sl.unit == s.unit or (sl.inherit and sl.unit in chains[s.unit]):
                    reasons.append(Reason(kind="unit", assignment=a.uuid, unit=sl.unit, via_unit=s.unit))
        elif not excluded and a.target == "kle":
            for s in active:
                if org.carries_kle(s.unit, day, sl.kle, sl.aspect):
                    reasons.append(
                        Reason(
                            kind="kle", assignment=a.uuid, unit=s.unit, via_unit=s.unit, kle=sl.kle, aspect=sl.aspect
                        )
                    )
        elif not excluded:
            for s in active:
                if s.job_function == sl.job_function and (sl.unit is None or sl.unit in chains[s.unit]):
                    reasons.append(
                        Reason(
                            kind="job_function",
                            assignment=a.uuid,
                            job_function=sl.job_function,
                            unit=sl.unit,
                            via_unit=s.unit,
                        )
                    )
        if not reasons:
            continue
        if sl.role:
            roles = [sl.role]
        else:
            g = at(cat.role_groups[sl.role_group].timeline, day) if sl.role_group in cat.role_groups else None
            roles = list(g.roles) if g else []
            reasons = [r.model_copy(update={"role_group": sl.role_group}) for r in reasons]
        for role in roles:
            state = cat.roles.get(role)
            if state is None or at(state.timeline, day) is None:
                continue
            system = cat.it_systems.get(state.it_system)
            if system is None or at(system.timeline, day) is None:
                continue
            if a.target == "person" and not _window_contains(eng_periods, _grace(cat, state.it_system), day):
                continue
            out.setdefault(role, []).extend(reasons)
    return out


def held_at(rights: Iterable[Right], day: date) -> dict[str, Right]:
    return {r.role: r for r in rights if r.validity.contains(day)}


# --------------------------------------------------------------------------- diffs


@dataclass
class Revocation:
    right: Right
    stop: date


@dataclass
class RightsPlan:
    """What changes for one person today: events to publish and the new published set."""

    granted: list[Right]
    revoked: list[Revocation]
    held: dict[str, Right]
    next_transition: date | None


def plan_rights(
    old_held: dict[str, Right], rights: Sequence[Right], today: date, pinned: Iterable[str] = ()
) -> RightsPlan:
    """Diff the rights held today (keyed by role) against what was published.

    A right whose validity or reasons change while it keeps holding is updated
    silently; a pinned role (held back by the mass-change guard) keeps its old right.
    """
    new_held = held_at(rights, today)
    granted = [new_held[r] for r in sorted(new_held) if r not in old_held]
    revoked: list[Revocation] = []
    held = dict(new_held)
    pins = set(pinned)
    for role in sorted(old_held):
        if role in new_held:
            continue
        old = old_held[role]
        if role in pins:
            held[role] = old
            continue
        revoked.append(Revocation(old, stop_day(old, [r for r in rights if r.role == role], today)))
    later = [d for r in rights for d in (r.validity.from_, r.validity.to) if d is not None and d > today]
    return RightsPlan(granted, revoked, dict(sorted(held.items())), min(later) if later else None)


def stop_day(old: Right, new_periods: Sequence[Right], today: date) -> date:
    """The first day the right no longer held, as now known (never after today)."""
    ends = [
        r.validity.to for r in new_periods if r.validity.to is not None and old.validity.from_ < r.validity.to <= today
    ]
    return max(ends) if ends else old.validity.from_


def effective_instant(stop: date, cause_time: datetime | None, timezone: str) -> datetime:
    instant = start_of_day(stop, timezone)
    return max(instant, cause_time) if cause_time is not None else instant


# --------------------------------------------------------------------------- usernames


def ascii_fold(text: str) -> str:
    """Lowercase ASCII letters and digits only; Danish letters spelt out (Ø → oe): ``orgdir.text.spell_out``."""
    return re.sub(r"[^a-z0-9]", "", spell_out(text))


def username_base(rule: str, given: str, surname: str, user_key: str | None, fallback: str) -> str:
    """Apply ``{given:3}{surname:3}``-style rules; never empty."""

    def fill(m: re.Match[str]) -> str:
        kind, n = m.group(1), m.group(2)
        value = {
            "given": ascii_fold(given),
            "surname": ascii_fold(surname),
            "user_key": ascii_fold(user_key or ""),
            "initials": "".join(ascii_fold(w)[:1] for w in f"{given} {surname}".split()),
        }[kind]
        return value[: int(n)] if n else value

    name = USERNAME_TOKEN.sub(fill, rule)
    return name if re.search(r"[a-z0-9]", name) else fallback


def username_candidates(base: str, limit: int = 10000) -> Iterable[str]:
    """``base``, ``base2``, ``base3`` …: the first free one wins, so the result is deterministic."""
    yield base
    for n in range(2, limit):
        yield f"{base}{n}"


def everyone_reached(cat: CatalogueView, org: OrgView) -> set[str]:
    """Everyone any assignment could ever reach (with those who hold rights, whom a reconciliation covers)."""
    out: set[str] = set()
    for a in cat.assignments.values():
        out |= assignment_candidates(a, org)
    return out


def assignment_candidates(a: AssignmentState, org: OrgView) -> set[str]:
    """Everyone an assignment could ever reach: recomputing them is enough after it changes."""
    out: set[str] = set()
    for s in a.timeline:
        if a.target == "person" and s.person:
            out.add(s.person)
        elif a.target == "unit" and s.unit:
            out |= org.members_any_time(org.descendants_any_time(s.unit) if s.inherit else {s.unit})
        elif a.target == "kle" and s.kle:
            out |= org.members_any_time(org.kle_units_any_time(s.kle, s.aspect))
        elif a.target == "job_function" and s.job_function:
            allowed = org.descendants_any_time(s.unit) if s.unit else None
            for e in org.eng_by_job_function.get(s.job_function, ()):
                eng = org.engagements[e]
                if allowed is None or any(x.unit in allowed for x in eng.timeline):
                    out.add(eng.person)
    return out


def unit_rights(unit: str, day: date, org: OrgView, cat: CatalogueView) -> list[dict[str, Any]]:
    """The roles a unit confers on its members on ``day`` (job-function ones name the function)."""
    chain = org.chain_at(unit, day)
    ids: set[str] = set()
    for u in chain:
        ids |= cat.by_unit.get(u, set())
    ids |= {a for jf in cat.by_job_function.values() for a in jf}
    here = org.tree.at(unit, day)
    for k in here.kle if here is not None else []:
        ids |= cat.by_kle.get(k.kle, set())
    out: list[dict[str, Any]] = []
    for a in sorted(ids):
        state = cat.assignments[a]
        sl = at(state.timeline, day)
        if sl is None or sl.status == "pending":
            continue
        if state.target == "unit" and sl.unit is not None and (sl.unit == unit or (sl.inherit and sl.unit in chain)):
            reason = Reason(kind="unit", assignment=a, unit=sl.unit, via_unit=unit, role_group=sl.role_group)
            applies: dict[str, Any] = {"members": True}
        elif state.target == "job_function" and (sl.unit is None or sl.unit in chain):
            reason = Reason(
                kind="job_function",
                assignment=a,
                unit=sl.unit,
                job_function=sl.job_function,
                via_unit=unit,
                role_group=sl.role_group,
            )
            applies = {"job_function": sl.job_function}
        elif state.target == "kle" and org.carries_kle(unit, day, sl.kle, sl.aspect):
            reason = Reason(
                kind="kle",
                assignment=a,
                unit=unit,
                via_unit=unit,
                kle=sl.kle,
                aspect=sl.aspect,
                role_group=sl.role_group,
            )
            applies = {"members": True}
        else:
            continue
        if sl.role:
            roles = [sl.role]
        else:
            g = at(cat.role_groups[sl.role_group].timeline, day) if sl.role_group in cat.role_groups else None
            roles = list(g.roles) if g else []
        for role in roles:
            r = cat.roles.get(role)
            if r is None or at(r.timeline, day) is None:
                continue
            out.append(
                {
                    "role": role,
                    "it_system": r.it_system,
                    "applies_to": applies,
                    "reason": reason.model_dump(mode="json"),
                }
            )
    return out


# --------------------------------------------------------------------------- org changes


def _spans(timeline: Sequence[OrgUnitSlice], key: Callable[[OrgUnitSlice], Any]) -> list[tuple[Any, ...]]:
    """The periods of the unit's life with ``key`` of each, adjacent equal periods merged."""
    out: list[tuple[Any, ...]] = []
    for s in sorted(timeline, key=lambda s: s.validity.from_):
        k = key(s)
        if out and out[-1][1] == s.validity.from_ and out[-1][2] == k:
            out[-1] = (out[-1][0], s.validity.to, k)
        else:
            out.append((s.validity.from_, s.validity.to, k))
    return out


def units_to_recompute(
    unit: str, old: Sequence[OrgUnitSlice] | None, new: Sequence[OrgUnitSlice], org: OrgView
) -> set[str]:
    """The units whose members' rights a unit change can alter.

    Its existence or parents over time change what is above every unit
    below it (unit assignments inherit down the tree): the whole subtree,
    as ever known. Its KLE numbers only reach its own members. Names,
    addresses and types reach nobody.
    """
    if old is None or _spans(old, lambda s: s.parent) != _spans(new, lambda s: s.parent):
        return org.descendants_any_time(unit)
    kle = lambda s: tuple(sorted((k.kle, tuple(k.aspects)) for k in s.kle))  # noqa: E731
    if _spans(old, kle) != _spans(new, kle):
        return {unit}
    return set()
