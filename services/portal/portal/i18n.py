"""Danish and English text: one catalogue, Danish first (the users are Danish public bodies).

``?lang=en`` (or ``da``) switches and is remembered in a cookie. A key missing from a language falls
back to Danish, then to the key itself, so a missing translation shows up as readable, not as a crash.
"""

from __future__ import annotations

from collections.abc import Callable

LANGUAGES = ("da", "en")

CATALOGUE: dict[str, tuple[str, str]] = {
    # key: (Danish, English)
    "app": ("Orgdir", "Orgdir"),
    "tagline": ("Organisationen", "The organisation"),
    "nav.tree": ("Organisation", "Organisation"),
    "nav.search_people": ("Personer", "People"),
    "signin": ("Log ind", "Sign in"),
    "signout": ("Log ud", "Sign out"),
    "signin.dev_intro": (
        "Lokal drift: vælg en af udviklingsnøglerne. Portalen kalder API'erne med den valgte nøgle.",
        "Local mode: choose one of the development tokens. The portal calls the APIs with it.",
    ),
    "signin.oidc_later": (
        "Log ind med OIDC (authorization code med PKCE) er ikke slået til endnu.",
        "Sign-in with OIDC (authorization code with PKCE) is not available yet.",
    ),
    "signin.token": ("Nøgle", "Token"),
    "signin.roles": ("Roller", "Roles"),
    "signed_in_as": ("Logget ind som", "Signed in as"),
    "date": ("Dato", "Date"),
    "show": ("Vis", "Show"),
    "today": ("I dag", "Today"),
    "viewing_date": ("Viser organisationen pr.", "Showing the organisation as of"),
    "future_view": ("fremtidig dato", "future date"),
    "past_view": ("tidligere dato", "past date"),
    "tree.title": ("Organisationen", "The organisation"),
    "tree.search": ("Søg enhed", "Find a unit"),
    "tree.search_hint": (
        "Skriv en del af navnet (æ/ae, ø/oe, å/aa er det samme)", "Type part of the name (æ/ae, ø/oe, å/aa match)"
    ),
    "tree.units": ("enheder", "units"),
    "tree.no_match": ("Ingen enheder matcher", "No unit matches"),
    "tree.empty": ("Ingen enheder på denne dato.", "No units on this date."),
    "tree.new_root": ("Opret enhed", "Create unit"),
    "unit": ("Enhed", "Unit"),
    "unit.details": ("Stamdata", "Details"),
    "unit.user_key": ("Kort navn", "User key"),
    "unit.type": ("Enhedstype", "Unit type"),
    "unit.level": ("Niveau", "Level"),
    "unit.validity": ("Gyldighed", "Validity"),
    "unit.addresses": ("Adresser", "Addresses"),
    "unit.path": ("Placering", "Path"),
    "unit.root": ("Rodenhed", "Root unit"),
    "unit.children": ("Underenheder", "Sub-units"),
    "unit.manager": ("Leder", "Manager"),
    "unit.no_manager": ("Ingen leder", "No manager"),
    "unit.inherited_from": ("nedarvet fra", "inherited from"),
    "unit.vacant": ("vakant", "vacant"),
    "unit.people": ("Ansatte", "People"),
    "unit.people_subtree": ("Medtag underenheder", "Include sub-units"),
    "unit.no_people": ("Ingen ansatte på denne dato.", "Nobody engaged on this date."),
    "unit.more_people": ("Flere", "More"),
    "unit.roles": ("Roller og rettigheder", "Roles and rights"),
    "unit.no_roles": ("Ingen roller.", "No roles."),
    "unit.not_active": ("Enheden findes ikke på denne dato.", "The unit does not exist on this date."),
    "unit.periods": ("Enheden findes i perioderne", "The unit exists in the periods"),
    "person": ("Person", "Person"),
    "person.name": ("Navn", "Name"),
    "person.cpr": ("CPR", "CPR"),
    "person.nickname": ("Kaldenavn", "Nickname"),
    "person.contact": ("Kontakt", "Contact"),
    "person.engagements": ("Engagementer", "Engagements"),
    "person.no_engagements": ("Ingen engagementer på denne dato.", "No engagements on this date."),
    "person.managers": ("Leder", "Manager"),
    "person.manager_roles": ("Lederroller", "Manager positions"),
    "person.associations": ("Tilknytninger", "Associations"),
    "person.leaves": ("Orlov", "Leaves"),
    "person.rights": ("Rettigheder", "Rights"),
    "person.no_rights": ("Ingen rettigheder på denne dato.", "No rights on this date."),
    "person.accounts": ("IT-konti", "IT accounts"),
    "person.no_accounts": ("Ingen IT-konti.", "No IT accounts."),
    "person.history": ("Historik", "History"),
    "person.not_active": ("Personen findes ikke på denne dato.", "The person does not exist on this date."),
    "person.search": ("Find person", "Find a person"),
    "col.name": ("Navn", "Name"),
    "col.unit": ("Enhed", "Unit"),
    "col.job_function": ("Stilling", "Job function"),
    "col.engagement_type": ("Ansættelsestype", "Engagement type"),
    "col.primary": ("Primær", "Primary"),
    "col.fraction": ("Brøk", "Fraction"),
    "col.from": ("Fra", "From"),
    "col.to": ("Til (første dag uden)", "To (first day without)"),
    "col.last_day": ("Sidste dag", "Last day"),
    "col.role": ("Rolle", "Role"),
    "col.it_system": ("IT-system", "IT system"),
    "col.reason": ("Begrundelse", "Reason"),
    "col.applies_to": ("Gælder", "Applies to"),
    "col.username": ("Brugernavn", "Username"),
    "col.status": ("Status", "Status"),
    "col.version": ("Version", "Version"),
    "col.registered_at": ("Registreret", "Registered"),
    "col.registered_by": ("Af", "By"),
    "col.event": ("Hændelse", "Event"),
    "col.type": ("Type", "Type"),
    "col.value": ("Værdi", "Value"),
    "open_ended": ("uendelig", "open-ended"),
    "yes": ("ja", "yes"),
    "no": ("nej", "no"),
    "future": ("fremtidig", "future"),
    "inherited": ("nedarvet", "inherited"),
    "reason.unit": ("via enhed", "via unit"),
    "reason.assigned_at": ("tildelt på", "assigned at"),
    "reason.subtree": ("med underenheder", "with sub-units"),
    "reason.role_group": ("rollegruppe", "role group"),
    "reason.person": ("tildelt direkte", "assigned directly"),
    "reason.job_function": ("via stilling", "via job function"),
    "applies.members": ("ansatte i enheden", "people of the unit"),
    "applies.subtree": ("og underenheder", "and sub-units"),
    "applies.job_function": ("med stillingen", "with the job function"),
    "actions": ("Handlinger", "Actions"),
    "action.create_child": ("Opret underenhed", "Create sub-unit"),
    "action.create_unit": ("Opret enhed", "Create unit"),
    "action.move": ("Flyt enhed", "Move unit"),
    "action.terminate": ("Afslut enhed", "End unit"),
    "action.hire": ("Ansæt person", "Hire a person"),
    "form.save": ("Gem", "Save"),
    "form.cancel": ("Annuller", "Cancel"),
    "form.name": ("Navn", "Name"),
    "form.user_key": ("Kort navn (unik)", "User key (unique)"),
    "form.unit_type": ("Enhedstype", "Unit type"),
    "form.parent": ("Overenhed", "Parent unit"),
    "form.new_parent": ("Ny overenhed", "New parent unit"),
    "form.no_parent": ("Ingen (rodenhed)", "None (a root unit)"),
    "form.pick_unit": ("Søg efter enhed", "Search for a unit"),
    "form.pick_person": ("Søg efter person", "Search for a person"),
    "form.person": ("Person", "Person"),
    "form.from": ("Gælder fra", "Valid from"),
    "form.to_terminate": ("Første dag enheden ikke findes", "First day the unit no longer exists"),
    "form.job_function": ("Stilling", "Job function"),
    "form.engagement_type": ("Ansættelsestype", "Engagement type"),
    "form.primary": ("Primært engagement", "Primary engagement"),
    "form.choose": ("Vælg …", "Choose …"),
    "form.error": ("Intet blev gemt:", "Nothing was saved:"),
    "form.see_field": ("se beskeden ved feltet.", "see the message at the field."),
    "form.none_found": ("Ingen fundet", "None found"),
    "form.required": ("Skal udfyldes.", "Required."),
    "saved": ("Gemt.", "Saved."),
    "effective_from": ("Ændringen gælder fra", "The change holds from"),
    "error.title": ("Noget gik galt", "Something went wrong"),
    "error.not_found": ("Ikke fundet", "Not found"),
    "error.forbidden": ("Din nøgle giver ikke adgang til dette.", "Your token does not allow this."),
    "error.unavailable": ("En tjeneste svarer ikke lige nu.", "A service does not answer right now."),
    "back_to_tree": ("Til organisationen", "To the organisation"),
    "language": ("Sprog", "Language"),
    "lang.other": ("English", "Dansk"),
}


def pick_language(query: str | None, cookie: str | None, default: str) -> str:
    for candidate in (query, cookie):
        if candidate in LANGUAGES:
            return candidate
    return default


def translator(lang: str) -> Callable[[str], str]:
    index = LANGUAGES.index(lang) if lang in LANGUAGES else 0

    def t(key: str) -> str:
        entry = CATALOGUE.get(key)
        if entry is None:
            return key
        return entry[index] or entry[0]

    return t
