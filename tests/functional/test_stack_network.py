"""A stack's services reach each other by ``service://<name>`` from inside their containers
(through the API, local backend, real buildah/podman): the URL resolves to the other service's
host port at ``host.containers.internal``, which the worker publishes on podman's bridge; a
service that is not exposed is published there only, not on the host's loopback."""

from __future__ import annotations

import secrets

import pytest
import requests
from chalice.test import Client

from chalicelib import deps
from tests.functional import test_stacks
from tests.functional.test_deploys import get_app
from tests.functional.test_local_backend import fetcher
from tests.functional.test_stacks import new_stack, shell_site, wait_stack

base_image = test_stacks.base_image  # fixtures, shared (not copied)
stacks = test_stacks.stacks

MANIFEST = """
services:
  web:
    env: {API_URL: "service://api"}
  api:
    port: 9000
    expose: false
"""


def test_a_service_fetches_from_another_at_its_service_url(
    client: Client, stacks: list[str]
) -> None:
    body = f"api-says-{secrets.token_hex(4)}"
    api = shell_site(f"echo {body} > /www/index.html", port=9000)
    started = new_stack(client, MANIFEST, {"web": fetcher(), "api": api})
    assert started.status == 202, started
    slug = started.body["slug"]
    stacks.append(slug)

    healthy = wait_stack(client, slug, None, "healthy", "failed")

    assert healthy["status"] == "healthy", healthy
    fetched = get_app(healthy["stack_url"], "/cgi-bin/api")  # web asks api, now
    assert "200 OK" in fetched and body in fetched, fetched
    backend = deps.get_deploy_backend()
    api_url = backend.internal_url_of(f"{slug}-api")
    assert api_url.startswith("http://host.containers.internal:")
    api = healthy["services"][1]
    assert (api["url"], api["internal_url"]) == (None, api_url)
    with pytest.raises(requests.ConnectionError):  # private: not on the host's loopback
        get_app(backend.url_of(f"{slug}-api"))
