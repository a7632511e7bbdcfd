"""Overview, manager resolution, effective events, CPR masking, audit, search, projection."""

from __future__ import annotations

from datetime import date

from orgdir_tools.registry_support import World, problem_type, uid
from orgdir_tools.testkit import READER, SECRET_READER, EventCollector, RunningApp
from registry.app import create_app

NEXT_MONTH = date(2026, 4, 1)


async def test_future_engagement_in_overview_and_effective_on_the_day(world: World) -> None:
    http = world.http
    s = world.settings
    async with EventCollector(s.amqp_url, s.exchange, "engagement.*") as events:
        p = await world.person("Mette Frederiksen")
        e = await world.engagement(p, world.u["team"], primary=True, validity={"from": NEXT_MONTH.isoformat()})
        created = await events.wait_type("engagement.created", subject=e)
        assert created[0].data["timeline"][0]["validity"] == {"from": "2026-04-01", "to": None}
        assert created[0].data["person"] == p and created[0].data["unit"] == world.u["team"]

        today = (await http.get(f"/api/v1/persons/{p}/overview")).json()
        assert today["engagements"] == []
        then = (await http.get(f"/api/v1/persons/{p}/overview", params={"at": "2026-04-01"})).json()
        [eng] = then["engagements"]
        assert eng["uuid"] == e and eng["job_function"]["name"] == "Konsulent"
        assert [u["name"] for u in eng["unit"]["path"]] == [
            "Aarhus Kommune",
            "Borgerservice",
            "Afdeling for Løn",
            "Team Ørsted",
        ]

        assert await world.registry.run_due() == 0  # nothing due yet
        world.clock.set_day(NEXT_MONTH)
        assert await world.registry.run_due() == 1
        eff = await events.wait_type("engagement.effective", subject=e)
        assert eff[0].data["timeline"][0]["person"] == p and eff[0].sequence == 2
        assert await world.registry.run_due() == 0  # fires once
        now = (await http.get(f"/api/v1/persons/{p}/overview")).json()
        assert [x["uuid"] for x in now["engagements"]] == [e]


async def test_manager_resolved_through_two_vacant_levels(world: World) -> None:
    http = world.http
    c = world.c
    boss = await world.person("Bente Boss")
    worker = await world.person("Villy Worker")
    await world.engagement(boss, world.u["root"], job_function=c["leder"])
    await world.engagement(worker, world.u["team"])

    def mgr(unit: str, person: str | None) -> dict:
        return {
            "person": person,
            "unit": unit,
            "manager_type": c["direktoer"],
            "manager_level": c["niveau1"],
            "responsibilities": [c["personale"]],
            "validity": {"from": "2021-01-01"},
        }

    for body in (mgr(world.u["root"], boss), mgr(world.u["forv"], None), mgr(world.u["afd"], None)):
        r = await http.post("/api/v1/managers", json=body)
        assert r.status_code == 201, r.text
    # team has no manager at all; afd and forv are vacant -> root's manager
    r = await http.get(f"/api/v1/orgunits/{world.u['team']}/manager")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["inherited"] is True and body["manager_unit"]["uuid"] == world.u["root"]
    assert body["manager"]["person"]["uuid"] == boss
    assert body["manager"]["responsibilities"][0]["name"] == "Personaleansvar"

    ov = (await http.get(f"/api/v1/persons/{worker}/overview")).json()
    assert ov["managers"][0]["manager"]["person"]["name"] == "Bente Boss"
    # The boss's own manager: none above the root.
    boss_ov = (await http.get(f"/api/v1/persons/{boss}/overview")).json()
    assert boss_ov["managers"][0]["manager"] is None
    assert boss_ov["manager_roles"][0]["unit"]["uuid"] == world.u["root"]

    # Fill afd from a future date: before it, root's manager; from then, afd's.
    mid = await world.person("Mads Mellemleder")
    await world.engagement(mid, world.u["afd"])
    afd_mgr = (await http.get("/api/v1/managers", params={"unit": world.u["afd"]})).json()["items"][0]
    r = await http.patch(
        f"/api/v1/managers/{afd_mgr['uuid']}",
        json={"person": mid, "validity": {"from": "2026-05-01"}},
    )
    assert r.status_code == 200, r.text
    now = (await http.get(f"/api/v1/orgunits/{world.u['team']}/manager")).json()
    later = (await http.get(f"/api/v1/orgunits/{world.u['team']}/manager", params={"at": "2026-05-01"})).json()
    assert now["manager"]["person"]["uuid"] == boss
    assert later["manager"]["person"]["uuid"] == mid and later["manager_unit"]["uuid"] == world.u["afd"]
    # A manager's own manager is the one above their unit.
    mid_ov = (await http.get(f"/api/v1/persons/{mid}/overview", params={"at": "2026-05-01"})).json()
    assert mid_ov["managers"][0]["manager"]["person"]["uuid"] == boss

    none = await http.get(f"/api/v1/orgunits/{uid('nowhere')}/manager")
    assert none.status_code == 404 and problem_type(none) == "unknown-unit"


async def test_cpr_masked_never_in_events_and_reads_audited(world: World) -> None:
    http = world.http
    s = world.settings
    async with EventCollector(s.amqp_url, s.exchange, "person.*") as events:
        p = await world.person("Karen Blixen", cpr="170885-1234")
        [created] = await events.wait_type("person.created", subject=p)
        assert created.data["has_cpr"] is True and len(created.data["cpr_hash"]) == 64
        assert "cpr" not in created.data and "1708851234" not in created.model_dump_json()

    masked = (await http.get(f"/api/v1/persons/{p}", headers=READER)).json()
    # Neither digits nor the birth date (which narrows the number to ~10^4 guesses) without the roles.
    assert masked["cpr"] == "XXXXXX-XXXX" and masked["has_cpr"] is True
    for url in (f"/api/v1/persons/{p}/overview", f"/api/v1/persons/{p}/history", "/api/v1/persons"):
        text = (await http.get(url, headers=READER)).text
        assert "1234" not in text and "170885" not in text, url
    assert (await http.get("/api/v1/audit", headers=READER)).status_code == 403
    before = (await http.get("/api/v1/audit")).json()["items"]
    # Only the admin's own PUT response so far: the reader's reads are not audited.
    assert [a["endpoint"] for a in before] == ["PUT /api/v1/persons/{uuid}"]

    full = (await http.get(f"/api/v1/persons/{p}")).json()
    assert full["cpr"] == "170885-1234"
    ov = (await http.get(f"/api/v1/persons/{p}/overview")).json()
    assert ov["person"]["cpr"] == "170885-1234"
    other = await world.person("Hans Andersen")  # the PUT response is a read by the admin too
    audit = (await http.get("/api/v1/audit", params={"person": p})).json()["items"]
    assert [a["endpoint"] for a in audit] == [
        "PUT /api/v1/persons/{uuid}",
        "GET /api/v1/persons/{uuid}",
        "GET /api/v1/persons/{uuid}/overview",
    ]
    assert {a["actor"] for a in audit} == {"static:admin"} and all(a["person"] == p for a in audit)
    all_entries = (await http.get("/api/v1/audit", params={"limit": 1})).json()
    assert all_entries["next_cursor"] and len(all_entries["items"]) == 1
    assert any(a["person"] == other for a in (await http.get("/api/v1/audit")).json()["items"])


async def test_search_folds_danish_letters_and_follows_renames(world: World) -> None:
    http = world.http
    soren = await world.person(
        "Søren Ærø",
        nickname="Bøllen",
        addresses=[
            {"scope": "email", "value": "soeren.aeroe@aarhus.dk"},
            {"scope": "phone", "value": "+45 87 65 43 21"},
        ],
    )
    aarhus_unit = await world.feed.unit("Århus Bibliotek", world.u["root"])
    await world.feed.wait(world.registry)
    lise = await world.person("Lise Nørgaard")
    await world.engagement(lise, aarhus_unit)

    async def find(q: str) -> list[str]:
        r = await http.get("/api/v1/search", params={"q": q}, headers=READER)
        assert r.status_code == 200, r.text
        return [i["uuid"] for i in r.json()["items"]]

    for q in (
        "Soren",
        "søren",
        "SOEREN",
        "sør",
        "aero",
        "Ærø",
        "bollen",
        "soeren.aeroe@aarhus.dk",
        "87654321",
        "8765 4321",
        "søren ær",
    ):
        assert soren in await find(q), q
    for q in ("Aarhus bibliotek", "arhus", "Århus", "norgaard", "Noergaard", "lise aar"):
        assert lise in await find(q), q
    assert await find("xyzzy") == []
    assert lise not in await find("soren")

    # one fold (orgdir.text.fold) for index and query: every spelling finds both spellings of the name
    with_aa = await world.person("Jens Østergaard")
    with_a_ring = await world.person("Mette Østergård")
    for q in ("ostergaard", "østergård", "oestergaard", "Østergaard", "ØSTERGÅRD", "ostergard", "ostergå"):
        found = await find(q)
        assert with_aa in found and with_a_ring in found, q
    assert await find("jens ostergård") == [with_aa]

    renamed = {
        "validity": {"from": "2000-01-01", "to": None},
        "user_key": "aarhus-bibliotek",
        "name": "Dokk1",
        "parent": world.u["root"],
    }
    await world.feed.unit("Århus Bibliotek", timeline=[renamed], verb="updated")
    await world.feed.wait(world.registry)
    assert lise in await find("dokk1")
    assert lise not in await find("bibliotek")


async def test_projection_is_stale_safe_and_reloaded_at_startup(world: World) -> None:
    feed = world.feed
    name = "Projekt Enhed"
    u = uid(name)

    def slice_(n: str) -> list[dict]:
        return [
            {
                "validity": {"from": "2000-01-01", "to": None},
                "user_key": "p",
                "name": n,
                "parent": None,
            }
        ]

    await feed.unit(name, timeline=slice_("Version 2"), seq=2)
    await feed.wait(world.registry)
    await feed.unit(name, timeline=slice_("Version 1"), seq=1)  # late, stale
    await feed.unit(name, timeline=slice_("Sentinel"), seq=3)
    await feed.wait(world.registry)
    assert world.registry.directory.unit_name(u, date(2026, 1, 1)) == "Sentinel"
    await feed.unit(name, timeline=slice_("Old again"), seq=2)
    await feed.unit("Marker", seq=1)
    await feed.wait(world.registry)
    assert world.registry.directory.unit_name(u, date(2026, 1, 1)) == "Sentinel"
    doc = await world.registry.directory.units_projection.get(u)
    assert doc is not None and doc["sequence"] == 3

    p = await world.person("Ida Projekt")
    await world.engagement(p, u)
    # A second process on the same database starts with the projection and the people loaded.
    async with RunningApp(create_app(world.settings, world.clock)) as second:
        reg = second.app.state.registry
        assert reg.directory.unit_name(u, date(2026, 1, 1)) == "Sentinel"
        r = await second.http.get(f"/api/v1/orgunits/{u}/people")
        assert [i["person"]["uuid"] for i in r.json()["items"]] == [p]
        hits = await second.http.get("/api/v1/search", params={"q": "ida"})
        assert [i["uuid"] for i in hits.json()["items"]] == [p]


async def test_demo_loads_idempotently_into_the_projected_units(world: World) -> None:
    from orgdir_tools.demo import orgunits as ou_demo
    from orgdir_tools.demo import registry as demo

    # demo.load waits for the orgunits demo's units: publish them (as orgunits would) under the same UUIDs.
    names = list(ou_demo.UNITS)
    root = await world.feed.unit(names[0], uuid_=ou_demo.UNITS[names[0]], frm=date(2020, 1, 1))
    for n in names[1:]:
        await world.feed.unit(n, root, uuid_=ou_demo.UNITS[n], frm=date(2020, 1, 1))
    for facet, keys in (("visibility", ("offentlig", "intern", "hemmelig")), ("trade_union", ("hk", "foa"))):
        for key in keys:
            await world.feed.cls(facet, key, key.upper())
    await world.feed.cls("responsibility", "budget", "Budgetansvar")
    await world.feed.wait(world.registry)
    await demo.load(world.http, within=20)
    persons = (await world.http.get("/api/v1/persons", params={"limit": 100})).json()["items"]
    assert len(persons) == 40
    # Some people have a secret mobile number: the admin (read:secret) sees it, a reader does not.
    secret = (await world.http.get("/api/v1/persons", params={"limit": 100}, headers=SECRET_READER)).json()
    hidden = (await world.http.get("/api/v1/persons", params={"limit": 100}, headers=READER)).json()
    count = sum(len(p["addresses"]) for p in secret["items"]) - sum(len(p["addresses"]) for p in hidden["items"])
    assert count == 5
    versions = {p["uuid"]: p["version"] for p in persons}
    await demo.load(world.http, within=20)
    again = (await world.http.get("/api/v1/persons", params={"limit": 100})).json()["items"]
    assert {p["uuid"]: p["version"] for p in again} == versions
    engagements = (await world.http.get("/api/v1/engagements", params={"limit": 100})).json()["items"]
    assert len(engagements) == 40
    assert (await world.http.get("/api/v1/leaves", params={"at": "2026-12-01"})).status_code == 200
    assert len((await world.http.get("/api/v1/managers")).json()["items"]) == 5
    associations = (await world.http.get("/api/v1/associations")).json()["items"]
    assert len(associations) == 2 and all(a["substitute"] and a["trade_union"] for a in associations)
    managers = (await world.http.get("/api/v1/managers")).json()["items"]
    assert all(len(m["responsibilities"]) == 2 for m in managers)
