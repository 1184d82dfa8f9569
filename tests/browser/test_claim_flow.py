"""The whole claim: provision anonymously, claim in the browser, follow the mail, see the team."""

from __future__ import annotations

from urllib.parse import urlsplit

from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By

from devstack.stack import Stack
from tests.browser.conftest import magic_link, new_email, wait_for
from tests.integration.conftest import provision


def test_claim_lands_on_the_dashboard_with_the_resource(
    browser: WebDriver, api: str, stack: Stack
) -> None:
    # Provisioned from its own network (X-Forwarded-For): the upgrade JWT names that fingerprint,
    # not the browser's 127.0.0.1, and the claim moves every resource of it.
    db = provision(api, "/db/new", "claimed").json()
    email = new_email()
    browser.get(db["upgrade"])
    wait_for(browser, "#email").send_keys(email)
    browser.find_element(By.ID, "team-name").send_keys("Browser Team")
    browser.find_element(By.ID, "claim-submit").click()
    wait_for(browser, "#claim-sent")
    browser.get(magic_link(stack, email))
    row = wait_for(browser, f'#resources tr[data-id="{db["id"]}"]')
    assert urlsplit(browser.current_url).path == "/dashboard"
    assert "claimed" in row.text
    assert browser.find_element(By.ID, "user-email").text == email
    assert browser.find_element(By.ID, "team-name").text == "Browser Team"
