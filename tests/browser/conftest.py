"""Browser tier: the claim, sign-in, dashboard and CLI-approval pages in a real headless Chromium,
against the local stack's API server (the ``api`` fixture) and its SMTP sink."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from devstack.stack import Stack
from tests.conftest import magic_link

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
WAIT_SECONDS = 15


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).is_file()]
    assert not missing, f"{missing} missing: `make browser` installs chromium and chromium-driver"
    options = Options()
    options.binary_location = CHROMIUM
    for arg in CHROMIUM_ARGS:
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium')}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(autouse=True)
def signed_out(browser: WebDriver) -> None:
    """Every test starts without cookies, so signed out."""
    browser.execute_cdp_cmd("Network.clearBrowserCookies", {})


def wait_for(browser: WebDriver, css: str) -> WebElement:
    """The element matching ``css`` once it is visible."""
    return WebDriverWait(browser, WAIT_SECONDS).until(
        EC.visibility_of_element_located((By.CSS_SELECTOR, css))
    )


def wait_for_path(browser: WebDriver, path: str) -> None:
    WebDriverWait(browser, WAIT_SECONDS).until(lambda b: urlsplit(b.current_url).path == path)


def new_email() -> str:
    return f"b{uuid.uuid4().hex[:12]}@example.com"


def request_link(browser: WebDriver, email: str) -> None:
    """Ask for a sign-in link on the login page the browser shows."""
    wait_for(browser, "#email").send_keys(email)
    browser.find_element(By.ID, "login-submit").click()
    wait_for(browser, "#login-sent")


def sign_in(browser: WebDriver, api: str, stack: Stack) -> str:
    """Sign in with a new address through the login page and its emailed link; the address."""
    email = new_email()
    browser.get(f"{api}/login")
    request_link(browser, email)
    browser.get(magic_link(stack, email))
    wait_for(browser, "#user-email")
    return email
