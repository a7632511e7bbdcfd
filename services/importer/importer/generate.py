"""A synthetic Danish municipality in the export format, deterministic by seed.

Pure (returns an ``Export``; ``readers.write_csv`` writes it). The tree is the
shape of a real one: the municipality, its administrations (Borgmesterens
Afdeling, Børn og Uddannelse, Social og Sundhed, Teknik og Miljø,
Arbejdsmarked, Kultur og Fritid), their areas (schools, day care, elder care,
home care, job centre …), institutions, and departments and teams below them.
People have Danish names, valid-looking CPR numbers (unique), e-mail and phone;
engagements carry job functions that fit the unit; most units have a manager
(a few positions vacant); some engagements have a leave; union and work
environment representatives and MED members are associations. The role
catalogue: IT systems the municipality uses, roles in each, role groups (a few
roles of one system given together), and assignments of the roles (one in ten:
of a role group) to units (often with their subtree) and to job functions
(often within an area).

Dates are fixed (not relative to today), so the same seed gives the same
files on any day. ``mutate`` makes the next night's export: moves, leavers, hires.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, replace
from datetime import date, timedelta

from importer.records import (
    Assignment,
    Association,
    Engagement,
    Export,
    ITSystem,
    Leave,
    Manager,
    Origin,
    Period,
    Person,
    Role,
    RoleGroup,
    Unit,
)


@dataclass(frozen=True)
class Size:
    units: int
    people: int
    engagements: int
    levels: int  # the deepest unit is at depth levels - 1
    manager_share: float = 0.85
    vacant_share: float = 0.04
    leave_share: float = 0.03
    it_systems: int = 0
    roles: int = 0  # spread over the IT systems
    role_groups: int = 0  # 2-5 roles of one IT system each; one assignment in ten is of a group
    assignments: int = 0  # to units and job functions
    associations: int = 0


PRESETS: dict[str, Size] = {
    "tiny": Size(units=40, people=120, engagements=140, levels=6, it_systems=3, roles=8, role_groups=2,
                 assignments=8, associations=10),
    "small": Size(units=200, people=2_000, engagements=2_400, levels=7, it_systems=12, roles=60, role_groups=8,
                  assignments=60, associations=120),
    "municipality": Size(units=3_000, people=30_000, engagements=36_000, levels=8, it_systems=40, roles=400,
                         role_groups=40, assignments=400, associations=1_500),
}

FOUNDED = date(2007, 1, 1)  # the municipal reform: every municipality's tree starts here
FUTURE = date(2027, 1, 1)  # some hires start here (future-dated in the export)

TOWNS = [("Kolding", "6000"), ("Vejle", "7100"), ("Silkeborg", "8600"), ("Holstebro", "7500"),
         ("Næstved", "4700"), ("Viborg", "8800"), ("Svendborg", "5700"), ("Hjørring", "9800"),
         ("Roskilde", "4000"), ("Horsens", "8700"), ("Skive", "7800"), ("Sønderborg", "6400")]
PLACES = ["Åparken", "Bakkehuset", "Skovly", "Engvang", "Søhøj", "Kærholm", "Nørremark", "Vestervang", "Østerby",
          "Lindegården", "Bøgely", "Egebjerg", "Fjordvang", "Møllebakken", "Højvang", "Rosenhaven", "Solsikken",
          "Mælkebøtten", "Kastanjen", "Ådalen", "Strandgården", "Tårnborg", "Lyngbakken", "Grønnegården",
          "Æblehaven", "Birkely", "Munkevænget", "Kongsbjerg", "Brændkjær", "Hvidkilde", "Ørnereden", "Toftegården"]
STREETS = ["Skolevej", "Kirkegade", "Nørregade", "Søndergade", "Vestergade", "Østergade", "Bakkevej", "Skovvej",
           "Engvej", "Møllevej", "Åboulevarden", "Industrivej", "Parkvej", "Stationsvej", "Torvet", "Havnegade"]
GIVEN = ["Anne", "Mette", "Hanne", "Kirsten", "Lone", "Ida", "Birgitte", "Karen", "Freja", "Åse", "Sofie", "Emma",
         "Louise", "Camilla", "Signe", "Maja", "Julie", "Line", "Tove", "Pia", "Susanne", "Marianne", "Helle",
         "Inger", "Lene", "Charlotte", "Maria", "Nanna", "Astrid", "Søs", "Søren", "Lars", "Jens", "Peter",
         "Mads", "Niels", "Ole", "Rasmus", "Jørgen", "Frederik", "Mikkel", "Thomas", "Henrik", "Bjørn", "Anders",
         "Kasper", "Christian", "Morten", "Kim", "Erik", "Michael", "Martin", "Jesper", "Torben", "Poul", "Bent",
         "Carsten", "Allan", "Jakob", "Emil", "Oliver", "William", "Noah", "Asger", "Øjvind", "Svend"]
SURNAMES = ["Nielsen", "Jensen", "Hansen", "Pedersen", "Andersen", "Christensen", "Larsen", "Sørensen",
            "Rasmussen", "Jørgensen", "Petersen", "Madsen", "Kristensen", "Olsen", "Thomsen", "Christiansen",
            "Poulsen", "Johansen", "Møller", "Mortensen", "Østergaard", "Mølgaard", "Kjær", "Bæk", "Nørgaard",
            "Ågesen", "Holm", "Lund", "Dahl", "Friis", "Bach", "Skov", "Brandt", "Winther", "Lauridsen",
            "Svendsen", "Frandsen", "Bruun", "Kofoed", "Damgaard", "Vestergaard", "Ærenlund", "Søgaard", "Bech"]

# administration → [(area, category)]
ADMINISTRATIONS: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("Borgmesterens Afdeling", "BA", [("HR og Personale", "admin"), ("Økonomi og Løn", "admin"),
                                      ("Digitalisering og IT", "it"), ("Kommunikation", "admin"),
                                      ("Jura og Sekretariat", "admin")]),
    ("Børn og Uddannelse", "BU", [("Skoleområdet", "school"), ("Dagtilbudsområdet", "daycare"),
                                  ("PPR og Sundhedspleje", "social"), ("Ungdomsskolen", "school")]),
    ("Social og Sundhed", "SS", [("Ældreområdet", "eldercare"), ("Hjemmeplejen", "homecare"),
                                 ("Handicap og Psykiatri", "social"), ("Sundhed og Forebyggelse", "eldercare")]),
    ("Teknik og Miljø", "TM", [("Vej og Park", "technical"), ("Byggeri og Plan", "admin"),
                               ("Natur og Miljø", "technical"), ("Forsyning og Beredskab", "technical")]),
    ("Arbejdsmarked", "AM", [("Jobcenter", "jobcentre"), ("Ydelsescenter", "jobcentre"),
                             ("Integration", "jobcentre")]),
    ("Kultur og Fritid", "KF", [("Biblioteker", "culture"), ("Idræt og Haller", "culture"),
                                ("Musikskolen", "culture")]),
]
INSTITUTION = {
    "school": ["{p}skolen", "{p} Skole"], "daycare": ["Børnehuset {p}", "Vuggestuen {p}", "Dagplejen {p}"],
    "eldercare": ["Plejecenter {p}", "Aktivitetscenter {p}"], "homecare": ["Hjemmepleje {p}"],
    "jobcentre": ["Team {p}", "Ungeindsats {p}"], "admin": ["Kontor {p}", "Sekretariat {p}"],
    "it": ["IT-drift {p}", "Systemteam {p}"], "technical": ["Driftsgården {p}", "Vejteam {p}"],
    "culture": ["{p} Bibliotek", "Hallen {p}"], "social": ["Bostedet {p}", "Botilbud {p}"],
}
SUBUNIT = {
    "school": ["Indskoling", "Mellemtrin", "Udskoling", "SFO", "Administration", "Specialklasser"],
    "daycare": ["Stuegruppe Sommerfuglen", "Stuegruppe Mariehønen", "Køkken", "Vuggestuegruppe"],
    "eldercare": ["Afsnit A", "Afsnit B", "Køkken", "Aftenvagt", "Nattevagt", "Træning"],
    "homecare": ["Dagvagt", "Aftenvagt", "Nattevagt", "Sygepleje"],
}
SUBUNIT_ANY = ["Team Nord", "Team Syd", "Team Øst", "Team Vest", "Administration", "Udvikling", "Drift", "Gruppe 1",
               "Gruppe 2"]
JOBS = {
    "school": [("laerer", 8), ("paedagog", 3), ("skoleleder", 1), ("fuldmaegtig", 1)],
    "daycare": [("paedagog", 6), ("paedagogmedhjaelper", 5), ("leder", 1)],
    "eldercare": [("sosu_hjaelper", 5), ("sosu_assistent", 5), ("sygeplejerske", 2), ("leder", 1)],
    "homecare": [("sosu_hjaelper", 6), ("sosu_assistent", 4), ("sygeplejerske", 2)],
    "jobcentre": [("sagsbehandler", 6), ("socialraadgiver", 3), ("konsulent", 2)],
    "social": [("socialraadgiver", 4), ("paedagog", 4), ("konsulent", 1)],
    "admin": [("konsulent", 4), ("specialkonsulent", 2), ("fuldmaegtig", 4), ("chef", 1)],
    "it": [("it_medarbejder", 6), ("konsulent", 2)],
    "technical": [("ingenioer", 3), ("fuldmaegtig", 2), ("konsulent", 2)],
    "culture": [("konsulent", 2), ("fuldmaegtig", 3), ("paedagog", 1)],
}
ENGAGEMENT_TYPES = [("ansat", 85), ("timeloennet", 6), ("vikar", 5), ("elev", 2), ("fleksjob", 2)]
LEAVE_TYPES = [("barsel", 5), ("foraeldreorlov", 2), ("uddannelse", 1), ("tjenestefri", 1), ("sygdom", 1)]
ASSOCIATION_TYPES = [("tillidsrepraesentant", 4), ("arbejdsmiljoerepraesentant", 4), ("med_medlem", 3),
                     ("ekstern_konsulent", 1)]
#: (user_key, name, username rule, offboarding, grace days): systems a Danish municipality runs
IT_SYSTEMS = [
    ("AD", "Active Directory", "{given:3}{surname:3}", "disable", 30), ("O365", "Microsoft 365", "{given}.{surname}",
                                                                       "disable", 30),
    ("OPUS", "KMD Opus Løn", "{user_key}", "disable", 0), ("SDLOEN", "SD-Løn", "{user_key}", "disable", 0),
    ("SBSYS", "SBSYS ESDH", "{initials}", "disable", 14), ("ACADRE", "Acadre ESDH", "{initials}", "disable", 14),
    ("NEXUS", "KMD Nexus", "{given:2}{surname:2}", "disable", 7),
    ("CURA", "Cura", "{given:2}{surname:2}", "disable", 7),
    ("AULA", "Aula", "{given:4}{surname:1}", "delete", 60), ("UNILOGIN", "STIL Unilogin", "{given:4}{surname:4}",
                                                              "delete", 60),
    ("KY", "KMD Ydelsesrefusion", "{initials}", "disable", 0), ("MOMENTUM", "Momentum", "{initials}", "disable", 0),
    ("FASIT", "Schultz Fasit", "{initials}", "disable", 0), ("SENSUM", "EG Sensum Bosted", "{given:3}{surname:3}",
                                                            "disable", 7),
    ("COLUMNA", "Columna Cura", "{given:3}{surname:3}", "disable", 7), ("DUBU", "DUBU", "{initials}", "disable", 0),
    ("TABULEX", "Tabulex", "{given:3}{surname:3}", "delete", 30), ("EASYIQ", "EasyIQ", "{given:3}{surname:3}",
                                                                  "delete", 30),
    ("PRISME", "Fujitsu Prisme", "{user_key}", "disable", 0), ("OPUSOEK", "KMD Opus Økonomi", "{user_key}",
                                                               "disable", 0),
    ("INDFAKT", "Indfak", "{user_key}", "disable", 0), ("RSD", "Rollebaseret Indgang", "{user_key}", "disable", 0),
    ("KOMBIT", "KOMBIT Støttesystemer", "{user_key}", "disable", 0), ("SAPA", "SAPA", "{user_key}", "disable", 0),
    ("DPR", "Digital Pladsanvisning", "{initials}", "disable", 0), ("NOVAX", "Novax Tandpleje", "{initials}",
                                                                    "disable", 0),
    ("GIS", "MapInfo GIS", "{given:3}{surname:3}", "disable", 0), ("BBR", "BBR-ajourføring", "{initials}",
                                                                 "disable", 0),
    ("TOPDESK", "TOPdesk", "{given}.{surname}", "disable", 30), ("SYSTEMATIC", "Systematic Columna Ressource",
                                                                 "{initials}", "disable", 0),
    ("PLANDAG", "Planner dagtilbud", "{given:3}{surname:3}", "delete", 30), ("MEEBOOK", "Meebook",
                                                                               "{given:4}{surname:4}", "delete", 60),
    ("BIBLIO", "Cicero Bibliotek", "{given:3}{surname:3}", "disable", 0), ("BOOKING", "Booking af lokaler",
                                                                          "{given}.{surname}", "delete", 30),
    ("VAGTPLAN", "Vagtplan", "{initials}", "disable", 0), ("KITOS", "KITOS", "{given}.{surname}", "disable", 0),
    ("OS2MO", "OS2mo", "{user_key}", "disable", 0), ("OS2REP", "OS2rollekatalog", "{user_key}", "disable", 0),
    ("VPN", "VPN-adgang", "{given:3}{surname:3}", "disable", 0), ("PRINT", "Udskrivning og scanning",
                                                                 "{given:3}{surname:3}", "delete", 0),
]
ROLE_NAMES = ["Læseadgang", "Sagsbehandler", "Superbruger", "Administrator", "Leder", "Attestant", "Godkender",
              "Registrering", "Rapporter", "Support"]
SENSITIVE_ROLES = {"Administrator", "Attestant"}
GROUP_NAMES = ["Grundpakke", "Sagsbehandling", "Ledelse", "Økonomi", "Udvidet"]

MANAGER_BY_DEPTH = [("direktoer", "niveau1"), ("direktoer", "niveau1"), ("chef", "niveau2"), ("leder", "niveau3")]

GENERATED = "generated"


def _o(kind: str, n: int) -> Origin:
    """The origin a generated record will have in its CSV file (header is line 1)."""
    return Origin(f"{kind}.csv", n + 2)


def _ascii(text: str) -> str:
    for a, b in (("æ", "ae"), ("ø", "oe"), ("å", "aa"), ("Æ", "Ae"), ("Ø", "Oe"), ("Å", "Aa"), (" ", "")):
        text = text.replace(a, b)
    return "".join(c for c in text.lower() if c.isalnum() or c in ".-")


def _weighted(rng: random.Random, options: list[tuple[str, int]]) -> str:
    return rng.choices([o for o, _ in options], weights=[max(w, 0) for _, w in options])[0]


@dataclass
class _U:
    """A unit while the tree grows."""

    unit: Unit
    depth: int
    category: str


def generate(size: Size | str, seed: int = 1) -> Export:
    """A municipality of ``size`` (a preset name or a ``Size``); the same seed, the same export."""
    size = PRESETS[size] if isinstance(size, str) else size
    rng = random.Random(seed)
    town, postcode = TOWNS[seed % len(TOWNS)]
    domain = f"{_ascii(town)}.dk"
    units: list[_U] = []

    def add(name: str, parent: _U | None, category: str, unit_type: str, level: str) -> _U:
        n = len(units)
        key = "ENH" if parent is None else f"ENH{n:05d}"
        start = FOUNDED if parent is None or parent.depth < 1 else max(
            parent.unit.validity.from_, FOUNDED + timedelta(days=rng.choice([0, 0, 0, 365, 1200, 2500, 4000])))
        address = phone = None
        if parent is None or (parent.depth >= 1 and rng.random() < 0.5):
            address = f"{rng.choice(STREETS)} {rng.randint(1, 120)}, {postcode} {town}"
            phone = f"7{rng.randint(0, 9999999):07d}"
        u = Unit(key, Period(start), _o("units", n), name=name, unit_type=unit_type,
                 parent=parent.unit.key if parent else None, unit_level=level,
                 email=f"{_ascii(key)}@{domain}", phone=phone, address=address)
        units.append(_U(u, 0 if parent is None else parent.depth + 1, category))
        return units[-1]

    root = add(f"{town} Kommune", None, "admin", "forvaltning", "kommune")
    for name, _code, areas in ADMINISTRATIONS:
        if len(units) >= size.units:
            break
        adm = add(name, root, "admin", "forvaltning", "forvaltning")
        for area_name, category in areas:
            if len(units) >= size.units:
                break
            add(area_name, adm, category, "center", "center")
    area_units = [u for u in units if u.depth == 2]
    rest = size.units - len(units)
    institutions = round(rest * 0.45)
    for _ in range(institutions):
        host = rng.choice(area_units)
        pattern = rng.choice(INSTITUTION[host.category])
        kind = {"school": "skole", "daycare": "dagtilbud", "eldercare": "institution",
                "social": "institution"}.get(host.category, "afdeling")
        add(pattern.format(p=rng.choice(PLACES)), host, host.category, kind, "afdeling")
    deepest = size.levels - 1
    while len(units) < size.units:
        eligible = [u for u in units[-400:] if 3 <= u.depth < deepest] if rng.random() < 0.5 else []
        pool = eligible or [u for u in units if 3 <= u.depth < deepest] or [u for u in units if u.depth < deepest]
        parent = rng.choice(pool)
        names = SUBUNIT.get(parent.category, SUBUNIT_ANY) if parent.depth == 3 else SUBUNIT_ANY
        add(rng.choice(names), parent, parent.category, "team", "team")

    export = Export(units=[u.unit for u in units])

    # People: unique CPR numbers (birth date + serial), born 1958-2004.
    used: set[str] = set()
    people: list[Person] = []
    for n in range(size.people):
        given, surname = rng.choice(GIVEN), rng.choice(SURNAMES)
        while True:
            birth = date(1958, 1, 1) + timedelta(days=rng.randint(0, 46 * 365))
            serial = rng.randint(0, 3999) if birth.year < 2000 else rng.randint(4000, 9999)
            cpr = f"{birth:%d%m%y}{serial:04d}"
            if cpr not in used:
                used.add(cpr)
                break
        people.append(Person(f"P{n + 1:06d}", Period(birth), _o("persons", n), given_name=given, surname=surname,
                             cpr=cpr, email=f"{_ascii(given)}.{_ascii(surname)}{n + 1}@{domain}",
                             phone=f"{rng.choice([2, 3, 4, 5, 6])}{rng.randint(0, 9999999):07d}"))
    export.persons = people

    # Engagements: one primary each, the rest second jobs; mostly in institutions and teams.
    placeable = [u for u in units if u.depth >= 1]
    cum: list[float] = list(itertools.accumulate(1 if u.depth <= 2 else 8 for u in placeable))
    holders = list(range(size.people)) + [rng.randrange(size.people) for _ in range(size.engagements - size.people)]
    by_unit: dict[str, list[Engagement]] = {}
    primary_seen: set[int] = set()
    engagements: list[Engagement] = []
    for n, who in enumerate(holders[: size.engagements]):
        person = people[who]
        u = rng.choices(placeable, cum_weights=cum)[0]
        adult = person.validity.from_ + timedelta(days=18 * 366)
        earliest = max(u.unit.validity.from_, adult)
        span = max((date(2026, 6, 1) - earliest).days, 1)
        start = FUTURE if rng.random() < 0.01 else earliest + timedelta(days=rng.randint(0, span))
        etype = _weighted(rng, ENGAGEMENT_TYPES)
        end = start + timedelta(days=rng.randint(400, 900)) if etype == "vikar" and start >= date(2026, 1, 1) else None
        end = end if end is None or end > FUTURE else None
        e = Engagement(f"E{n + 1:06d}", Period(start, end), _o("engagements", n), person=person.key, unit=u.unit.key,
                       job_function=_weighted(rng, JOBS[u.category]), engagement_type=etype,
                       primary=who not in primary_seen, fraction=rng.choice([1.0, 1.0, 1.0, 0.8, 0.75, 0.5, 0.32]))
        primary_seen.add(who)
        engagements.append(e)
        by_unit.setdefault(u.unit.key, []).append(e)
    export.engagements = engagements

    # Managers on most units: someone employed there (the earliest hire), else the position is vacant.
    managers: list[Manager] = []
    for u in units:
        if rng.random() >= size.manager_share:
            continue
        staff = sorted((e for e in by_unit.get(u.unit.key, []) if e.validity.from_ < FUTURE and e.validity.to is None),
                       key=lambda e: e.validity.from_)
        head = staff[0] if staff and rng.random() >= size.vacant_share else None
        start = head.validity.from_ if head else u.unit.validity.from_
        mtype, level = MANAGER_BY_DEPTH[min(u.depth, 3)] if u.depth < 4 else ("teamleder", "niveau4")
        responsibilities = ("budget", "personale") if u.depth < 4 else ("arbejdsmiljoe", "personale")
        managers.append(Manager(f"M-{u.unit.key}", Period(start), _o("managers", len(managers)), unit=u.unit.key,
                                manager_type=mtype, manager_level=level,
                                person=head.person if head else None, responsibilities=responsibilities))
    export.managers = managers

    # Leaves: some open engagements that began before 2026 have a leave from 2026 into 2027.
    leaves: list[Leave] = []
    for e in engagements:
        if e.validity.to is None and e.validity.from_ < date(2026, 1, 1) and rng.random() < size.leave_share:
            start = date(2026, 2, 1) + timedelta(days=rng.randint(0, 270))
            leaves.append(Leave(f"L{len(leaves) + 1:06d}", Period(start, start + timedelta(days=rng.randint(90, 365))),
                                _o("leaves", len(leaves)), person=e.person, engagement=e.key,
                                leave_type=_weighted(rng, LEAVE_TYPES)))
    export.leaves = leaves
    _associations(export, size, rng, engagements)
    _catalogue(export, size, rng, units)
    return export


TRADE_UNIONS = ["hk", "foa", "bupl", "dlf", "dsr", "dm"]  # the seeded trade_union classes


def _associations(export: Export, size: Size, rng: random.Random, engagements: list[Engagement]) -> None:
    """Representatives and MED members: people tied to the unit they work in, from a day of their engagement."""
    open_ = [e for e in engagements if e.validity.to is None and e.validity.from_ < date(2026, 1, 1)]
    for n, e in enumerate(rng.sample(open_, min(size.associations, len(open_)))):
        start = e.validity.from_ + timedelta(days=rng.randint(0, max((date(2026, 1, 1) - e.validity.from_).days, 1)))
        kind = _weighted(rng, ASSOCIATION_TYPES)
        union = rng.choice(TRADE_UNIONS) if kind == "tillidsrepraesentant" else None  # a union's representative
        export.associations.append(Association(f"A{n + 1:06d}", Period(start), _o("associations", n), person=e.person,
                                               unit=e.unit, association_type=kind, trade_union=union))


def _catalogue(export: Export, size: Size, rng: random.Random, units: list[_U]) -> None:
    """IT systems, their roles and role groups, and the roles (or groups) assigned to units (with or without the
    subtree) and job functions.

    The groups' roles are drawn last, so every other record is the same as it would be without groups.
    """
    systems = [ITSystem(key, Period(FOUNDED), _o("it_systems", n), name=name, username_rule=rule,
                        offboarding=offboarding, grace_days=grace)
               for n, (key, name, rule, offboarding, grace) in enumerate(rng.sample(IT_SYSTEMS, size.it_systems))]
    export.it_systems = systems
    roles: list[Role] = []
    for n in range(size.roles if systems else 0):
        system = systems[n % len(systems)]
        base = ROLE_NAMES[(n // len(systems)) % len(ROLE_NAMES)]
        round_ = n // (len(systems) * len(ROLE_NAMES))
        name = base if round_ == 0 else f"{base} {round_ + 1}"
        roles.append(Role(f"{system.key}-{n // len(systems) + 1:02d}", Period(FOUNDED), _o("roles", n),
                          it_system=system.key, name=name, description=f"{name} i {system.name}",
                          sensitive=base in SENSITIVE_ROLES))
    export.roles = roles
    groups = size.role_groups if roles else 0
    areas = [u for u in units if 1 <= u.depth <= 3]
    for n in range(size.assignments if roles and areas else 0):
        group = f"G{(n // 10) % groups + 1:04d}" if groups and n % 10 == 5 else None  # one in ten: a role group
        role = None if group else roles[n % len(roles)].key
        where = rng.choice(areas)
        start = max(where.unit.validity.from_, date(2020, 1, 1) + timedelta(days=rng.randint(0, 2000)))
        if rng.random() < 0.5:  # a unit (and, mostly, everything below it)
            a = Assignment(f"T{n + 1:05d}", Period(start), _o("assignments", n), role=role, role_group=group,
                           unit=where.unit.key, inherit=rng.random() < 0.7)
        else:  # a job function within an area; now and then everywhere
            job = _weighted(rng, JOBS[where.category])
            everywhere = rng.random() < 0.1
            a = Assignment(f"T{n + 1:05d}", Period(start if not everywhere else date(2020, 1, 1)),
                           _o("assignments", n), role=role, role_group=group, job_function=job,
                           unit=None if everywhere else where.unit.key)
        export.assignments.append(a)
    with_roles = [s for s in systems if any(r.it_system == s.key for r in roles)]
    for g in range(groups):
        system = with_roles[g % len(with_roles)]
        own = [r.key for r in roles if r.it_system == system.key]
        picked = tuple(sorted(rng.sample(own, min(len(own), rng.randint(2, 5)))))
        name = f"{system.name}: {GROUP_NAMES[(g // len(with_roles)) % len(GROUP_NAMES)]}"
        round_ = g // (len(with_roles) * len(GROUP_NAMES))
        export.role_groups.append(RoleGroup(f"G{g + 1:04d}", Period(FOUNDED), _o("role_groups", g),
                                            name=name if round_ == 0 else f"{name} {round_ + 1}", roles=picked))


def mutate(export: Export, *, seed: int, day: date, moves: int = 0, leavers: int = 0, hires: int = 0) -> Export:
    """The next export: ``moves`` engagements to another unit, ``leavers`` ending on ``day``, ``hires`` from ``day``.

    Only engagements that hold on ``day``, are open-ended and have no leave are touched, each once.
    """
    rng = random.Random(seed)
    with_leave = {lv.engagement for lv in export.leaves}
    candidates = [i for i, e in enumerate(export.engagements)
                  if e.validity.from_ < day and e.validity.to is None and e.key not in with_leave]
    picked = rng.sample(candidates, moves + leavers)
    placeable = [u for u in export.units if u.parent is not None and u.validity.holds(day)]
    engagements = list(export.engagements)
    for i in picked[:moves]:
        e = engagements[i]
        target = rng.choice([u for u in placeable if u.key != e.unit])
        engagements[i] = replace(e, unit=target.key)
    for i in picked[moves:]:
        e = engagements[i]
        engagements[i] = replace(e, validity=Period(e.validity.from_, day))
    persons = list(export.persons)
    taken = {p.cpr for p in persons if p.cpr}
    for h in range(hires):
        n = len(persons)
        while True:
            birth = date(1990, 1, 1) + timedelta(days=rng.randint(0, 3000))
            cpr = f"{birth:%d%m%y}{rng.randint(0, 3999):04d}"
            if cpr not in taken:
                taken.add(cpr)
                break
        person = Person(f"P9{n + 1:05d}", Period(birth), _o("persons", n), given_name=rng.choice(GIVEN),
                        surname=rng.choice(SURNAMES), cpr=cpr)
        persons.append(person)
        unit = rng.choice(placeable)
        engagements.append(Engagement(f"E9{h + 1:05d}", Period(day), _o("engagements", len(engagements)),
                                      person=person.key, unit=unit.key, job_function="konsulent",
                                      engagement_type="ansat", primary=True, fraction=1.0))
    return Export(units=list(export.units), persons=persons, engagements=engagements,
                  managers=list(export.managers), associations=list(export.associations),
                  leaves=list(export.leaves), it_systems=list(export.it_systems), roles=list(export.roles),
                  role_groups=list(export.role_groups), assignments=list(export.assignments))
