"""The CLI device flow: the terminal starts a session, the signed-in user approves it here."""

from __future__ import annotations

from typing import Any

import requests
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By

from devstack.stack import Stack
from tests.browser.conftest import magic_link, new_email, request_link, sign_in, wait_for


def start_cli(api: str) -> Any:
    resp = requests.post(f"{api}/auth/cli", timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_approve_gives_the_cli_an_api_token(browser: WebDriver, api: str, stack: Stack) -> None:
    cli = start_cli(api)
    sign_in(browser, api, stack)
    browser.get(cli["auth_url"])
    assert wait_for(browser, "#session-code").text == cli["session_id"][:8]
    browser.find_element(By.ID, "approve").click()
    wait_for(browser, "#approved")
    poll = requests.get(f"{api}/auth/cli/{cli['session_id']}", timeout=10).json()
    assert poll["status"] == "approved" and poll["api_token"]


def test_return_to_approval_after_signing_in(browser: WebDriver, api: str, stack: Stack) -> None:
    cli = start_cli(api)
    email = new_email()
    browser.get(cli["auth_url"])
    request_link(browser, email)
    browser.get(magic_link(stack, email))
    assert wait_for(browser, "#session-code").text == cli["session_id"][:8]
    assert browser.current_url == cli["auth_url"]
