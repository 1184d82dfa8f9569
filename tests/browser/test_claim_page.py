"""The claim page (/start?t=<upgrade_jwt>): the preview, then the emailed link."""

from __future__ import annotations

import requests
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By

from tests.browser.conftest import new_email, wait_for
from tests.integration.conftest import provision


def test_show_preview_then_sent_notice_for_a_valid_token(browser: WebDriver, api: str) -> None:
    db = provision(api, "/db/new", "claim-page").json()
    browser.get(db["upgrade"])
    resource = wait_for(browser, "#claim-resource").text
    assert "claim-page" in resource and "postgres" in resource
    assert "claim-page" in browser.find_element(By.ID, "claim-items").text
    browser.find_element(By.ID, "email").send_keys(new_email())
    browser.find_element(By.ID, "claim-submit").click()
    assert "Check your inbox" in wait_for(browser, "#claim-sent").text


def test_show_api_message_for_an_undeliverable_email(browser: WebDriver, api: str) -> None:
    db = provision(api, "/db/new", "claim-bad-email").json()
    email = "someone@localhost"  # the browser accepts it; the API wants a dotted domain
    expected = requests.post(
        f"{api}/claim", json={"token": db["upgrade_jwt"], "email": email}, timeout=10
    ).json()
    assert expected["error"] == "invalid_email_format"
    browser.get(db["upgrade"])
    wait_for(browser, "#email").send_keys(email)
    browser.find_element(By.ID, "claim-submit").click()
    assert wait_for(browser, "#claim-error").text == expected["message"]
    assert not browser.find_element(By.ID, "claim-sent").is_displayed()


def test_show_invalid_notice_for_a_tampered_token(browser: WebDriver, api: str) -> None:
    db = provision(api, "/db/new", "claim-tampered").json()
    browser.get(f"{db['upgrade'][:-6]}tamper")
    assert "not valid" in wait_for(browser, "#claim-invalid").text
    assert not browser.find_element(By.ID, "claim-form").is_displayed()
