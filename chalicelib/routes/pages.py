"""The human-facing pages of the claim, sign-in and CLI-approval flows.

Static HTML plus one script (chalicelib/pages): the server puts no data into them; pages.js reads
the query string and calls the JSON API, so nothing a user or the API sends becomes markup.
"""

from __future__ import annotations

import functools
from pathlib import Path

from chalice.app import Blueprint, Response

bp = Blueprint(__name__)
PAGES = Path(__file__).parent.parent / "pages"
STYLE_SLOT = "<!-- pages.css -->"  # each page's <head> gets the one shared stylesheet here
HTML = "text/html; charset=utf-8"
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the claim page's URL carries an upgrade token
    "Cache-Control": "no-store",
}


@functools.cache
def _read(name: str) -> str:
    text = (PAGES / name).read_text(encoding="utf-8")
    if name.endswith(".html"):
        css = (PAGES / "pages.css").read_text(encoding="utf-8")
        text = text.replace(STYLE_SLOT, f"<style>\n{css}</style>")
    return text


def _serve(name: str, content_type: str = HTML) -> Response:
    return Response(_read(name), headers={**HEADERS, "Content-Type": content_type})


@bp.route("/start", methods=["GET"])
def start() -> Response:
    return _serve("start.html")


@bp.route("/login", methods=["GET"])
def login() -> Response:
    return _serve("login.html")


@bp.route("/dashboard", methods=["GET"])
def dashboard() -> Response:
    return _serve("dashboard.html")


@bp.route("/cli/approve", methods=["GET"])
def cli_approve() -> Response:
    return _serve("cli-approve.html")


@bp.route("/assets/pages.js", methods=["GET"])
def pages_js() -> Response:
    return _serve("pages.js", "application/javascript")
