"""The portal's pages over HTTP, against the four services running as processes (no browser here):
sign-in, what each token is offered, folded search, the unit and person pages on a day, and forms that
show the server's problem beside the field it names and write nothing."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import httpx
import pytest

from orgdir_tools.testkit import eventually
from orgdir_tools.testpeers import Receiver, new_secret
from orgunits.vocabulary import class_uuid, kle_uuid

from .conftest import ALWAYS, Stack, first_of_next_month, uid

PATH_TO_SKOLE = "Testrup Kommune \u203a Skoleområdet"  # the path as the pages show it


async def signed_in(stack: Stack, token: str) -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=stack.portal, timeout=30)
    r = await client.post("/signin", data={"token": token, "next": "/units"})
    assert r.status_code == 303 and r.headers["location"] == "/units"
    return client


@pytest.fixture
async def admin(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    client = await signed_in(stack, "dev-admin")
    yield client
    await client.aclose()


@pytest.fixture
async def reader(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    client = await signed_in(stack, "dev-reader")
    yield client
    await client.aclose()


def text(html: str) -> str:
    """The visible words of a page, tags removed and blanks collapsed (what a reader sees)."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


async def test_sign_in_first_then_back_to_the_page_asked_for(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.portal) as anonymous:
        r = await anonymous.get("/units/search", params={"q": "x"})
        assert r.status_code == 303 and r.headers["location"] == "/signin?next=%2Funits%2Fsearch%3Fq%3Dx"
        page = await anonymous.get("/signin")
        for token in ("dev-reader", "dev-writer", "dev-approver", "dev-admin"):
            assert f'value="{token}"' in page.text
        r = await anonymous.post("/signin", data={"token": "not-a-dev-token"})
        assert r.status_code == 400 and "orgdir_portal" not in r.headers.get("set-cookie", "")
        r = await anonymous.post("/signin", data={"token": "dev-reader", "next": "https://elsewhere.example/"})
        assert r.headers["location"] == "/units"  # never sent off-site after sign-in


async def test_tree_and_folded_search(admin: httpx.AsyncClient, stack: Stack) -> None:
    tree = await admin.get("/units")
    assert tree.status_code == 200
    assert "Testrup Kommune" in tree.text and "Skoleområdet" in tree.text
    # Åskolen is one level further down: loaded when its branch is expanded.
    assert "Åskolen" not in tree.text
    branch = await admin.get(f"/units/{stack.ids['skoler']}/children")
    assert "Åskolen" in branch.text
    for q in ("oekonomi", "økonomi", "OKONOMI"):
        found = await admin.get("/units/search", params={"q": q})
        assert "Økonomi og Løn" in found.text, q
        assert "Testrup Kommune" in text(found.text)  # the path of each hit
    assert "Åskolen" in (await admin.get("/units/search", params={"q": "aaskolen"})).text
    assert "Ingen enheder matcher" in (await admin.get("/units/search", params={"q": "zzz"})).text


async def test_unit_page_people_manager_rights_and_path(admin: httpx.AsyncClient, stack: Stack) -> None:
    page = text((await admin.get(f"/units/{stack.ids['skole']}")).text)
    assert PATH_TO_SKOLE in page
    assert "Anne Jørgensen" in page and "Pædagog" in page
    assert "Fællesdrev" in page and "Active Directory" in page
    assert "tildelt på Testrup Kommune med underenheder" in page  # why the unit carries the role
    # The people of the subtree, on request (htmx fragment).
    subtree = await admin.get(f"/units/{stack.ids['skoler']}/people", params={"subtree": "true"})
    assert "Anne Jørgensen" in subtree.text and "Åskolen" in subtree.text
    assert "Anne" not in (await admin.get(f"/units/{stack.ids['skoler']}/people")).text
    # Before the unit existed: said so, with its periods.
    before = await admin.get(f"/units/{stack.ids['skole']}", params={"at": "2019-06-01"})
    assert before.status_code == 404 and "findes ikke på denne dato" in before.text and "2020-01-01" in before.text


async def test_person_page_cpr_as_the_api_masks_it(
    admin: httpx.AsyncClient, reader: httpx.AsyncClient, stack: Stack
) -> None:
    as_admin = text((await admin.get(f"/persons/{stack.ids['anne']}")).text)
    as_reader = text((await reader.get(f"/persons/{stack.ids['anne']}")).text)
    assert "010190-1234" in as_admin  # orgdir:read:cpr
    assert "-XXXX" in as_reader and "1234" not in as_reader.replace(stack.ids["anne"], "")  # masked by the API
    assert "Åskolen" in as_reader and PATH_TO_SKOLE in as_reader
    assert "Fællesdrev" in as_reader and "via enhed Åskolen" in as_reader
    assert "person.created" in as_reader and "static:admin" in as_reader  # history: what, by whom
    assert "annjoe" in as_reader  # the account access-rights requested


async def test_reader_is_not_offered_writes(reader: httpx.AsyncClient, stack: Stack) -> None:
    page = (await reader.get(f"/units/{stack.ids['skole']}")).text
    assert "/hire" not in page and "/move" not in page and "Opret enhed" not in page
    # And the API refuses it anyway: an error page, nothing written.
    r = await reader.post("/units/new", data={"name": "X", "user_key": "READER-X"})
    assert r.status_code == 403 and "giver ikke adgang" in r.text


async def test_create_unit_problem_beside_its_field_and_nothing_written(
    admin: httpx.AsyncClient, stack: Stack
) -> None:
    # A user key another unit holds: the server's 409 detail beside the user key input.
    r = await admin.post("/units/new", data={
        "name": "Dublet", "user_key": "T-OEK", "parent": stack.ids["kommune"], "from": "2026-01-01"})
    assert r.status_code == 422
    error = re.search(r'<p class="field-error" id="user_key-error"[^>]*>([^<]+)</p>', r.text)
    assert error and "T-OEK" in error.group(1)
    assert 'id="user_key" name="user_key" value="T-OEK" aria-invalid="true"' in r.text
    assert 'value="Dublet"' in r.text  # what was typed is kept
    # A validation error (errors[].field) lands beside its own input too.
    r = await admin.post("/units/new", data={"name": "x" * 301, "user_key": "NEW-1"})
    assert r.status_code == 422 and re.search(r'id="name-error"[^>]*>[^<]*300', r.text)
    async with stack.api("orgunits") as ou:
        found = (await ou.get("/api/v1/orgunits", params={"q": "Dublet"})).json()["items"]
        assert found == []
    # Then a good one: saved, and the unit page says from when.
    r = await admin.post("/units/new", data={
        "name": "Østerbo Plejecenter", "user_key": "T-OESTERBO", "parent": stack.ids["kommune"]})
    assert r.status_code == 303
    page = await admin.get(r.headers["location"])
    assert "Østerbo Plejecenter" in page.text and "Gemt." in page.text


async def test_move_into_own_subtree_is_refused_at_the_parent_field(admin: httpx.AsyncClient, stack: Stack) -> None:
    form = await admin.get(f"/units/{stack.ids['skoler']}/move")
    version = re.search(r'name="version" value="(\d+)"', form.text)
    assert version
    r = await admin.post(f"/units/{stack.ids['skoler']}/move", data={
        "parent": stack.ids["skole"], "version": version.group(1)})
    assert r.status_code == 422
    assert re.search(r'id="parent-error"[^>]*>[^<]*own ancestor', r.text)
    page = text((await admin.get(f"/units/{stack.ids['skole']}")).text)
    assert PATH_TO_SKOLE in page  # unchanged


async def test_english_on_request_and_remembered(admin: httpx.AsyncClient) -> None:
    r = await admin.get("/units", params={"lang": "en"})
    assert "The organisation" in r.text and 'lang="en"' in r.text
    assert "orgdir_lang=en" in r.headers["set-cookie"]
    assert "Find a unit" in (await admin.get("/units")).text


async def test_health_and_static_assets(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.portal) as client:
        assert (await client.get("/healthz")).status_code == 200
        ready = (await client.get("/readyz")).json()
        assert ready["apis"] == {"orgunits": True, "registry": True, "access_rights": True, "notifier": True}
        htmx = await client.get("/static/htmx.min.js")
        assert htmx.status_code == 200 and "htmx" in htmx.text[:200]


async def test_rename_sends_if_match_so_a_change_in_between_is_told(admin: httpx.AsyncClient, stack: Stack) -> None:
    """Two people open the rename form of one unit; the second to save is told, and nothing is written."""
    unit = stack.ids["oekonomi"]
    first = await admin.get(f"/units/{unit}/rename")
    version = re.search(r'name="version" value="(\d+)"', first.text)
    assert version and 'value="Økonomi og Løn"' in first.text
    async with stack.api("orgunits") as ou:  # someone else changes the unit meanwhile
        r = await ou.patch(f"/api/v1/orgunits/{unit}", json={"user_key": "T-OEK2"})
        assert r.status_code == 200, r.text
    r = await admin.post(f"/units/{unit}/rename", data={"name": "Økonomi", "version": version.group(1)})
    assert r.status_code == 422 and "ændret, siden formularen blev åbnet" in r.text
    assert "Økonomi og Løn" in text((await admin.get(f"/units/{unit}")).text)
    # An empty name is refused at its field before anything is sent.
    r = await admin.post(f"/units/{unit}/rename", data={"name": " ", "version": version.group(1)})
    assert r.status_code == 422 and 'id="name-error"' in r.text
    async with stack.api("orgunits") as ou:
        r = await ou.patch(f"/api/v1/orgunits/{unit}", json={"user_key": "T-OEK"})
        assert r.status_code == 200, r.text


async def test_assignment_form_and_self_approval_is_refused_beside_its_row(stack: Stack) -> None:
    """An approver who asks for a sensitive role cannot approve it too (four eyes): the service's 403
    is shown beside the row, and the assignment still waits."""
    role = uid()
    async with stack.api("access-rights") as acc:
        r = await acc.put(f"/api/v1/roles/{role}", json={
            "validity": {"from": "2020-01-01"}, "it_system": stack.ids["system"], "name": "Journal", "sensitive": True})
        assert r.status_code == 201, r.text
    approver = await signed_in(stack, "dev-approver")
    try:
        # Nothing chosen: refused at the field, nothing sent.
        r = await approver.post(f"/persons/{stack.ids['soeren']}/assign", data={"what": ""})
        assert r.status_code == 422 and 'id="what-error"' in r.text
        r = await approver.post(f"/persons/{stack.ids['soeren']}/assign", data={"what": f"role:{role}"})
        assert r.status_code == 303
        assert "venter" in (await approver.get(r.headers["location"])).text
        page = await approver.get("/rights")
        aid = re.search(r'<tr data-uuid="([^"]+)">\s*<td>Journal', page.text)
        assert aid, page.text
        r = await approver.post(f"/rights/assignments/{aid.group(1)}/approve")
        assert r.status_code == 422
        assert re.search(rf'id="row-error-{aid.group(1)}"[^>]*>[^<]*requester', r.text)
        assert "Journal" in text(r.text)  # still waiting
        assert f'id="reject-{aid.group(1)}"' in r.text  # rejecting is offered beside approving
        r = await approver.post(f"/rights/assignments/{aid.group(1)}/reject", data={"reason": "Mig selv"})
        assert r.status_code == 422 and re.search(rf'id="row-error-{aid.group(1)}"[^>]*>[^<]*requester', r.text)
    finally:
        await approver.aclose()
    # Someone else rejects it, with a reason: it leaves the list and never grants anything.
    admin = await signed_in(stack, "dev-admin")
    try:
        r = await admin.post(f"/rights/assignments/{aid.group(1)}/reject", data={"reason": "Ikke nødvendigt"})
        assert r.status_code == 303
        page = await admin.get(r.headers["location"])
        assert "Afvist" in page.text and "Journal" not in text(page.text)
    finally:
        await admin.aclose()
    async with stack.api("access-rights") as acc:
        rejected = (await acc.get("/api/v1/assignments", params={"status": "rejected"})).json()["items"]
        assert aid.group(1) in [a["uuid"] for a in rejected]


async def test_change_and_end_an_engagement_and_add_a_manager(admin: httpx.AsyncClient, stack: Stack) -> None:
    """Change an engagement from a later day (If-Match: a change in between is told; a wrong class is
    refused at its field; nothing is half-saved), end it, and add a manager to a unit."""
    bo, eng = uid(), uid()
    later = first_of_next_month(date.today())
    async with stack.api("registry") as reg:
        r = await reg.put(f"/api/v1/persons/{bo}", json={
            "given_name": "Bo", "surname": "Bæk", "validity": {"from": "1990-01-01"}})
        assert r.status_code == 201, r.text
        r = await reg.put(f"/api/v1/engagements/{eng}", json={
            "person": bo, "unit": stack.ids["oekonomi"], "primary": True, "validity": ALWAYS,
            "job_function": class_uuid("job_function", "paedagog"),
            "engagement_type": class_uuid("engagement_type", "ansat")})
        assert r.status_code == 201, r.text

        person = (await admin.get(f"/persons/{bo}")).text
        assert f"/engagements/{eng}/change" in person and f"/engagements/{eng}/terminate" in person
        form = await admin.get(f"/engagements/{eng}/change")
        version = re.search(r'name="version" value="(\d+)"', form.text)
        assert version and "Bo Bæk" in form.text
        konsulent = class_uuid("job_function", "konsulent")
        change = {"unit": stack.ids["oekonomi"], "job_function": konsulent,
                  "engagement_type": class_uuid("engagement_type", "ansat"), "primary": "on",
                  "from": later.isoformat(), "version": version.group(1)}

        # A class of another facet as job function: the registry's message beside that input.
        r = await admin.post(f"/engagements/{eng}/change", data={
            **change, "job_function": class_uuid("engagement_type", "vikar")})
        assert r.status_code == 422 and 'id="job_function-error"' in r.text
        assert 'id="job_function" name="job_function" aria-invalid="true"' in r.text

        # Someone else changes the engagement meanwhile: told, not overwritten.
        r = await reg.patch(f"/api/v1/engagements/{eng}", json={"user_key": "HR-1"})
        assert r.status_code == 200, r.text
        r = await admin.post(f"/engagements/{eng}/change", data=change)
        assert r.status_code == 422 and "ændret, siden formularen blev åbnet" in r.text
        now = (await reg.get(f"/api/v1/engagements/{eng}", params={"at": later.isoformat()})).json()
        assert now["job_function"] == class_uuid("job_function", "paedagog")  # nothing written

        # With the version now shown: saved from next month; today unchanged.
        form = await admin.get(f"/engagements/{eng}/change")
        version = re.search(r'name="version" value="(\d+)"', form.text)
        assert version
        r = await admin.post(f"/engagements/{eng}/change", data={**change, "version": version.group(1)})
        assert r.status_code == 303 and r.headers["location"] == f"/persons/{bo}"
        assert (await reg.get(f"/api/v1/engagements/{eng}")).json()["job_function"] != konsulent
        then = await reg.get(f"/api/v1/engagements/{eng}", params={"at": later.isoformat()})
        assert then.json()["job_function"] == konsulent
        assert "Konsulent" in text((await admin.get(f"/persons/{bo}", params={"at": later.isoformat()})).text)
        # Today the change shows under the engagements' future tab, marked as such.
        page = (await admin.get(f"/persons/{bo}")).text
        future = re.search(r'id="eng-timeline-future"[^>]*>(.*?)</div>', page, re.S)
        assert future and "Konsulent" in future.group(1) and "fremtidig" in future.group(1)
        present = re.search(r'id="eng-timeline-present"[^>]*>(.*?)</div>', page, re.S)
        assert present and "Pædagog" in present.group(1) and "Konsulent" not in present.group(1)

        # End it from the month after: still there next month, gone the month after.
        end = first_of_next_month(later)
        form = await admin.get(f"/engagements/{eng}/terminate")
        version = re.search(r'name="version" value="(\d+)"', form.text)
        assert version
        r = await admin.post(f"/engagements/{eng}/terminate", data={"to": "", "version": version.group(1)})
        assert r.status_code == 422 and 'id="to-error"' in r.text  # refused before anything is sent
        r = await admin.post(f"/engagements/{eng}/terminate", data={"to": end.isoformat(),
                                                                    "version": version.group(1)})
        assert r.status_code == 303
        then = await reg.get(f"/api/v1/engagements/{eng}", params={"at": later.isoformat()})
        assert then.json()["validity"]["to"] == end.isoformat()
        assert (await reg.get(f"/api/v1/engagements/{eng}", params={"at": end.isoformat()})).status_code == 404

    # A manager: the level left out is refused at its field; then Bo manages Økonomi og Løn.
    unit = stack.ids["oekonomi"]
    manager = {"person": bo, "manager_type": class_uuid("manager_type", "leder"),
               "manager_level": class_uuid("manager_level", "niveau3"),
               "responsibilities": [class_uuid("responsibility", "personale")], "from": "2020-01-01"}
    r = await admin.post(f"/units/{unit}/manager", data={**manager, "manager_level": ""})
    assert r.status_code == 422 and 'id="manager_level-error"' in r.text
    assert 'value="' + class_uuid("responsibility", "personale") + '" checked' in r.text  # what was chosen is kept
    wrong_facet = class_uuid("job_function", "leder")
    r = await admin.post(f"/units/{unit}/manager", data={**manager, "manager_type": wrong_facet})
    assert r.status_code == 422 and 'id="manager_type-error"' in r.text
    async with stack.api("registry") as reg:
        assert (await reg.get(f"/api/v1/orgunits/{unit}/manager")).status_code == 404  # nothing written
    r = await admin.post(f"/units/{unit}/manager", data=manager)
    assert r.status_code == 303
    page = text((await admin.get(f"/units/{unit}")).text)
    assert "Bo Bæk · Leder" in page


async def test_operations_page_shows_failed_deliveries_and_replays_one(
    admin: httpx.AsyncClient, reader: httpx.AsyncClient, stack: Stack
) -> None:
    """A target that refused an event (410: permanent): its delivery is listed as failed; sent again from
    the page once the target takes it. Administrators only."""
    secret = new_secret()
    receiver = Receiver(secret)
    receiver.mode = "reject"
    person = uid()
    async with stack.api("notifier") as nt, stack.api("registry") as reg:
        r = await nt.post("/api/v1/subscriptions", json={
            "name": "Lønsystem (test)", "url": receiver.url, "event_types": ["person.*"], "secret": secret})
        assert r.status_code == 201, r.text
        sub = r.json()
        try:
            r = await reg.put(f"/api/v1/persons/{person}", json={
                "given_name": "Ida", "surname": "Replay", "validity": {"from": "1990-01-01"}})
            assert r.status_code == 201, r.text

            async def failed() -> list[dict[str, Any]]:
                r = await nt.get("/api/v1/deliveries", params={"status": "failed", "subscription": sub["uuid"]})
                return [d for d in r.json()["items"] if d["subject"] == person]

            delivery = (await eventually(failed))[0]
            assert "/operations" not in (await reader.get("/units")).text
            assert (await reader.get("/operations")).status_code == 403
            page = await admin.get("/operations")
            assert page.status_code == 200 and 'href="/operations"' in page.text
            assert "Lønsystem (test)" in page.text and receiver.url in page.text
            row = re.search(rf'<tr data-id="{delivery["id"]}">(.*?)</tr>', page.text, re.S)
            assert row and "person.created" in row.group(1) and "HTTP 410" in row.group(1)

            receiver.mode = "ok"
            r = await admin.post(f"/operations/deliveries/{delivery['id']}/replay")
            assert r.status_code == 303
            assert "Sendes igen" in (await admin.get(r.headers["location"])).text
            await eventually(lambda: receiver.of_subject(person))
        finally:
            await nt.delete(f"/api/v1/subscriptions/{sub['uuid']}", headers={"If-Match": f'"{sub["version"]}"'})
            receiver.close()


async def test_organisation_model_on_the_unit_and_person_pages(admin: httpx.AsyncClient, stack: Stack) -> None:
    """A unit's hierarchy, KLE numbers with aspects and related units; an association's substitute and
    trade union; and the unit's own timeline with a rename from a later day under the future tab."""
    ids = stack.ids
    unit, relation, association = uid(), uid(), uid()
    later = first_of_next_month(date.today())
    async with stack.api("orgunits") as ou, stack.api("registry") as reg:
        r = await ou.put(f"/api/v1/orgunits/{unit}", json={
            "name": "Skoleudvalget", "user_key": "T-SKUDV", "parent": ids["kommune"], "validity": ALWAYS,
            "hierarchy": class_uuid("unit_hierarchy", "linje"),
            "kle": [{"kle": kle_uuid("17"), "aspects": ["ansvarlig", "indsigt"]}]})
        assert r.status_code == 201, r.text
        r = await ou.put(f"/api/v1/related-units/{relation}", json={
            "units": [unit, ids["oekonomi"]], "validity": {"from": "2020-01-01"}})
        assert r.status_code == 201, r.text
        r = await ou.patch(f"/api/v1/orgunits/{unit}", json={"name": "Skole- og Børneudvalget",
                                                              "validity": {"from": later.isoformat()}})
        assert r.status_code == 200, r.text

        async def associate() -> bool:  # the registry learns the classes from orgunits' events
            r = await reg.put(f"/api/v1/associations/{association}", json={
                "person": ids["anne"], "unit": ids["skole"], "validity": ALWAYS,
                "association_type": class_uuid("association_type", "tillidsrepraesentant"),
                "substitute": ids["soeren"], "trade_union": class_uuid("trade_union", "bupl")})
            return r.status_code in (200, 201)

        await eventually(associate)

    html = (await admin.get(f"/units/{unit}")).text
    page = text(html)
    assert "Hierarki Linjeorganisation" in page
    kle = re.search(r'<ul class="plain" id="kle">(.*?)</ul>', html, re.S)
    assert kle and "ansvarlig, indsigt" in kle.group(1)
    related = re.search(r'<ul class="plain" id="related">(.*?)</ul>', html, re.S)
    assert related and "Økonomi og Løn" in related.group(1)
    future = re.search(r'id="unit-timeline-future"[^>]*>(.*?)</div>', html, re.S)
    assert future and "Skole- og Børneudvalget" in future.group(1) and "fremtidig" in future.group(1)
    present = re.search(r'id="unit-timeline-present"[^>]*>(.*?)</div>', html, re.S)
    assert present and "Skoleudvalget" in present.group(1)
    assert "Skole- og Børneudvalget" not in present.group(1)

    person = text((await admin.get(f"/persons/{ids['anne']}")).text)
    assert "Tillidsrepræsentant" in person
    assert "Stedfortræder: Søren Sørensen" in person and "Fagforening: BUPL" in person
