"""Debian's chromium, headless, under Selenium: the one browser the portal's tests and benchmark drive.

Written once here so the browser tests and ``make bench-portal`` measure the same browser with the
same options (no browser download: apt's ``chromium`` and ``chromium-driver``).
"""

from __future__ import annotations

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

from orgdir_tools.localservers import ensure_chromium_installed


def headless_chromium(width: int = 1280, height: int = 1000, lang: str = "da-DK") -> WebDriver:
    """A fresh headless chromium at the given window size (the caller quits it)."""
    chromium, chromedriver = ensure_chromium_installed()
    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", f"--lang={lang}", "--no-first-run"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(str(chromedriver)))
    driver.implicitly_wait(0)
    return driver
