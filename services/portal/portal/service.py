"""What each page needs, gathered from the APIs concurrently; and the forms' writes.

Pages read on one day (``?at=``), as every API does. Names the APIs give only as UUIDs (classes,
role groups, units of a reason) are looked up in the same request, concurrently, and never cached:
a name changed by another user shows at once, and any replica answers like any other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any, TypeVar

from portal.clients import ApiError, Apis

T = TypeVar("T")

SEARCH_LIMIT = 20
PEOPLE_PAGE = 100

# Problem members that name a field, normalised to the form's input names.
FIELD_ALIASES = {"validity": "from", "validity.from": "from", "validity.to": "to"}
# Problems that carry no ``field`` yet but clearly belong to one input.
KIND_FIELDS = {
    "user-key-taken": "user_key",
    "parent-not-found": "parent",
    "parent-not-active": "parent",
    "cycle": "parent",
    "unknown-person": "person",
    "person-not-active": "person",
    "role-or-role-group": "what",
    "unknown-role": "what",
    "unknown-role-group": "what",
}


async def gather(*aws: Awaitable[T]) -> list[T]:
    return list(await asyncio.gather(*aws))


# ---------------------------------------------------------------------------- forms


@dataclass
class Form:
    """A form's values and the server's messages, by input name ("" is the form as a whole)."""

    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def error(self, name: str) -> str | None:
        return self.errors.get(name)

    @property
    def general(self) -> str | None:
        return self.errors.get("")


def field_errors(exc: ApiError, inputs: Iterable[str]) -> dict[str, str]:
    """The problem's messages beside the inputs they name (``field`` or ``errors[].field``); what names
    no input of this form goes to the form as a whole."""
    inputs = set(inputs)
    named: list[tuple[str, str]] = []
    if exc.problem.get("field"):
        named.append((str(exc.problem["field"]), exc.detail))
    for e in exc.problem.get("errors") or []:
        if isinstance(e, dict):
            named.append((str(e.get("field", "")), str(e.get("message") or exc.detail)))
    if not named and exc.kind in KIND_FIELDS:
        named.append((KIND_FIELDS[exc.kind], exc.detail))
    out: dict[str, str] = {}
    for raw, message in named:
        name = FIELD_ALIASES.get(raw, raw)
        name = name if name in inputs else ""
        out[name] = f"{out[name]} {message}" if name in out else message
    if "" not in out and not out:
        out[""] = exc.detail
    return out


def required(form: Form, *names: str, message: str) -> bool:
    """Mark empty required inputs before calling anything: nothing is sent for a half-filled form."""
    for name in names:
        if not form.values.get(name, "").strip():
            form.errors[name] = message
    return not form.errors


# ---------------------------------------------------------------------------- names


class Names:
    """Names of things the APIs refer to by UUID, fetched together."""

    def __init__(self, apis: Apis, day: date) -> None:
        self.apis = apis
        self.day = day
        self.units: dict[str, str] = {}
        self.classes: dict[str, str] = {}
        self.role_groups: dict[str, str] = {}
        self.it_systems: dict[str, str] = {}
        self.roles: dict[str, str] = {}
        self.persons: dict[str, str] = {}

    async def resolve(
        self, *, units: Iterable[str | None] = (), classes: Iterable[str | None] = (),
        role_groups: Iterable[str | None] = (), it_systems: Iterable[str | None] = (),
        roles: Iterable[str | None] = (), persons: Iterable[str | None] = (),
    ) -> None:
        async def one(store: dict[str, str], uid: str, call: Awaitable[Any], key: str = "name") -> None:
            try:
                body = await call
            except ApiError:
                return
            if body:
                store[uid] = str((body.get("current") or body).get(key) or uid)

        jobs: list[Awaitable[None]] = []
        for uid in {u for u in units if u and u not in self.units}:
            jobs.append(one(self.units, uid, self.apis.orgunits.get_or_none(f"/orgunits/{uid}", at=self.day)))
        for uid in {c for c in classes if c and c not in self.classes}:
            jobs.append(one(self.classes, uid, self.apis.orgunits.get_or_none(f"/classes/{uid}", at=self.day)))
        for uid in {g for g in role_groups if g and g not in self.role_groups}:
            jobs.append(one(self.role_groups, uid, self.apis.access.get_or_none(f"/role-groups/{uid}")))
        for uid in {s for s in it_systems if s and s not in self.it_systems}:
            jobs.append(one(self.it_systems, uid, self.apis.access.get_or_none(f"/it-systems/{uid}")))
        for uid in {r for r in roles if r and r not in self.roles}:
            jobs.append(one(self.roles, uid, self.apis.access.get_or_none(f"/roles/{uid}", at=self.day)))
        for uid in {p for p in persons if p and p not in self.persons}:
            jobs.append(self._person(uid))
        await asyncio.gather(*jobs)

    async def _person(self, uid: str) -> None:
        try:
            body = await self.apis.registry.get_or_none(f"/persons/{uid}", at=self.day)
        except ApiError:
            return
        if body:
            self.persons[uid] = f"{body.get('given_name', '')} {body.get('surname', '')}".strip() or uid

    def unit(self, uid: str | None) -> str:
        return self.units.get(uid or "", uid or "")

    def cls(self, uid: str | None) -> str:
        return self.classes.get(uid or "", uid or "")

    def role(self, uid: str | None) -> str:
        return self.roles.get(uid or "", uid or "")

    def person(self, uid: str | None) -> str:
        return self.persons.get(uid or "", uid or "")


def split_in_time(slices: Iterable[dict[str, Any]], day: date) -> dict[str, list[dict[str, Any]]]:
    """A timeline's slices as past (ended by the day), present (in force on it) and future (from a later
    day): the three tabs of every timeline, so a change from a later day is visible as such."""
    out: dict[str, list[dict[str, Any]]] = {"past": [], "present": [], "future": []}
    iso = day.isoformat()
    for s in slices:
        v = s.get("validity") or {}
        if v.get("to") and v["to"] <= iso:
            out["past"].append(s)
        elif v.get("from") and v["from"] > iso:
            out["future"].append(s)
        else:
            out["present"].append(s)
    return out


# ---------------------------------------------------------------------------- tree and search


async def tree(apis: Apis, day: date) -> dict[str, Any]:
    """The roots on the day, each with its children one level down (the rest loads on expand)."""
    roots = (await apis.orgunits.get("/orgunits", roots="true", at=day, limit=1000))["items"]
    nodes = await gather(*(apis.orgunits.get(f"/orgunits/{r['uuid']}/subtree", at=day, depth=1) for r in roots))
    return {"roots": nodes}


async def children(apis: Apis, uid: str, day: date) -> list[dict[str, Any]]:
    node = await apis.orgunits.get_or_none(f"/orgunits/{uid}/subtree", at=day, depth=1)
    return list(node.get("children", [])) if node else []


async def search_units(apis: Apis, q: str, day: date) -> list[dict[str, Any]]:
    """Units whose name or user key matches (folded: æ/ae, ø/oe, å/aa), each with its path."""
    if not q.strip():
        return []
    items = (await apis.orgunits.get("/orgunits", q=q.strip(), at=day, limit=SEARCH_LIMIT))["items"]
    paths = await gather(*(apis.orgunits.get(f"/orgunits/{u['uuid']}/ancestors", at=day) for u in items))
    for unit, path in zip(items, paths, strict=True):
        unit["path"] = [a["name"] for a in reversed(path["items"])]
    return list(items)


async def search_people(apis: Apis, q: str) -> list[dict[str, Any]]:
    if not q.strip():
        return []
    return list((await apis.registry.get("/search", q=q.strip(), limit=SEARCH_LIMIT))["items"])


# ---------------------------------------------------------------------------- unit page


async def unit_page(apis: Apis, uid: str, day: date, *, subtree: bool = False) -> dict[str, Any]:
    try:
        unit = await apis.orgunits.get(f"/orgunits/{uid}", at=day)
    except ApiError as exc:
        if exc.kind == "not-active":
            return {"unit": None, "uuid": uid, "periods": exc.problem.get("periods", [])}
        raise
    ancestors, node, manager, people, rights, history = await gather(
        apis.orgunits.get(f"/orgunits/{uid}/ancestors", at=day),
        apis.orgunits.get(f"/orgunits/{uid}/subtree", at=day, depth=1),
        apis.registry.get_or_none(f"/orgunits/{uid}/manager", at=day),
        # A unit just created may not have reached registry's projection yet (events, about a second):
        # then it has no people there yet, rather than no page.
        apis.registry.get_or_none(f"/orgunits/{uid}/people", at=day, subtree=str(subtree).lower(), limit=PEOPLE_PAGE),
        apis.access.get_or_none(f"/orgunits/{uid}/rights", at=day),
        apis.orgunits.get(f"/orgunits/{uid}/history"),
    )
    people = people or {"items": []}
    names = Names(apis, day)
    path = list(reversed(ancestors["items"]))
    names.units.update({a["uuid"]: a["name"] for a in path})
    names.units[uid] = unit["name"]
    rights_list = (rights or {}).get("rights", [])
    await names.resolve(
        classes=[unit.get("unit_type"), unit.get("unit_level"), unit.get("hierarchy"),
                 *(a.get("address_type") for a in unit["addresses"]), *(k["kle"] for k in unit.get("kle", []))],
        units=[*(r["reason"].get("unit") for r in rights_list), *(h.get("parent") for h in history["timeline"]),
               *(r["unit"] for r in unit.get("related_units", []))],
        role_groups=[r["reason"].get("role_group") for r in rights_list],
    )
    return {
        "unit": unit,
        "uuid": uid,
        "path": path,
        "children": node.get("children", []),
        "manager": manager,
        "people": people["items"],
        "people_more": people.get("next_cursor"),
        "subtree": subtree,
        "rights": rights_list,
        "members": len((rights or {}).get("members", [])),
        "names": names,
        "timeline": split_in_time(history["timeline"], day),
    }


async def unit_people(apis: Apis, uid: str, day: date, *, subtree: bool, cursor: str | None) -> dict[str, Any]:
    page = await apis.registry.get(
        f"/orgunits/{uid}/people", at=day, subtree=str(subtree).lower(), limit=PEOPLE_PAGE, cursor=cursor
    )
    return {"people": page["items"], "people_more": page.get("next_cursor"), "subtree": subtree, "uuid": uid}


# ---------------------------------------------------------------------------- person page


async def person_page(apis: Apis, pid: str, day: date) -> dict[str, Any]:
    overview, history, rights, accounts = await gather(
        apis.registry.get_or_none(f"/persons/{pid}/overview", at=day),
        apis.registry.get(f"/persons/{pid}/history"),
        apis.access.get_or_none(f"/persons/{pid}/rights", at=day),
        apis.access.get("/accounts", person=pid, limit=100),
    )
    engagements = (overview or {}).get("engagements", [])
    # Each engagement's whole timeline: its earlier slices and the changes planned from a later day.
    histories = await gather(*(apis.registry.get_or_none(f"/engagements/{e['uuid']}/history") for e in engagements))
    slices = [{**s, "engagement": e["uuid"]} for e, h in zip(engagements, histories, strict=True) if h
              for s in h["timeline"]]
    names = Names(apis, day)
    for eng in engagements:
        for step in eng["unit"]["path"]:
            names.units[step["uuid"]] = step["name"]
    rights_list = (rights or {}).get("rights", [])
    reasons = [reason for r in rights_list for reason in r["reasons"]]
    await names.resolve(
        units=[*(u for reason in reasons for u in (reason.get("unit"), reason.get("via_unit"))),
               *(s.get("unit") for s in slices)],
        role_groups=[reason.get("role_group") for reason in reasons],
        classes=[*(reason.get("job_function") for reason in reasons), *(s.get("job_function") for s in slices)],
        it_systems=[a["it_system"] for a in accounts["items"]],
    )
    names.it_systems.update({r["it_system"]: r["it_system_name"] for r in rights_list if r.get("it_system_name")})
    return {
        "uuid": pid,
        "overview": overview,
        "person": (overview or {}).get("person"),
        "history": history,
        "rights": rights_list,
        "accounts": accounts["items"],
        "names": names,
        "engagement_timeline": split_in_time(sorted(slices, key=lambda s: s["validity"]["from"]), day),
    }


# ---------------------------------------------------------------------------- vocabulary for forms


async def classes_of(apis: Apis, facet: str, day: date) -> list[dict[str, Any]]:
    page = await apis.orgunits.get("/classes", facet=facet, at=day, limit=1000)
    return sorted(page["items"], key=lambda c: c["name"])


# ---------------------------------------------------------------------------- writes


def _validity(form: Form) -> dict[str, Any]:
    return {"from": form.values.get("from") or None, "to": form.values.get("to") or None}


async def create_unit(apis: Apis, form: Form) -> dict[str, Any]:
    v = form.values
    body = {
        "name": v.get("name", ""),
        "user_key": v.get("user_key", ""),
        "unit_type": v.get("unit_type") or None,
        "parent": v.get("parent") or None,
        "validity": _validity(form),
    }
    result: dict[str, Any] = await apis.orgunits.post("/orgunits", body)
    return result


async def move_unit(apis: Apis, uid: str, form: Form) -> dict[str, Any]:
    body = {"parent": form.values.get("parent") or None, "validity": {"from": form.values.get("from") or None}}
    result: dict[str, Any] = await apis.orgunits.post(f"/orgunits/{uid}/move", body, if_match=_version(form))
    return result


async def rename_unit(apis: Apis, uid: str, form: Form) -> dict[str, Any]:
    """A new name from a day on (the old one stays in the timeline before it)."""
    body = {"name": form.values.get("name", ""), "validity": {"from": form.values.get("from") or None}}
    result: dict[str, Any] = await apis.orgunits.patch(f"/orgunits/{uid}", body, if_match=_version(form))
    return result


async def terminate_unit(apis: Apis, uid: str, form: Form) -> dict[str, Any]:
    body = {"to": form.values.get("to") or None}
    result: dict[str, Any] = await apis.orgunits.post(f"/orgunits/{uid}/terminate", body, if_match=_version(form))
    return result


async def hire(apis: Apis, uid: str, form: Form) -> dict[str, Any]:
    v = form.values
    body = {
        "person": v.get("person", ""),
        "unit": uid,
        "job_function": v.get("job_function", ""),
        "engagement_type": v.get("engagement_type", ""),
        "primary": v.get("primary") == "on",
        "validity": {"from": v.get("from") or None},
    }
    result: dict[str, Any] = await apis.registry.post("/engagements", body)
    return result


def _version(form: Form) -> int | None:
    """The version the form was opened on, sent as ``If-Match`` (a change in between is told, not overwritten)."""
    raw = form.values.get("version", "")
    return int(raw) if raw.isdigit() else None


ENGAGEMENT_FIELDS = ("unit", "job_function", "engagement_type")


def engagement_changes(form: Form, current: dict[str, Any]) -> dict[str, Any]:
    """What the form changes of the engagement as it was shown (only those go in the PATCH)."""
    v = form.values
    out: dict[str, Any] = {k: v[k] for k in ENGAGEMENT_FIELDS if v.get(k) and v[k] != current.get(k)}
    if (v.get("primary") == "on") != bool(current.get("primary")):
        out["primary"] = v.get("primary") == "on"
    return out


async def change_engagement(apis: Apis, eid: str, form: Form, changes: dict[str, Any]) -> dict[str, Any]:
    """A changed engagement from a day on (the earlier slice stays in its timeline)."""
    body = {**changes, "validity": {"from": form.values.get("from") or None}}
    result: dict[str, Any] = await apis.registry.patch(f"/engagements/{eid}", body, if_match=_version(form))
    return result


async def terminate_engagement(apis: Apis, eid: str, form: Form) -> dict[str, Any]:
    body = {"to": form.values.get("to") or None}
    result: dict[str, Any] = await apis.registry.post(f"/engagements/{eid}/terminate", body, if_match=_version(form))
    return result


async def add_manager(apis: Apis, uid: str, form: Form, responsibilities: list[str]) -> dict[str, Any]:
    """A manager position in the unit; without a person it is vacant."""
    v = form.values
    body = {
        "person": v.get("person") or None,
        "unit": uid,
        "manager_type": v.get("manager_type", ""),
        "manager_level": v.get("manager_level", ""),
        "responsibilities": responsibilities,
        "validity": _validity(form),
    }
    result: dict[str, Any] = await apis.registry.post("/managers", body)
    return result


# ---------------------------------------------------------------------------- rights: approvals, held batches


def first_slice(doc: dict[str, Any]) -> dict[str, Any]:
    """The slice in force on the day read, else the first one (an assignment from a later day)."""
    current: dict[str, Any] | None = doc.get("current")
    if current:
        return current
    timeline: list[dict[str, Any]] = doc.get("timeline") or [{}]
    return timeline[0]


async def rights_page(apis: Apis, day: date) -> dict[str, Any]:
    """What waits for a decision: sensitive assignments pending a second person's approval, and
    revocations the mass-change guard held back."""
    pending, batches = await gather(
        apis.access.get("/assignments", status="pending", at=day, limit=PEOPLE_PAGE),
        apis.access.get("/held-batches", status="held", limit=PEOPLE_PAGE),
    )
    items = [{**a, "slice": first_slice(a)} for a in pending["items"]]
    names = Names(apis, day)
    await names.resolve(
        roles=[a["slice"].get("role") for a in items],
        role_groups=[a["slice"].get("role_group") for a in items],
        persons=[a["slice"].get("person") for a in items],
        units=[a["slice"].get("unit") for a in items],
    )
    return {"pending": items, "batches": batches["items"], "names": names}


async def approve(apis: Apis, aid: str) -> dict[str, Any]:
    result: dict[str, Any] = await apis.access.post(f"/assignments/{aid}/approve", None)
    return result


async def reject(apis: Apis, aid: str, reason: str) -> dict[str, Any]:
    """The pending assignment never grants anything; the reason stays in its history and event."""
    body = {"reason": reason.strip()} if reason.strip() else None
    result: dict[str, Any] = await apis.access.post(f"/assignments/{aid}/reject", body)
    return result


async def decide_batch(apis: Apis, bid: str, release: bool) -> dict[str, Any]:
    result: dict[str, Any] = await apis.access.post(f"/held-batches/{bid}/{'release' if release else 'cancel'}", None)
    return result


async def catalogue(apis: Apis, day: date) -> dict[str, list[dict[str, Any]]]:
    """Roles and role groups to choose from in an assignment form (their names on the day)."""
    roles, groups = await gather(
        apis.access.get("/roles", at=day, limit=1000), apis.access.get("/role-groups", at=day, limit=1000)
    )

    def named(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = [{"uuid": i["uuid"], "name": (i.get("current") or {}).get("name"),
                "sensitive": (i.get("current") or {}).get("sensitive", False)} for i in items if i.get("current")]
        return sorted(out, key=lambda i: str(i["name"]))

    return {"roles": named(roles["items"]), "role_groups": named(groups["items"])}


async def assign(apis: Apis, form: Form, *, unit: str | None = None, person: str | None = None) -> dict[str, Any]:
    """A role or a role group to a unit (its subtree if ``inherit``; only a job function there if one is
    chosen) or to a person. A sensitive role to a person waits for approval (the service decides)."""
    v = form.values
    body: dict[str, Any] = {"validity": _validity(form)}
    what = v.get("what", "")
    kind, _, ref = what.partition(":")
    if kind in ("role", "role_group") and ref:
        body[kind] = ref
    if unit:
        body["unit"] = unit
        body["inherit"] = v.get("inherit") == "on"
        if v.get("job_function"):
            body["job_function"] = v["job_function"]
    if person:
        body["person"] = person
    result: dict[str, Any] = await apis.access.post("/assignments", body)
    return result


# ---------------------------------------------------------------------------- operations: subscriptions, deliveries


async def operations_page(apis: Apis) -> dict[str, Any]:
    """The notifier's downstream targets with their backlog and circuit, and the deliveries that failed."""
    subs, failed = await gather(
        apis.notifier.get("/subscriptions", limit=PEOPLE_PAGE),
        apis.notifier.get("/deliveries", status="failed", limit=PEOPLE_PAGE),
    )
    names = {s["uuid"]: s["name"] for s in subs["items"]}
    return {"subscriptions": subs["items"], "failed": failed["items"], "failed_more": bool(failed.get("next_cursor")),
            "sub_names": names}


async def replay_delivery(apis: Apis, did: str) -> dict[str, Any]:
    result: dict[str, Any] = await apis.notifier.post(f"/deliveries/{did}/replay", None)
    return result


async def replay_failed(apis: Apis, sid: str, since: str) -> dict[str, Any]:
    """Every delivery to the target that failed since the day, sent again in order."""
    result: dict[str, Any] = await apis.notifier.post(
        f"/subscriptions/{sid}/replay", None, since=f"{since}T00:00:00Z", status="failed")
    return result
