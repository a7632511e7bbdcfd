"""The portal in a real browser: Debian's chromium, headless, driven by Selenium (no browser download),
against the four services and the portal running as processes.

Find a unit by typing part of its name (``oe`` for ``ø``); hire a person from next month and see them
on the unit page only when the date picker reaches that month; a form error shown beside its field;
every service's ``/api/v1/docs`` rendering its operations from local assets only. Screenshots of the
main pages land in ``.run/screenshots/portal/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from orgdir_tools.localservers import ensure_chromium_installed, run_dir

from .conftest import Stack, first_of_next_month


@pytest.fixture(scope="session")
def screenshots() -> Path:
    path = run_dir() / "screenshots" / "portal"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def browser() -> Iterator[WebDriver]:
    chromium, chromedriver = ensure_chromium_installed()
    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1000", "--lang=da-DK", "--no-first-run"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(str(chromedriver)))
    driver.implicitly_wait(0)
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
        raise AssertionError(f"not seen within {timeout} s on {driver.current_url}; see {out}/failed.png") from None


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
    branch = browser.find_element(By.CSS_SELECTOR, f"li[data-uuid='{stack.ids['skoler']}'] > details")
    branch.find_element(By.TAG_NAME, "summary").click()
    aaskolen = wait(browser, lambda d: [a for a in branch.find_elements(By.TAG_NAME, "a") if a.text == "Åskolen"])
    assert aaskolen[0].is_displayed()
    # Search as you type, ø typed as oe.
    box = browser.find_element(By.ID, "unit-q")
    box.send_keys("oekon")
    hit = wait(browser, lambda d: [
        a for a in d.find_elements(By.CSS_SELECTOR, "#unit-results a") if a.text == "Økonomi og Løn"])
    assert "Testrup Kommune" in browser.find_element(By.ID, "unit-results").text
    browser.save_screenshot(str(screenshots / "tree.png"))
    branch.find_element(By.TAG_NAME, "summary").click()
    wait(browser, lambda d: not aaskolen[0].is_displayed())
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
