"""The portal's pages over HTTP, against the four services running as processes (no browser here):
sign-in, what each token is offered, folded search, the unit and person pages on a day, and forms that
show the server's problem beside the field it names and write nothing."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from .conftest import Stack, uid

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
    finally:
        await approver.aclose()
