"""The seeded vocabulary: facets and classes with deterministic UUIDs.

Other services' demos and tests import the UUIDs from here
(``class_uuid("job_function", "paedagog")``), so they are uuid5 of the facet
and the class's user_key and never change between installations.
"""

from __future__ import annotations

import csv
import uuid
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path

NAMESPACE = uuid.UUID("5b1c6f0e-7d3a-4c51-9a55-0f6a2d0c4e11")

#: Seeded classes are valid from this day on, the same in every replica and installation.
SEED_FROM = date(1900, 1, 1)


def facet_uuid(facet: str) -> str:
    """The UUID of a facet, by its user_key."""
    return str(uuid.uuid5(NAMESPACE, f"facet:{facet}"))


def class_uuid(facet: str, user_key: str) -> str:
    """The UUID of a class, by its facet's user_key and its own user_key."""
    return str(uuid.uuid5(NAMESPACE, f"class:{facet}:{user_key}"))


#: facet user_key -> description
FACETS: dict[str, str] = {
    "unit_type": "Enhedstype: hvilken slags organisationsenhed",
    "unit_level": "Enhedsniveau i hierarkiet",
    "job_function": "Stillingsbetegnelse",
    "engagement_type": "Ansættelsestype",
    "association_type": "Tilknytningstype (tillidsrepræsentant, MED …)",
    "manager_type": "Ledertype",
    "manager_level": "Lederniveau",
    "responsibility": "Lederansvar",
    "leave_type": "Orlovstype",
    "address_type": "Adressetype (e-mail, telefon, postadresse, EAN, P-nummer, web)",
    "visibility": "Synlighed",
    "trade_union": "Fagforening (på tilknytninger, som OS2mo's trade_union)",
    "it_system_category": "IT-systemkategori",
    "unit_hierarchy": "Organisationshierarki (linjeorganisation, MED, projekt …)",
    "kle": "KL's Emnesystematik (KLE): hovedgrupper, grupper og emner",
}

#: facet -> [(user_key, name, scope)]; scope only for address_type
CLASSES: dict[str, list[tuple[str, str, str | None]]] = {
    "unit_type": [
        ("forvaltning", "Forvaltning", None),
        ("afdeling", "Afdeling", None),
        ("center", "Center", None),
        ("team", "Team", None),
        ("skole", "Skole", None),
        ("dagtilbud", "Dagtilbud", None),
        ("institution", "Institution", None),
    ],
    "unit_level": [
        ("kommune", "Kommune", None),
        ("direktion", "Direktionsniveau", None),
        ("forvaltning", "Forvaltningsniveau", None),
        ("center", "Centerniveau", None),
        ("afdeling", "Afdelingsniveau", None),
        ("team", "Teamniveau", None),
    ],
    "job_function": [
        ("direktoer", "Direktør", None),
        ("chef", "Chef", None),
        ("leder", "Leder", None),
        ("skoleleder", "Skoleleder", None),
        ("laerer", "Lærer", None),
        ("paedagog", "Pædagog", None),
        ("paedagogmedhjaelper", "Pædagogmedhjælper", None),
        ("sygeplejerske", "Sygeplejerske", None),
        ("sosu_hjaelper", "Social- og sundhedshjælper", None),
        ("sosu_assistent", "Social- og sundhedsassistent", None),
        ("socialraadgiver", "Socialrådgiver", None),
        ("sagsbehandler", "Sagsbehandler", None),
        ("konsulent", "Konsulent", None),
        ("specialkonsulent", "Specialkonsulent", None),
        ("fuldmaegtig", "Fuldmægtig", None),
        ("ingenioer", "Ingeniør", None),
        ("it_medarbejder", "IT-medarbejder", None),
        ("elev", "Elev", None),
    ],
    "engagement_type": [
        ("ansat", "Ansat", None),
        ("timeloennet", "Timelønnet", None),
        ("vikar", "Vikar", None),
        ("elev", "Elev", None),
        ("fleksjob", "Fleksjob", None),
    ],
    "association_type": [
        ("tillidsrepraesentant", "Tillidsrepræsentant", None),
        ("arbejdsmiljoerepraesentant", "Arbejdsmiljørepræsentant", None),
        ("med_medlem", "Medlem af MED-udvalg", None),
        ("ekstern_konsulent", "Ekstern konsulent", None),
    ],
    "manager_type": [
        ("direktoer", "Direktør", None),
        ("chef", "Chef", None),
        ("leder", "Leder", None),
        ("teamleder", "Teamleder", None),
    ],
    "manager_level": [
        ("niveau1", "Niveau 1 (direktion)", None),
        ("niveau2", "Niveau 2 (chef)", None),
        ("niveau3", "Niveau 3 (leder)", None),
        ("niveau4", "Niveau 4 (teamleder)", None),
    ],
    "responsibility": [
        ("personale", "Personaleansvar", None),
        ("budget", "Budgetansvar", None),
        ("faglig", "Fagligt ansvar", None),
        ("arbejdsmiljoe", "Arbejdsmiljøansvar", None),
    ],
    "leave_type": [
        ("barsel", "Barselsorlov", None),
        ("foraeldreorlov", "Forældreorlov", None),
        ("uddannelse", "Uddannelsesorlov", None),
        ("tjenestefri", "Tjenestefrihed uden løn", None),
        ("sygdom", "Langtidssygemelding", None),
    ],
    "address_type": [
        ("email", "E-mail", "email"),
        ("telefon", "Telefon", "phone"),
        ("postadresse", "Postadresse", "postal"),
        ("ean", "EAN-nummer", "ean"),
        ("pnummer", "P-nummer", "pnumber"),
        ("www", "Hjemmeside", "www"),
        ("lokation", "Lokation", "text"),
    ],
    "visibility": [
        ("offentlig", "Må vises eksternt", None),
        ("intern", "Kun internt", None),
        ("hemmelig", "Hemmelig", None),
    ],
    "trade_union": [
        ("hk", "HK Kommunal", None),
        ("foa", "FOA", None),
        ("bupl", "BUPL", None),
        ("dlf", "Danmarks Lærerforening", None),
        ("dsr", "Dansk Sygeplejeråd", None),
        ("dm", "Dansk Magisterforening", None),
    ],
    "unit_hierarchy": [
        ("linje", "Linjeorganisation", None),
        ("med", "MED-organisation (samarbejdsudvalg)", None),
        ("projekt", "Projektorganisation", None),
    ],
    "it_system_category": [
        ("fagsystem", "Fagsystem", None),
        ("administrativt", "Administrativt system", None),
        ("infrastruktur", "Infrastruktur", None),
        ("kommunikation", "Kommunikation og samarbejde", None),
    ],
}


# --------------------------------------------------------------------------- KLE

#: The KLE numbers shipped with the service: an extract of KL's public KLE emneplan (the main groups
#: the demo municipality uses, and some of their groups and topics); see ``data/kle.csv``.
KLE_CSV = Path(__file__).with_name("data") / "kle.csv"


@dataclass(frozen=True)
class KleRow:
    """One KLE number: a main group (``27``), group (``27.24``) or topic (``27.24.00``)."""

    number: str
    title: str

    @property
    def parent(self) -> str | None:
        """The number one level up (``27.24`` for ``27.24.00``); None for a main group."""
        head, _, _ = self.number.rpartition(".")
        return head or None


@cache
def kle_rows(path: Path = KLE_CSV) -> tuple[KleRow, ...]:
    """The KLE numbers of a ``number,title`` CSV, parents before children; a parent must be listed."""
    with path.open(encoding="utf-8", newline="") as f:
        rows = [KleRow(r["number"].strip(), r["title"].strip()) for r in csv.DictReader(f)]
    numbers = {r.number for r in rows}
    for r in rows:
        if not all(part.isdigit() and len(part) == 2 for part in r.number.split(".")) or r.number.count(".") > 2:
            raise ValueError(f"{path}: {r.number!r} is not a KLE number (NN, NN.NN or NN.NN.NN)")
        if r.parent is not None and r.parent not in numbers:
            raise ValueError(f"{path}: {r.number} needs its parent {r.parent} in the file")
    return tuple(sorted(rows, key=lambda r: (r.number.count("."), r.number)))


def kle_uuid(number: str) -> str:
    """The UUID of a KLE class, by its number (its user_key)."""
    return class_uuid("kle", number)
