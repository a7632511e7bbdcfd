"""Demo municipality: Kolding Kommune's organisation, loaded through the HTTP API.

UUIDs are fixed (uuid5 of the unit's name), so the registry's and the
access-rights demo loaders can use them: ``from orgdir_tools.demo.orgunits import UNITS``
then ``UNITS["Munkevængets Skole"]``. Loading twice changes nothing (PUT).

Beside the line organisation (``UNITS``) the municipality has its MED
cooperation committees in the ``med`` hierarchy (``MED_UNITS``); its units
carry KLE numbers (``KLE``), and the two home-care districts are related
units (``RELATED``). The women's shelter's street address is secret
(``SECRET_STREETS``: only readers with ``orgdir:read:secret`` see it).
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from orgunits.domain import ean_check_digit
from orgunits.vocabulary import class_uuid, kle_uuid

DEMO_NAMESPACE = uuid.UUID("0c7d0f53-58a1-4d43-8f4e-2a5e6c7b9d21")
DEMO_FROM = "2020-01-01"


def unit_uuid(name: str) -> str:
    return str(uuid.uuid5(DEMO_NAMESPACE, name))


def _ean(serial: int) -> str:
    first12 = f"5798009{serial:05d}"
    return first12 + str(ean_check_digit(first12))


# (name, user_key, parent name, unit_type, unit_level)
_TREE: list[tuple[str, str, str | None, str, str]] = [
    ("Kolding Kommune", "KOLDING", None, "forvaltning", "kommune"),
    ("Borgmesterens Afdeling", "BA", "Kolding Kommune", "forvaltning", "direktion"),
    ("HR og Personale", "BA-HR", "Borgmesterens Afdeling", "afdeling", "afdeling"),
    ("Økonomi og Løn", "BA-OEK", "Borgmesterens Afdeling", "afdeling", "afdeling"),
    ("Digitalisering og IT", "BA-IT", "Borgmesterens Afdeling", "afdeling", "afdeling"),
    ("Kommunikation", "BA-KOM", "Borgmesterens Afdeling", "team", "team"),
    ("Børn og Uddannelse", "BU", "Kolding Kommune", "forvaltning", "forvaltning"),
    ("Skoleområdet", "BU-SKOLE", "Børn og Uddannelse", "center", "center"),
    ("Munkevængets Skole", "BU-MUNK", "Skoleområdet", "skole", "afdeling"),
    ("Brændkjærskolen", "BU-BRAEND", "Skoleområdet", "skole", "afdeling"),
    ("Kongsbjergskolen", "BU-KONGS", "Skoleområdet", "skole", "afdeling"),
    ("Bakkeskolen", "BU-BAKKE", "Skoleområdet", "skole", "afdeling"),
    ("Dagtilbudsområdet", "BU-DAG", "Børn og Uddannelse", "center", "center"),
    ("Børnehuset Åparken", "BU-AAPARK", "Dagtilbudsområdet", "dagtilbud", "afdeling"),
    ("Vuggestuen Mælkebøtten", "BU-MAELK", "Dagtilbudsområdet", "dagtilbud", "afdeling"),
    ("Pædagogisk Psykologisk Rådgivning", "BU-PPR", "Børn og Uddannelse", "afdeling", "afdeling"),
    ("Social og Sundhed", "SS", "Kolding Kommune", "forvaltning", "forvaltning"),
    ("Hjemmeplejen", "SS-HJEM", "Social og Sundhed", "center", "center"),
    ("Hjemmepleje Nord", "SS-HJEM-N", "Hjemmeplejen", "team", "team"),
    ("Hjemmepleje Syd", "SS-HJEM-S", "Hjemmeplejen", "team", "team"),
    ("Plejecenter Ældrebo", "SS-AELDRE", "Social og Sundhed", "institution", "afdeling"),
    ("Socialafdelingen", "SS-SOC", "Social og Sundhed", "afdeling", "afdeling"),
    ("Teknik og Miljø", "TM", "Kolding Kommune", "forvaltning", "forvaltning"),
    ("Vej og Park", "TM-VEJ", "Teknik og Miljø", "afdeling", "afdeling"),
    ("Byggeri og Plan", "TM-BYG", "Teknik og Miljø", "afdeling", "afdeling"),
    ("Natur og Miljø", "TM-NAT", "Teknik og Miljø", "afdeling", "afdeling"),
    ("Arbejdsmarked", "AM", "Kolding Kommune", "forvaltning", "forvaltning"),
    ("Jobcenter Kolding", "AM-JOB", "Arbejdsmarked", "center", "center"),
    ("Krisecenter Kolding", "SS-KRISE", "Socialafdelingen", "institution", "afdeling"),  # last: serials stay
]

#: unit name -> UUID, for the other services' demo loaders and tests (the line organisation)
UNITS: dict[str, str] = {name: unit_uuid(name) for name, *_ in _TREE}

# (name, user_key, parent name): the MED committees (hierarchy ``med``), as a Danish municipality has them
_MED: list[tuple[str, str, str | None]] = [
    ("Hovedudvalget", "MED-HU", None),
    ("Børn og Uddannelse MED-udvalg", "MED-BU", "Hovedudvalget"),
    ("Lokaludvalg Munkevængets Skole", "MED-BU-MUNK", "Børn og Uddannelse MED-udvalg"),
    ("Social og Sundhed MED-udvalg", "MED-SS", "Hovedudvalget"),
    ("Lokaludvalg Hjemmeplejen", "MED-SS-HJEM", "Social og Sundhed MED-udvalg"),
]
MED_UNITS: dict[str, str] = {name: unit_uuid(name) for name, *_ in _MED}

#: unit name -> [(KLE number, aspects)] (numbers from the KLE extract orgunits ships)
KLE: dict[str, list[tuple[str, list[str]]]] = {
    "Borgmesterens Afdeling": [("00.01", ["udførende", "ansvarlig"]), ("00.17", ["ansvarlig"])],
    "Kommunikation": [("00.05", ["udførende"])],
    "Skoleområdet": [("17", ["ansvarlig"])],
    **{school: [("17", ["udførende"])] for school in (
        "Munkevængets Skole", "Brændkjærskolen", "Kongsbjergskolen", "Bakkeskolen")},
    "Dagtilbudsområdet": [("28", ["ansvarlig"])],
    "Børnehuset Åparken": [("28", ["udførende"])],
    "Vuggestuen Mælkebøtten": [("28", ["udførende"])],
    "Pædagogisk Psykologisk Rådgivning": [("27.24", ["indsigt"])],
    "Socialafdelingen": [("27.24", ["udførende", "ansvarlig"]), ("27", ["indsigt"])],
    "Plejecenter Ældrebo": [("03.22", ["udførende"])],
    "Jobcenter Kolding": [("15", ["udførende", "ansvarlig"]), ("32", ["udførende"])],
}

#: (relation UUID, two unit names): the two home-care districts, related units as after a merger
RELATED: list[tuple[str, tuple[str, str]]] = [
    (str(uuid.uuid5(DEMO_NAMESPACE, "related:hjemmepleje")), ("Hjemmepleje Nord", "Hjemmepleje Syd")),
]

_STREETS = {
    "Kolding Kommune": "Akseltorv 1, 6000 Kolding",
    "Munkevængets Skole": "Munkevængets Skole, Lyng Allé 2, 6000 Kolding",
    "Brændkjærskolen": "Brændkjærskolen, Brændkjærgade 20, 6000 Kolding",
    "Kongsbjergskolen": "Kongsbjergskolen, Kongsbjerg 13, 6000 Kolding",
    "Bakkeskolen": "Bakkeskolen, Bakkevej 31, 6000 Kolding",
    "Børnehuset Åparken": "Åparken 4, 6000 Kolding",
    "Vuggestuen Mælkebøtten": "Mælkebøttevej 7, 6000 Kolding",
    "Plejecenter Ældrebo": "Ældrebovej 10, 6000 Kolding",
    "Jobcenter Kolding": "Dyrehavevej 1, 6000 Kolding",
    "Hjemmeplejen": "Skovvangen 40, 6000 Kolding",
}

#: unit name -> a street address of visibility ``hemmelig`` (a shelter's is nobody's business)
SECRET_STREETS = {"Krisecenter Kolding": "Skjulestien 3, 6000 Kolding"}


def _addresses(i: int, name: str, key: str, level: str) -> list[dict[str, str]]:
    def a(kind: str, value: str, visibility: str | None = None) -> dict[str, str]:
        out = {"address_type": class_uuid("address_type", kind), "value": value}
        return out | ({"visibility": class_uuid("visibility", visibility)} if visibility else {})

    slug = key.lower().replace("-", ".")
    out = [a("email", f"{slug}@kolding.dk")]
    if name in _STREETS:
        out.append(a("postadresse", _STREETS[name]))
        out.append(a("pnummer", f"10{i:08d}"))
        out.append(a("telefon", f"7979{i:04d}"))
    if level in ("kommune", "direktion", "forvaltning"):
        out.append(a("ean", _ean(i)))
    if name == "Kolding Kommune":
        out.append(a("www", "https://www.kolding.dk"))
    if name in SECRET_STREETS:
        out.append(a("postadresse", SECRET_STREETS[name], "hemmelig"))
        out.append(a("telefon", f"7979{i:04d}", "offentlig"))
    return out


def bodies() -> list[tuple[str, dict[str, Any]]]:
    """(uuid, PUT body) for every demo unit, parents first."""
    out: list[tuple[str, dict[str, Any]]] = []
    for i, (name, key, parent, unit_type, unit_level) in enumerate(_TREE, start=1):
        out.append((
            UNITS[name],
            {
                "user_key": key,
                "name": name,
                "parent": UNITS[parent] if parent else None,
                "unit_type": class_uuid("unit_type", unit_type),
                "unit_level": class_uuid("unit_level", unit_level),
                "addresses": _addresses(i, name, key, unit_level),
                "kle": [{"kle": kle_uuid(n), "aspects": aspects} for n, aspects in KLE.get(name, [])],
                "validity": {"from": DEMO_FROM},
            },
        ))
    for name, key, parent in _MED:
        out.append((
            MED_UNITS[name],
            {
                "user_key": key,
                "name": name,
                "parent": MED_UNITS[parent] if parent else None,
                "hierarchy": class_uuid("unit_hierarchy", "med"),
                "validity": {"from": DEMO_FROM},
            },
        ))
    return out


async def load(http: httpx.AsyncClient) -> None:
    """PUT every unit, then the related units (admin or writer token on ``http``); idempotent."""
    for uid, body in bodies():
        r = await http.put(f"/api/v1/orgunits/{uid}", json=body)
        if r.status_code not in (200, 201):
            raise RuntimeError(f"demo unit {body['name']}: {r.status_code} {r.text}")
    for rid, (a, b) in RELATED:
        body = {"units": [UNITS[a], UNITS[b]], "validity": {"from": DEMO_FROM}}
        r = await http.put(f"/api/v1/related-units/{rid}", json=body)
        if r.status_code not in (200, 201):
            raise RuntimeError(f"demo related units {a} / {b}: {r.status_code} {r.text}")
