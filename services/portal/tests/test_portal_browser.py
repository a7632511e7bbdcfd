"""The portal in a real browser: Debian's chromium, headless, driven by Selenium (no browser download),
against the four services and the portal running as processes.

Find a unit by typing part of its name (``oe`` for ``ø``); hire a person from next month and see them
on the unit page only when the date picker reaches that month; move a unit and see a person's rights
and their reasons change; approve a pending sensitive role; a form error shown beside its field;
every service's ``/api/v1/docs`` rendering its operations from local assets only. Screenshots of the
main pages land in ``.run/screenshots/portal/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from orgdir_tools.browser import headless_chromium
from orgdir_tools.localservers import run_dir
from orgdir_tools.testkit import eventually
from orgunits.vocabulary import class_uuid

from .axe import describe, serious_violations
from .conftest import ALWAYS, Stack, first_of_next_month, uid


@pytest.fixture(scope="session")
def screenshots() -> Path:
    path = run_dir() / "screenshots" / "portal"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def browser() -> Iterator[WebDriver]:
    driver = headless_chromium()
    yield driver
    driver.quit()


def wait(driver: WebDriver, check: Any, timeout: float = 15) -> Any:
    """Poll until ``check`` holds; on a timeout the page is kept (``failed.png``, ``failed.html``) to look at."""
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: check(d))
    except TimeoutException:
        out = run_dir() / "screenshots" / "portal"
        driver.save_screenshot(str(out / "failed.png"))
        (out / "failed.html").write_text(driver.page_source)
        raise AssertionError(
            f"not seen within {timeout} s on {driver.current_url} (page {driver.title!r}); see {out}/failed.png"
        ) from None


def sign_in(driver: WebDriver, stack: Stack, name: str = "admin") -> None:
    driver.delete_all_cookies()
    driver.get(f"{stack.portal}/signin")
    driver.find_element(By.ID, f"token-{name}").click()
    wait(driver, lambda d: d.current_url.endswith("/units"))


def set_date(driver: WebDriver, element_id: str, day: date) -> None:
    """Type a day into a date input as the picker would (its text format depends on the locale)."""
    field = driver.find_element(By.ID, element_id)
    driver.execute_script(
        "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('change', {bubbles: true}));",
        field, day.isoformat(),
    )


def people_on_page(driver: WebDriver) -> str:
    return str(driver.find_element(By.ID, "people").text)


def test_find_a_unit_by_typing_part_of_its_name(browser: WebDriver, stack: Stack, screenshots: Path) -> None:
    sign_in(browser, stack)
    # The tree: expand a branch (its children load on demand) and collapse it again.
    branch = browser.find_element(By.CSS_SELECTOR, f"li[data-uuid='{stack.ids['skoler']}']")
    toggle = branch.find_element(By.CSS_SELECTOR, "button.twisty")
    toggle.click()
    aaskolen = wait(browser, lambda d: [a for a in branch.find_elements(By.TAG_NAME, "a") if a.text == "Åskolen"])
    assert aaskolen[0].is_displayed()
    # Search as you type, ø typed as oe.
    box = browser.find_element(By.ID, "unit-q")
    box.send_keys("oekon")
    hit = wait(browser, lambda d: [
        a for a in d.find_elements(By.CSS_SELECTOR, "#unit-results a") if a.text == "Økonomi og Løn"])
    assert "Testrup Kommune" in browser.find_element(By.ID, "unit-results").text
    browser.save_screenshot(str(screenshots / "tree.png"))
    assert toggle.get_attribute("aria-expanded") == "true"
    toggle.click()
    wait(browser, lambda d: not aaskolen[0].is_displayed())
    assert toggle.get_attribute("aria-expanded") == "false"
    hit[0].click()
    wait(browser, lambda d: d.find_element(By.TAG_NAME, "h1").text.startswith("Økonomi og Løn"))
    assert "Testrup Kommune" in browser.find_element(By.CSS_SELECTOR, "nav.breadcrumb").text
    browser.save_screenshot(str(screenshots / "unit.png"))


def test_hire_from_next_month_is_seen_when_the_date_picker_gets_there(
    browser: WebDriver, stack: Stack, screenshots: Path
) -> None:
    start = first_of_next_month(date.today())
    sign_in(browser, stack, "writer")
    browser.get(f"{stack.portal}/units/{stack.ids['oekonomi']}")
    browser.find_element(By.LINK_TEXT, "Ansæt person").click()
    browser.find_element(By.ID, "person-q").send_keys("søren")
    pick = f"#person-choices input[value='{stack.ids['soeren']}']"
    choice = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, pick))
    choice[0].click()
    Select(browser.find_element(By.ID, "job_function")).select_by_visible_text("Konsulent")
    Select(browser.find_element(By.ID, "engagement_type")).select_by_visible_text("Ansat")
    set_date(browser, "from", start)
    browser.find_element(By.CSS_SELECTOR, "form.form button[type=submit]").click()
    note = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".flash"))
    assert start.isoformat() in note[0].text
    # Today: not there yet.
    assert "Søren Sørensen" not in people_on_page(browser)
    # The date picker moves the whole view to next month: there, marked as future.
    set_date(browser, "at", start)
    wait(browser, lambda d: f"at={start.isoformat()}" in d.current_url)
    assert "Søren Sørensen" in people_on_page(browser)
    assert "fremtidig" in people_on_page(browser)
    browser.find_element(By.LINK_TEXT, "Søren Sørensen").click()
    wait(browser, lambda d: "Søren Sørensen" in d.find_element(By.TAG_NAME, "h1").text)
    assert f"at={start.isoformat()}" in browser.current_url  # the day travels with the links

    def right_with_reason(d: WebDriver) -> bool:  # access-rights learns the engagement from events
        text = d.find_element(By.TAG_NAME, "main").text
        if "Fællesdrev" in text and "via enhed Økonomi og Løn" in text:
            return True
        d.refresh()
        return False

    wait(browser, right_with_reason, timeout=20)
    browser.save_screenshot(str(screenshots / "person.png"))
    # And back on today's date the person has no engagement yet.
    browser.get(f"{stack.portal}/persons/{stack.ids['soeren']}")
    assert "Ingen engagementer på denne dato" in browser.find_element(By.TAG_NAME, "main").text


def test_a_form_error_is_shown_beside_its_field(browser: WebDriver, stack: Stack, screenshots: Path) -> None:
    sign_in(browser, stack, "writer")
    browser.get(f"{stack.portal}/units/new?parent={stack.ids['kommune']}")
    browser.find_element(By.ID, "name").send_keys("Økonomi igen")
    browser.find_element(By.ID, "user_key").send_keys("T-OEK")  # held by Økonomi og Løn
    browser.find_element(By.CSS_SELECTOR, "form.form button[type=submit]").click()
    error = wait(browser, lambda d: d.find_elements(By.ID, "user_key-error"))[0]
    assert "T-OEK" in error.text and error.is_displayed()
    field = browser.find_element(By.ID, "user_key")
    assert field.get_attribute("aria-invalid") == "true"
    assert field.get_attribute("aria-describedby") == "user_key-error"
    # Beside its field: right below the input, inside the same block.
    assert error.find_element(By.XPATH, "..") == field.find_element(By.XPATH, "..")
    assert "Intet blev gemt" in browser.find_element(By.CSS_SELECTOR, ".form-error").text
    assert browser.find_element(By.ID, "name").get_attribute("value") == "Økonomi igen"
    browser.save_screenshot(str(screenshots / "form-error.png"))


@pytest.mark.parametrize("service", ["orgunits", "registry", "access-rights", "notifier"])
def test_api_docs_render_from_local_assets(browser: WebDriver, stack: Stack, screenshots: Path, service: str) -> None:
    base = stack.urls[service]
    browser.get(f"{base}/api/v1/docs")
    operations = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock"), timeout=20)
    assert len(operations) > 5
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(url.startswith(base) for url in loaded), loaded
    browser.save_screenshot(str(screenshots / f"docs-{service}.png"))


def main_text(driver: WebDriver) -> str:
    return str(driver.find_element(By.TAG_NAME, "main").text)


def shown_after_refresh(driver: WebDriver, check: Any) -> Any:
    """For ``eventually``: the page as it is now (read again), once ``check`` holds on it."""
    driver.refresh()
    return check(main_text(driver))


def pick_unit(driver: WebDriver, name: str, typed: str, unit: str) -> None:
    """Type into a unit picker's search box and choose the unit among the radio buttons it offers."""
    driver.find_element(By.ID, f"{name}-q").send_keys(typed)
    choice = wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, f"#{name}-choices input[value='{unit}']"))
    choice[0].click()


async def test_move_a_unit_and_see_the_persons_rights_and_reasons_change(
    browser: WebDriver, stack: Stack, screenshots: Path
) -> None:
    """Skoleintra is assigned (in the portal) to Skoleområdet with its subtree; Mads works in Flyttehold below
    it. Moving Flyttehold under Økonomi og Løn takes the right away once access-rights has the move's
    events; Fællesdrev (on the whole municipality) stays, with its reason now through the moved unit."""
    ids = stack.ids
    flyt, mads, role = uid(), uid(), uid()
    async with stack.api("orgunits") as ou, stack.api("registry") as reg, stack.api("access-rights") as acc:
        r = await ou.put(f"/api/v1/orgunits/{flyt}", json={
            "name": "Flyttehold", "user_key": "T-FLYT", "parent": ids["skoler"], "validity": ALWAYS,
            "unit_type": class_uuid("unit_type", "forvaltning"), "unit_level": class_uuid("unit_level", "kommune")})
        assert r.status_code == 201, r.text
        r = await acc.put(f"/api/v1/roles/{role}", json={
            "validity": ALWAYS, "it_system": ids["system"], "name": "Skoleintra", "sensitive": False})
        assert r.status_code == 201, r.text
        r = await reg.put(f"/api/v1/persons/{mads}", json={
            "given_name": "Mads", "surname": "Madsen", "validity": {"from": "1990-01-01"}})
        assert r.status_code == 201, r.text

        async def hire() -> bool:  # registry learns the new unit from orgunits' events
            r = await reg.put(f"/api/v1/engagements/{uid()}", json={
                "person": mads, "unit": flyt, "primary": True, "validity": ALWAYS,
                "job_function": class_uuid("job_function", "paedagog"),
                "engagement_type": class_uuid("engagement_type", "ansat")})
            return r.status_code in (200, 201)

        await eventually(hire)

    # The role to Skoleområdet and its subtree, through the portal's form.
    sign_in(browser, stack, "writer")
    browser.get(f"{stack.portal}/units/{ids['skoler']}")
    # Waited for, and the page kept when it does not come (it was missing once, in a full run).
    wait(browser, lambda d: d.find_elements(By.LINK_TEXT, "Tildel rolle"))[0].click()
    Select(browser.find_element(By.ID, "what")).select_by_visible_text("Skoleintra")
    assert browser.find_element(By.ID, "inherit").is_selected()  # the subtree by default
    browser.save_screenshot(str(screenshots / "form-assign.png"))
    browser.find_element(By.CSS_SELECTOR, "form.form button[type=submit]").click()
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".flash"))

    browser.get(f"{stack.portal}/persons/{mads}")
    before = "Skoleintra"
    reason = "via enhed Flyttehold (tildelt på Skoleområdet med underenheder)"
    await eventually(lambda: shown_after_refresh(browser, lambda text: before in text and reason in text))
    assert "via enhed Flyttehold (tildelt på Testrup Kommune med underenheder)" in main_text(browser)
    browser.save_screenshot(str(screenshots / "rights-before-move.png"))

    # Move Flyttehold under Økonomi og Løn from today (the form sends If-Match with the version it showed).
    browser.get(f"{stack.portal}/units/{flyt}")
    browser.find_element(By.LINK_TEXT, "Flyt enhed").click()
    pick_unit(browser, "parent", "oekonomi", ids["oekonomi"])
    browser.find_element(By.CSS_SELECTOR, "form.form button[type=submit]").click()
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".flash"))
    assert "Økonomi og Løn" in browser.find_element(By.CSS_SELECTOR, "nav.breadcrumb").text

    browser.get(f"{stack.portal}/persons/{mads}")
    await eventually(lambda: shown_after_refresh(browser, lambda text: before not in text))
    text = main_text(browser)
    assert "Fællesdrev" in text
    assert "via enhed Flyttehold (tildelt på Testrup Kommune med underenheder)" in text
    assert "Skoleområdet" not in text
    assert "Testrup Kommune \u203a Økonomi og Løn" in text  # the engagement's unit path moved too
    browser.save_screenshot(str(screenshots / "rights-after-move.png"))


async def test_approve_a_pending_role(browser: WebDriver, stack: Stack, screenshots: Path) -> None:
    """A writer asks for a sensitive role for Anne: it waits. The writer is not offered approval; an
    approver (another person) approves it on the rights page, and Anne has the right, assigned directly."""
    ids = stack.ids
    role = uid()
    async with stack.api("access-rights") as acc:
        r = await acc.put(f"/api/v1/roles/{role}", json={
            "validity": ALWAYS, "it_system": ids["system"], "name": "Løndata", "sensitive": True})
        assert r.status_code == 201, r.text

    sign_in(browser, stack, "writer")
    browser.get(f"{stack.portal}/persons/{ids['anne']}")
    browser.find_element(By.LINK_TEXT, "Tildel rolle").click()
    Select(browser.find_element(By.ID, "what")).select_by_visible_text("Løndata (følsom)")
    browser.find_element(By.CSS_SELECTOR, "form.form button[type=submit]").click()
    note = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".flash"))
    assert "venter" in note[0].text
    assert "Løndata" not in browser.find_element(By.TAG_NAME, "main").text.split(note[0].text)[1]

    browser.find_element(By.LINK_TEXT, "Rettigheder").click()
    row = wait(browser, lambda d: [r for r in d.find_elements(By.CSS_SELECTOR, "#pending tbody tr")
                                   if "Løndata" in r.text])[0]
    assert "Anne Jørgensen" in row.text and "static:writer" in row.text
    assert not row.find_elements(By.TAG_NAME, "button")  # what a user may not do is not offered
    assert "Kræver godkenderrolle" in row.text

    sign_in(browser, stack, "approver")
    browser.get(f"{stack.portal}/rights")
    row = next(r for r in browser.find_elements(By.CSS_SELECTOR, "#pending tbody tr") if "Løndata" in r.text)
    browser.save_screenshot(str(screenshots / "rights.png"))
    row.find_element(By.TAG_NAME, "button").click()
    note = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".flash"))
    assert "Godkendt" in note[0].text
    assert "Løndata" not in browser.find_element(By.ID, "pending").text

    browser.get(f"{stack.portal}/persons/{ids['anne']}")
    await eventually(lambda: shown_after_refresh(browser, lambda text: "Løndata" in text))
    row = next(r for r in browser.find_elements(By.CSS_SELECTOR, "main table tr") if "Løndata" in r.text)
    assert "tildelt direkte" in row.text


def test_main_pages_have_no_serious_accessibility_violations(browser: WebDriver, stack: Stack) -> None:
    """axe-core (the npm package, injected here) on each main page, in Danish and English, at 1280 px:
    no critical or serious violation of WCAG 2.x A/AA or axe's best practices."""
    ids = stack.ids
    sign_in(browser, stack, "admin")
    browser.set_script_timeout(60)
    pages = {
        "tree": "/units",
        "unit": f"/units/{ids['skole']}",
        "person": f"/persons/{ids['anne']}",
        "people search": "/persons?q=anne",
        "rights": "/rights",
        "hire form": f"/units/{ids['oekonomi']}/hire",
        "assign form": f"/units/{ids['skoler']}/assign",
        "move form": f"/units/{ids['skole']}/move",
        "manager form": f"/units/{ids['skole']}/manager",
        "operations": "/operations",
        "unit in the future": f"/units/{ids['skole']}?at=2099-01-01",
    }
    found: dict[str, str] = {}
    for lang in ("da", "en"):
        for name, path in pages.items():
            browser.get(f"{stack.portal}{path}{'&' if '?' in path else '?'}lang={lang}")
            if name == "tree":  # with search results and an opened branch
                browser.find_element(By.ID, "unit-q").send_keys("skole")
                wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#unit-results a"))
            violations = serious_violations(browser)
            if violations:
                found[f"{name} ({lang})"] = describe(violations)
    # A form sent back with the server's problem beside its field.
    browser.get(f"{stack.portal}/units/new?parent={ids['kommune']}")
    browser.find_element(By.ID, "name").send_keys("Dublet")
    browser.find_element(By.ID, "user_key").send_keys("T-OEK")
    browser.find_element(By.CSS_SELECTOR, "form.form button[type=submit]").click()
    wait(browser, lambda d: d.find_elements(By.ID, "user_key-error"))
    violations = serious_violations(browser)
    if violations:
        found["form with error"] = describe(violations)
    browser.delete_all_cookies()
    browser.get(f"{stack.portal}/signin")
    violations = serious_violations(browser)
    if violations:
        found["sign-in"] = describe(violations)
    assert not found, "\n\n".join(f"{page}:\n{text}" for page, text in found.items())
