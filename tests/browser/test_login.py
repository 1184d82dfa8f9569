"""Sign-in links work once."""

from __future__ import annotations

from selenium.webdriver.chrome.webdriver import WebDriver

from devstack.stack import Stack
from tests.browser.conftest import magic_link, sign_in, wait_for, wait_for_path


def test_land_on_login_with_a_message_when_a_link_is_reused(
    browser: WebDriver, api: str, stack: Stack
) -> None:
    email = sign_in(browser, api, stack)
    browser.get(magic_link(stack, email))
    wait_for_path(browser, "/login")
    assert "already used or has expired" in wait_for(browser, "#login-error").text
