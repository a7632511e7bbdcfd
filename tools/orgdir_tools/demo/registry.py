"""A small Danish demo: ~40 people with engagements, managers, associations and a leave.

Issue #17's people side: every address has a visibility (work e-mails public,
desk phones internal, and a few people have a secret mobile number that only
``orgdir:read:secret`` sees); the associations name a substitute and a trade
union; the managers carry responsibilities.

Loaded through the HTTP API with fixed UUIDs (uuid5 of names), so running it
twice changes nothing. The units and classes are those of the orgunits demo
(``orgdir_tools.demo.orgunits``) and vocabulary: ``load`` waits until this
registry's projection has received them (orgunits events), up to a minute,
before writing anything.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import date, timedelta
from typing import Any

import httpx

from orgdir_tools.demo.orgunits import UNITS
from orgunits.vocabulary import class_uuid

NAMESPACE = uuid.UUID("5b0f3c52-4d7e-4b8e-9a53-1d6f6a0e2b11")
FACETS = (
    "job_function",
    "engagement_type",
    "manager_type",
    "manager_level",
    "responsibility",
    "association_type",
    "leave_type",
    "visibility",
    "trade_union",
)
PREFERRED = {
    "job_function": ("konsulent", "specialkonsulent", "sagsbehandler", "medarbejder"),
    "engagement_type": ("ansat", "fastansat", "månedslønnet", "maanedsloennet"),
    "manager_type": ("direktoer", "direktør", "chef", "leder"),
    "manager_level": ("niveau1", "niveau_1", "n1"),
    "responsibility": ("personale", "personaleansvar"),
    "association_type": ("tillidsrepraesentant", "med_medlem", "medlem"),
    "leave_type": ("barsel", "barselsorlov", "orlov"),
    "visibility": ("intern",),
    "trade_union": ("hk",),
}
#: every SECRET_EVERY-th person (from the 3rd) has a secret mobile number (visibility hemmelig)
SECRET_EVERY = 8
PEOPLE = [
    ("Anne", "Mølgaard"),
    ("Søren", "Kjær"),
    ("Mette", "Østergaard"),
    ("Lars", "Bæk"),
    ("Hanne", "Nørgaard"),
    ("Jens", "Ågesen"),
    ("Kirsten", "Holm"),
    ("Peter", "Lund"),
    ("Lone", "Dahl"),
    ("Mads", "Friis"),
    ("Ida", "Bach"),
    ("Niels", "Jørgensen"),
    ("Birgitte", "Sørensen"),
    ("Ole", "Madsen"),
    ("Karen", "Thomsen"),
    ("Rasmus", "Poulsen"),
    ("Freja", "Møller"),
    ("Jørgen", "Mortensen"),
    ("Åse", "Christiansen"),
    ("Frederik", "Larsen"),
    ("Sofie", "Rasmussen"),
    ("Mikkel", "Hansen"),
    ("Emma", "Pedersen"),
    ("Thomas", "Andersen"),
    ("Louise", "Nielsen"),
    ("Henrik", "Jensen"),
    ("Camilla", "Kristensen"),
    ("Bjørn", "Olsen"),
    ("Signe", "Johansen"),
    ("Anders", "Vestergaard"),
    ("Maja", "Skov"),
    ("Kasper", "Brandt"),
    ("Julie", "Winther"),
    ("Christian", "Lauridsen"),
    ("Line", "Svendsen"),
    ("Morten", "Frandsen"),
    ("Tove", "Ærenlund"),
    ("Kim", "Bruun"),
    ("Pia", "Kofoed"),
    ("Erik", "Damgaard"),
]
START = date(2020, 1, 1)


def demo_uuid(*parts: str) -> str:
    return str(uuid.uuid5(NAMESPACE, "/".join(parts)))


async def _all(http: httpx.AsyncClient, path: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        r = await http.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        r.raise_for_status()
        body = r.json()
        items += body["items"]
        cursor = body["next_cursor"]
        if not cursor:
            return items


async def _wait_for_orgunits(
    http: httpx.AsyncClient, wanted: list[str], within: float
) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    deadline = time.monotonic() + within
    while True:
        units = await _all(http, "/api/v1/projection/orgunits")
        classes = {f: await _all(http, "/api/v1/projection/classes", facet=f) for f in FACETS}
        have = {u["uuid"] for u in units}
        if units and all(classes.values()) and all(w in have for w in wanted):
            return units, classes
        if time.monotonic() > deadline:
            missing = [f for f, c in classes.items() if not c]
            raise RuntimeError(
                f"the registry has not received the orgunits demo (units: {len(units)}, "
                f"facets without classes: {missing}); is orgunits running and its demo loaded?"
            )
        await asyncio.sleep(1)


def _class(facet: str, key: str, classes: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The class with ``key`` (the vocabulary's UUID, else by user_key), or None."""
    for c in classes:
        if c["uuid"] == class_uuid(facet, key) or (c.get("user_key") or "").lower() == key:
            return c
    return None


def _pick(facet: str, classes: list[dict[str, Any]]) -> dict[str, Any]:
    by_uuid = {c["uuid"]: c for c in classes}
    for key in PREFERRED.get(facet, ()):
        if class_uuid(facet, key) in by_uuid:  # the orgunits vocabulary's class
            return by_uuid[class_uuid(facet, key)]
        for c in classes:
            if (c.get("user_key") or "").lower() == key:
                return c
    return sorted(classes, key=lambda c: c.get("user_key") or "")[0]


async def _put(http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> None:
    r = await http.put(path, json=body)
    if r.status_code not in (200, 201):
        raise RuntimeError(f"PUT {path}: {r.status_code} {r.text}")


async def load(http: httpx.AsyncClient, within: float = 60.0) -> None:
    """Load the demo through the registry API (idempotent)."""
    wanted = list(UNITS.values())
    units, classes = await _wait_for_orgunits(http, wanted, within)
    known = {u["uuid"]: u for u in units}
    units = [known[w] for w in wanted]
    units.sort(key=lambda u: (u["parent"] is not None, u["user_key"] or "", u["uuid"]))
    cls = {f: _pick(f, classes[f]) for f in FACETS}
    public = _class("visibility", "offentlig", classes["visibility"]) or cls["visibility"]
    secret = _class("visibility", "hemmelig", classes["visibility"])
    responsibilities = [cls["responsibility"]] + [
        c for key in ("budget",) if (c := _class("responsibility", key, classes["responsibility"]))
    ]
    unions = [c for key in ("hk", "foa") if (c := _class("trade_union", key, classes["trade_union"]))]

    def since(*items: dict[str, Any]) -> date:
        days = [START] + [date.fromisoformat(i["active_from"]) for i in items if i.get("active_from")]
        return max(days)

    persons: list[str] = []
    for i, (given, surname) in enumerate(PEOPLE):
        p = demo_uuid("person", given, surname)
        persons.append(p)
        mail = f"{given}.{surname}".lower()
        for a, b in (("æ", "ae"), ("ø", "oe"), ("å", "aa")):
            mail = mail.replace(a, b)
        birth = date(1960 + i % 35, 1 + i % 12, 1 + (i * 7) % 28)
        cpr = f"{birth:%d%m%y}{(1 if birth.year < 2000 else 4)}{i:03d}"
        await _put(
            http,
            f"/api/v1/persons/{p}",
            {
                "given_name": given,
                "surname": surname,
                "user_key": f"demo-{i + 1:02d}",
                "nickname": "Lasse" if i == 3 else None,
                "cpr": cpr,
                "validity": {"from": "2000-01-01"},
                "addresses": [
                    {"scope": "email", "value": f"{mail}@kommune.dk", "visibility": public["uuid"]},
                    {"scope": "phone", "value": f"+45 8940 {2000 + i}", "visibility": cls["visibility"]["uuid"]},
                    *(
                        [{"scope": "phone", "value": f"+45 2{i:03d} 4{i:03d}", "visibility": secret["uuid"]}]
                        if secret is not None and i % SECRET_EVERY == 2
                        else []
                    ),
                ],
            },
        )

    engagements: list[tuple[str, str, date]] = []
    for i, p in enumerate(persons):
        unit = units[i % len(units)]
        frm = since(unit, cls["job_function"], cls["engagement_type"])
        e = demo_uuid("engagement", p)
        await _put(
            http,
            f"/api/v1/engagements/{e}",
            {
                "person": p,
                "unit": unit["uuid"],
                "job_function": cls["job_function"]["uuid"],
                "engagement_type": cls["engagement_type"]["uuid"],
                "primary": True,
                "fraction": 1.0,
                "user_key": f"HR{i + 1:05d}",
                "validity": {"from": frm.isoformat()},
            },
        )
        engagements.append((e, p, frm))

    # Managers: the first persons head the first units; the last of them is a vacant position.
    heads = units[: min(5, len(units))]
    for i, unit in enumerate(heads):
        vacant = i == len(heads) - 1 and len(heads) > 1
        frm = since(unit, cls["manager_type"], cls["manager_level"], *responsibilities)
        await _put(
            http,
            f"/api/v1/managers/{demo_uuid('manager', unit['uuid'])}",
            {
                "person": None if vacant else persons[i],
                "unit": unit["uuid"],
                "manager_type": cls["manager_type"]["uuid"],
                "manager_level": cls["manager_level"]["uuid"],
                "responsibilities": [r["uuid"] for r in responsibilities],
                "validity": {"from": frm.isoformat()},
            },
        )

    # Union representatives, each with a substitute and a trade union.
    for who, stand_in, unit, union in ((7, 8, units[-1], unions[:1]), (21, 22, units[1 % len(units)], unions[1:])):
        union_cls = union[0] if union else cls["trade_union"]
        await _put(
            http,
            f"/api/v1/associations/{demo_uuid('association', persons[who])}",
            {
                "person": persons[who],
                "unit": unit["uuid"],
                "association_type": cls["association_type"]["uuid"],
                "substitute": persons[stand_in],
                "trade_union": union_cls["uuid"],
                "validity": {"from": since(unit, cls["association_type"], union_cls).isoformat()},
            },
        )
    e, p, frm = engagements[12]
    leave_from = max(frm, since(cls["leave_type"])) + timedelta(days=30)
    await _put(
        http,
        f"/api/v1/leaves/{demo_uuid('leave', e)}",
        {
            "person": p,
            "engagement": e,
            "leave_type": cls["leave_type"]["uuid"],
            "validity": {
                "from": leave_from.isoformat(),
                "to": (leave_from + timedelta(days=120)).isoformat(),
            },
        },
    )
