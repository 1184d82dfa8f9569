"""The pages as served: security headers, and scripts only from files (the CSP allows no other)."""

from __future__ import annotations

import re

import pytest
import requests

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SAFETY = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
PAGES = ["/start?t=x", "/login", "/dashboard", "/cli/approve?session=x"]


@pytest.mark.parametrize("path", PAGES)
def test_serve_page_with_csp_and_no_inline_script(api: str, path: str) -> None:
    resp = requests.get(f"{api}{path}", timeout=10)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    assert {k: resp.headers.get(k) for k in SAFETY} == SAFETY
    scripts = re.findall(r"<script\b[^>]*>", resp.text, re.IGNORECASE)
    assert scripts == ['<script src="/assets/pages.js" defer>']


def test_serve_script_as_javascript(api: str) -> None:
    resp = requests.get(f"{api}/assets/pages.js", timeout=10)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/javascript"
    assert {k: resp.headers.get(k) for k in SAFETY} == SAFETY
