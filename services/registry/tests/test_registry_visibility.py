"""Address visibility (public, internal, secret) and association details, issue #17.

The pure rule first (``registry.domain`` over ``orgdir.visibility``), then
every read and write through the API against the real broker and database.
"""

from __future__ import annotations

from datetime import date

from orgdir.contracts.orgunits import ClassState
from orgdir.contracts.registry import AssociationSlice, ContactAddress, PersonSlice
from orgdir.validity import Validity
from orgdir_tools.registry_support import World, problem_type, uid
from orgdir_tools.testkit import ADMIN, READER, SECRET_READER, WRITER, EventCollector
from registry import domain

SECRET_PHONE = "+45 2233 4455"


def _cls(facet: str, user_key: str) -> ClassState:
    return ClassState.model_validate(
        {
            "uuid": uid(f"class:{facet}:{user_key}"),
            "version": 1,
            "facet": facet,
            "facet_uuid": uid(f"facet:{facet}"),
            "timeline": [{"validity": {"from": "2000-01-01"}, "user_key": user_key, "name": user_key}],
        }
    )


CLASSES = {
    c.uuid: c
    for c in (
        _cls("visibility", "offentlig"),
        _cls("visibility", "intern"),
        _cls("visibility", "hemmelig"),
        _cls("visibility", "fortrolig"),  # a class the rule does not know: counts as secret
        _cls("address_type", "hemmelig"),  # the right user_key of the wrong facet: not a visibility
    )
}
PUBLIC, INTERNAL, SECRET, UNKNOWN = (
    uid(f"class:visibility:{k}") for k in ("offentlig", "intern", "hemmelig", "fortrolig")
)
WRONG_FACET = uid("class:address_type:hemmelig")


def _person(*addresses: ContactAddress) -> PersonSlice:
    validity = Validity(from_=date(2020, 1, 1))
    return PersonSlice(validity=validity, given_name="A", surname="B", addresses=list(addresses))


def test_visibility_rule_on_models() -> None:
    pub = ContactAddress(scope="email", value="a@x.dk", visibility=PUBLIC)
    plain = ContactAddress(scope="email", value="b@x.dk")  # no class: internal
    internal = ContactAddress(scope="phone", value="1111", visibility=INTERNAL)
    secret = ContactAddress(scope="phone", value="2222", visibility=SECRET)
    unknown = ContactAddress(scope="phone", value="3333", visibility=UNKNOWN)
    wrong = ContactAddress(scope="phone", value="4444", visibility=WRONG_FACET)
    unprojected = ContactAddress(scope="phone", value="5555", visibility=uid("never-seen"))
    s = _person(pub, plain, internal, secret, unknown, wrong, unprojected)

    assert domain.visible_person(s, "public", CLASSES).addresses == [pub]
    assert domain.visible_person(s, "internal", CLASSES).addresses == [pub, plain, internal]
    assert domain.visible_person(s, "secret", CLASSES) is s  # everything: the slice itself
    assert domain.ceiling_of({"orgdir:read"}) == "internal"
    assert domain.ceiling_of({"orgdir:read", "orgdir:read:secret"}) == "secret"

    # A writer that cannot see the secret address replaces only what it sees; the stored secret stays.
    written = _person(ContactAddress(scope="email", value="new@x.dk"))
    kept = domain.keep_hidden(written, s, "internal", CLASSES)
    assert [a.value for a in kept.addresses] == ["new@x.dk", "2222", "3333", "4444", "5555"]
    assert domain.keep_hidden(_person(secret), s, "internal", CLASSES).addresses.count(secret) == 1  # no twin
    assert domain.keep_hidden(written, s, "secret", CLASSES).addresses == written.addresses
    assert domain.keep_hidden(written, None, "internal", CLASSES) is written


def test_substitute_rule() -> None:
    period = Validity(from_=date(2024, 1, 1))
    base = {"validity": period, "person": "p", "unit": "u", "association_type": "t"}
    alive = {"s": [_person().model_copy(update={"validity": Validity(from_=date(2020, 1, 1))})]}
    domain.check_substitute(alive, AssociationSlice.model_validate({**base, "substitute": "s"}), period)
    domain.check_substitute({}, AssociationSlice.model_validate(base), period)  # none: nothing to check
    for persons, sub, kind in (({}, "s", "unknown-person"), (alive, "p", "substitute-is-person")):
        try:
            domain.check_substitute(persons, AssociationSlice.model_validate({**base, "substitute": sub}), period)
        except Exception as exc:
            assert getattr(exc, "kind", None) == kind
        else:
            raise AssertionError(f"{kind} not raised")


async def _seed(world: World) -> dict[str, str]:
    f = world.feed
    c = {k: await f.cls("visibility", k, k.title()) for k in ("offentlig", "intern", "hemmelig")}
    c["telefon"] = await f.cls("address_type", "telefon", "Telefon")
    c["hk"] = await f.cls("trade_union", "hk", "HK Kommunal")
    await f.wait(world.registry)
    return c


async def test_secret_addresses_only_with_the_secret_role(world: World) -> None:
    c = await _seed(world)
    http = world.http
    p = uid("person:Hemmelig Hansen")
    addresses = [
        {"scope": "email", "value": "hh@kommune.dk", "visibility": c["offentlig"]},
        {"scope": "phone", "value": "+45 8940 1000"},
        {"scope": "phone", "value": SECRET_PHONE, "address_type": c["telefon"], "visibility": c["hemmelig"]},
    ]
    r = await http.put(f"/api/v1/persons/{p}", json=world.person_body("Hemmelig", "Hansen", addresses=addresses))
    assert r.status_code == 201, r.text
    assert SECRET_PHONE in r.text  # dev-admin holds every role, orgdir:read:secret among them

    def values(body: dict[str, object]) -> list[str]:
        return [a["value"] for a in body["addresses"]]  # type: ignore[index, union-attr]

    as_reader = await http.get(f"/api/v1/persons/{p}", headers=READER)
    assert values(as_reader.json()) == ["hh@kommune.dk", "+45 8940 1000"]
    as_secret = await http.get(f"/api/v1/persons/{p}", headers=SECRET_READER)
    assert values(as_secret.json())[-1] == SECRET_PHONE

    # Nowhere a reader looks: list, overview, history (every registration), search.
    for path, params in (
        ("/api/v1/persons", {}),
        (f"/api/v1/persons/{p}/overview", {}),
        (f"/api/v1/persons/{p}/history", {}),
        ("/api/v1/search", {"q": "Hemmelig"}),
    ):
        hidden = await http.get(path, params=params, headers=READER)
        shown = await http.get(path, params=params, headers=SECRET_READER)
        assert hidden.status_code == shown.status_code == 200, (path, hidden.text)
        assert SECRET_PHONE not in hidden.text and "+45 8940 1000" in hidden.text, path
        assert SECRET_PHONE in shown.text, path
    # A secret number is no search term: finding the person by it would tell it.
    for headers in (READER, SECRET_READER):
        found = (await http.get("/api/v1/search", params={"q": "22334455"}, headers=headers)).json()
        assert found["items"] == []
    assert (await http.get("/api/v1/search", params={"q": "89401000"}, headers=READER)).json()["items"]

    # A writer without the role reads the person and writes it back: the secret number stays.
    body = as_reader.json()
    back = {k: body[k] for k in ("given_name", "surname", "addresses")} | {"validity": {"from": "2020-01-01"}}
    back["addresses"] = [*back["addresses"], {"scope": "email", "value": "ny@kommune.dk"}]
    w = await http.put(f"/api/v1/persons/{p}", json=back, headers=WRITER)
    assert w.status_code == 200, w.text
    assert SECRET_PHONE not in w.text  # its answer (slice and timeline) shows what it may see
    patched = await http.patch(f"/api/v1/persons/{p}", json={"addresses": []}, headers=WRITER)
    assert patched.status_code == 200 and SECRET_PHONE not in patched.text
    stored = (await http.get(f"/api/v1/persons/{p}", headers=SECRET_READER)).json()
    assert values(stored) == [SECRET_PHONE]
    assert stored["addresses"][0]["visibility"] == c["hemmelig"]

    # The visibility must be a class of the visibility facet; a refused write changes nothing.
    bad = [{"scope": "phone", "value": "+45 1234 5678", "visibility": c["telefon"]}]
    r = await http.patch(f"/api/v1/persons/{p}", json={"addresses": bad})
    assert r.status_code == 422 and problem_type(r) == "class-wrong-facet", r.text
    assert r.json()["field"] == "addresses.visibility"
    assert (await http.get(f"/api/v1/persons/{p}", headers=ADMIN)).json()["version"] == stored["version"]


async def test_association_substitute_and_trade_union_and_manager_responsibilities(world: World) -> None:
    c = await _seed(world)
    http = world.http
    p, sub = await world.person("Tove Tillid"), await world.person("Svend Stedfortræder")
    late = uid("person:Sen Ankomst")
    later = world.person_body("Sen", "Ankomst", validity={"from": "2025-01-01"})
    r = await http.put(f"/api/v1/persons/{late}", json=later)
    assert r.status_code == 201, r.text
    body = {
        "person": p,
        "unit": world.u["afd"],
        "association_type": world.c["medlem"],
        "substitute": sub,
        "trade_union": c["hk"],
        "validity": {"from": "2024-01-01"},
    }
    async with EventCollector(world.settings.amqp_url, world.settings.exchange, "association.*") as events:
        r = await http.post("/api/v1/associations", json=body)
        assert r.status_code == 201, r.text
        a = r.json()["uuid"]
        assert r.json()["substitute"] == sub and r.json()["trade_union"] == c["hk"]
        (created,) = await events.wait_type("association.created", subject=a)
        assert created.data["timeline"][0]["substitute"] == sub
        assert created.data["timeline"][0]["trade_union"] == c["hk"]

    overview = (await http.get(f"/api/v1/persons/{p}/overview")).json()
    (assoc,) = overview["associations"]
    assert assoc["substitute"]["name"] == "Svend Stedfortræder"
    assert assoc["trade_union"] == {"uuid": c["hk"], "user_key": "hk", "name": "HK Kommunal"}

    for change, kind, field in (
        ({"substitute": uid("nobody")}, "unknown-person", "substitute"),
        ({"substitute": p}, "substitute-is-person", "substitute"),
        ({"substitute": late}, "person-not-active", "substitute"),  # exists only from 2025
        ({"trade_union": world.c["medlem"]}, "class-wrong-facet", "trade_union"),
        ({"trade_union": uid("no-class")}, "unknown-class", "trade_union"),
    ):
        r = await http.put(f"/api/v1/associations/{a}", json={**body, **change})
        assert r.status_code == 422 and problem_type(r) == kind, (change, r.text)
        assert r.json()["field"] == field
    assert (await http.get(f"/api/v1/associations/{a}")).json()["version"] == 1

    # Managers' responsibilities: classes of the responsibility facet, shown resolved.
    m = {
        "person": p,
        "unit": world.u["afd"],
        "manager_type": world.c["direktoer"],
        "manager_level": world.c["niveau1"],
        "responsibilities": [world.c["personale"]],
        "validity": {"from": "2024-01-01"},
    }
    r = await http.post("/api/v1/managers", json=m)
    assert r.status_code == 201 and r.json()["responsibilities"] == [world.c["personale"]], r.text
    wrong = await http.post("/api/v1/managers", json={**m, "responsibilities": [c["hk"]]})
    assert wrong.status_code == 422 and problem_type(wrong) == "class-wrong-facet"
    assert wrong.json()["field"] == "responsibilities"
    roles = (await http.get(f"/api/v1/persons/{p}/overview")).json()["manager_roles"]
    assert [x["name"] for x in roles[0]["responsibilities"]] == ["Personaleansvar"]
