"""The S3 storage limit (10 MB anonymous) on the live stack: how far past it a tenant gets by
presigning and uploading as fast as it can, with the quota pass at a fixed interval beside it
(5 s here; ``INSTANODE_QUOTA_TEST_INTERVAL=60`` measures ``make run``'s).

S3 has no prefix quota, so the bound is what the presign route signs: a PUT URL carries exactly
its signed ``content_length`` (the S3-only server refuses any other size), a POST form at most
its ``content-length-range``, and every upload URL's bytes are reserved until it expires. So
the URLs of one prefix never carry more than the limit together, whenever they are used, and
the quota pass has nothing left to catch: the bound is 0 bytes, enforced at presign time.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from chalicelib import deps
from chalicelib.jobs.quota import run_quota_job
from chalicelib.models import Backend, BackendRef, Kind
from chalicelib.providers.storage import StorageProvider
from chalicelib.tiers import default_tiers
from devstack.stack import Stack
from tests.conftest import fresh_ip
from tests.integration.conftest import provision
from tests.security.quota_bound import measure_bound

pytestmark = pytest.mark.integration
INTERVAL = float(os.environ.get("INSTANODE_QUOTA_TEST_INTERVAL", "5"))
CHUNK = 1024 * 1024
LIMIT = default_tiers()["anonymous"].limits(Kind.STORAGE).storage_bytes  # 10 MB


@pytest.fixture
def stack_env(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process configured as the API server is: the quota job runs here."""
    for key, value in stack.env().items():
        monkeypatch.setenv(key, value)
    deps.reset()
    yield
    deps.reset()


def new_storage(api: str) -> tuple[str, Callable[[], int]]:
    """A fresh anonymous prefix: its token and a function measuring its usage on S3."""
    r = provision(api, "/storage/new", name="quota", ip=fresh_ip())
    assert r.status_code == 201, r.text
    body = r.json()
    backend: Backend = deps.get_settings().backends_for(Kind.STORAGE)[0]
    ref = BackendRef(backend.name, body["prefix"], "")
    return body["token"], lambda: StorageProvider().usage(backend, ref)


def presign(api: str, token: str, **body: Any) -> requests.Response:
    return requests.post(f"{api}/storage/{token}/presign", json=body, timeout=30)


def flat_out_uploader(api: str, token: str) -> Callable[[], bool]:
    """One 1 MiB object per call, presigned then uploaded; False once the presign is refused."""
    names = (f"w{i}.bin" for i in itertools.count())
    data = os.urandom(CHUNK)

    def write() -> bool:
        r = presign(api, token, operation="PUT", key=next(names), content_length=CHUNK)
        if r.status_code == 403:
            assert r.json()["error"] == "storage_quota_exceeded", r.text
            return False
        assert r.status_code == 200, r.text
        assert requests.put(r.json()["url"], data=data, timeout=60).status_code == 200
        return True

    return write


def test_tenant_uploading_flat_out_never_passes_the_limit(api: str, stack_env: None) -> None:
    token, usage = new_storage(api)
    bound = measure_bound(
        "storage",
        flat_out_uploader(api, token),
        usage,
        lambda: None if run_quota_job().failed == 0 else pytest.fail("quota pass failed"),
        LIMIT,
        INTERVAL,
        timeout=max(60.0, 3 * INTERVAL),
    )
    assert bound.over_bytes == 0 and bound.seconds == 0.0
    assert usage() == LIMIT - LIMIT % CHUNK


def test_urls_minted_before_any_upload_carry_no_more_than_the_limit(
    api: str, stack_env: None
) -> None:
    """The attack reservations stop: mint every URL the rate limit allows, each for the whole
    quota, before uploading anything; then use each one, with one byte more as well."""
    token, usage = new_storage(api)
    minted = [
        presign(api, token, operation=op, key=f"k{i}.bin", content_length=LIMIT)
        for i, op in zip(range(30), itertools.cycle(["PUT", "POST"]), strict=False)
    ]
    granted = [r.json() for r in minted if r.status_code == 200]
    assert len(granted) == 1, [r.text for r in minted]
    assert {r.json()["error"] for r in minted if r.status_code != 200} == {"storage_quota_exceeded"}
    url = granted[0]["url"]
    assert requests.put(url, data=b"\0" * (LIMIT + 1), timeout=60).status_code == 403
    assert requests.put(url, data=b"\0" * LIMIT, timeout=60).status_code == 200
    assert requests.put(url, data=b"\0" * LIMIT, timeout=60).status_code == 200  # same key
    print(
        f"storage: {len(minted)} URLs asked for {len(minted) * LIMIT} B, one granted; "
        f"stored {usage()} B of {LIMIT} B, {max(0, usage() - LIMIT)} B past it"
    )
    assert usage() == LIMIT
