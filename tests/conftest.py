"""Fixtures shared by every tier: the private test stack (real Postgres x2, moto server)."""

from __future__ import annotations

import ipaddress
import itertools
import os
import random
import re
from collections.abc import Iterator
from urllib.parse import urlsplit

import pg8000.native
import pytest

from devstack.stack import Profile, Stack, get_profile

# The `api` fixture: one HTTP server for the integration and browser tiers.
pytest_plugins = ["tests.api_server"]

_subnets = itertools.count(random.randrange(1, 50_000))


def fresh_ip() -> str:
    """A client IP in a /24 no other test has used in this run (each /24 is its own tenant)."""
    n = next(_subnets)
    return str(ipaddress.IPv4Address(0x0A000000 + (n % 65_536) * 256 + 7))


def stack_profile() -> Profile:
    """``test``, or another run's own ports and state with ``INSTANODE_TEST_PROFILE=test+100``."""
    return get_profile(os.environ.get("INSTANODE_TEST_PROFILE", "test"))


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    stack = Stack(stack_profile())
    started = stack.up()
    stack.reset()  # every run starts from empty tables and servers, however often it runs
    yield stack
    stack.remove_apps()  # what a test deployed through the API and did not delete itself
    stack.down(started)


def connect(url: str, database: str | None = None) -> pg8000.native.Connection:
    """Open a returned ``connection_url`` with pg8000 (optionally another database on it)."""
    p = urlsplit(url)
    return pg8000.native.Connection(
        user=p.username or "",
        password=p.password,
        host=p.hostname or "",
        port=p.port or 5432,
        database=database or p.path.lstrip("/"),
    )


def magic_link(stack: Stack, email: str) -> str:
    """The sign-in link in the newest mail to ``email``: the http(s) URL of its text part."""
    part = stack.smtp.wait_for(email).get_body(("plain",))
    assert part is not None, f"the mail to {email} has no text part"
    text = part.get_content()
    found = re.search(r"https?://\S+", text)
    assert found, f"no link in the mail to {email}: {text!r}"
    return found.group(0)
