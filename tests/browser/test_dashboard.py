"""The dashboard needs a session; signing out ends it."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from selenium.webdriver.chrome.webdriver import WebDriver

from devstack.stack import Stack
from tests.browser.conftest import sign_in, wait_for, wait_for_path


def test_redirect_to_login_without_a_session(browser: WebDriver, api: str) -> None:
    browser.get(f"{api}/dashboard")
    wait_for_path(browser, "/login")
    assert parse_qs(urlsplit(browser.current_url).query) == {"next": ["/dashboard"]}


def test_logout_returns_to_login_and_ends_the_session(
    browser: WebDriver, api: str, stack: Stack
) -> None:
    sign_in(browser, api, stack)
    wait_for(browser, "#logout").click()
    wait_for_path(browser, "/login")
    browser.get(f"{api}/dashboard")
    wait_for(browser, "#login-form")
    assert parse_qs(urlsplit(browser.current_url).query) == {"next": ["/dashboard"]}
