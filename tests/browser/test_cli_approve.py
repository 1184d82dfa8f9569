"""The CLI device flow: the terminal starts a session and prints its code; the signed-in user
types that code here to approve it (a link alone, sent by someone else, approves nothing)."""

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


def type_code(browser: WebDriver, code: str) -> None:
    field = wait_for(browser, "#user-code")
    field.clear()
    field.send_keys(code)
    browser.find_element(By.ID, "approve").click()


def poll(api: str, cli: Any) -> Any:
    return requests.get(f"{api}/auth/cli/{cli['session_id']}", timeout=10).json()


def test_approve_with_the_typed_code_gives_the_cli_an_api_token(
    browser: WebDriver, api: str, stack: Stack
) -> None:
    cli = start_cli(api)
    sign_in(browser, api, stack)
    browser.get(cli["auth_url"])
    wait_for(browser, "#user-code")
    assert cli["user_code"] not in browser.page_source  # the page never shows the code
    type_code(browser, cli["user_code"].lower())
    wait_for(browser, "#approved")
    polled = poll(api, cli)
    assert polled["status"] == "approved" and polled["api_token"]


def test_approve_with_a_wrong_code_is_refused_and_may_be_retyped(
    browser: WebDriver, api: str, stack: Stack
) -> None:
    cli = start_cli(api)
    sign_in(browser, api, stack)
    browser.get(cli["auth_url"])
    type_code(browser, "BBBB-BBBB" if cli["user_code"] != "BBBB-BBBB" else "CCCC-CCCC")
    assert "does not match" in wait_for(browser, "#approve-error").text
    assert poll(api, cli)["status"] == "pending"
    type_code(browser, cli["user_code"])
    wait_for(browser, "#approved")
    assert not browser.find_element(By.ID, "approve-error").is_displayed()
    assert poll(api, cli)["api_token"]


def test_return_to_approval_after_signing_in(browser: WebDriver, api: str, stack: Stack) -> None:
    cli = start_cli(api)
    email = new_email()
    browser.get(cli["auth_url"])
    request_link(browser, email)
    browser.get(magic_link(stack, email))
    wait_for(browser, "#user-code")
    assert browser.current_url == cli["auth_url"]
    assert browser.find_element(By.ID, "approve-user").text == email
