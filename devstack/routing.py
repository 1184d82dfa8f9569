"""API Gateway's routing for the local server (devstack/serve.py).

chalice local matches every path segment singly; API Gateway also has a greedy last segment,
``/files/{path+}`` (one or more segments, captured as ``path``): ``GreedyRouteMatcher`` adds it,
and concrete and single-segment routes keep priority over it. chalice local answers an unknown
route with 403 "Missing Authentication Token", as API Gateway does by default; our Terraform turns
that gateway response into a 404 envelope, and so does ``Gateway``.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlparse

from chalice.app import Chalice
from chalice.config import Config
from chalice.local import LambdaEventConverter, LocalGateway, MatchResult, RouteMatcher

from chalicelib import errors

_GREEDY = re.compile(r"\{(\w+)\+\}")


def _captures(route: str, parts: list[str]) -> dict[str, str] | None:
    """The path parameters if the path ``parts`` (its segments) match ``route``, else None."""
    patterns = route.split("/")
    captured: dict[str, str] = {}
    greedy = _GREEDY.fullmatch(patterns[-1])
    if greedy:
        patterns.pop()
        rest = "/".join(parts[len(patterns) :])
        if not rest:
            return None
        captured[greedy[1]] = rest
        parts = parts[: len(patterns)]
    if len(parts) != len(patterns):
        return None
    for segment, pattern in zip(parts, patterns, strict=True):
        if pattern.startswith("{") and pattern.endswith("}"):
            captured[pattern[1:-1]] = segment
        elif segment != pattern:
            return None
    return captured


def _greedy_last(route: str) -> tuple[int, int]:
    """Sort key: plain routes first (in chalice's order), then greedy ones, deepest first."""
    return (1, -route.count("/")) if _GREEDY.fullmatch(route.rsplit("/", 1)[-1]) else (0, 0)


class GreedyRouteMatcher(RouteMatcher):
    """chalice's RouteMatcher, plus API Gateway's greedy last segment ``{name+}``."""

    def __init__(self, route_urls: list[str]) -> None:
        super().__init__(route_urls)  # sorted: '/foo/bar' before '/foo/{capture}'
        self.route_urls.sort(key=_greedy_last)  # a stable sort: that order stays

    def match_route(self, url: str) -> MatchResult:
        parsed = urlparse(url)
        path = parsed.path
        if path != "/" and path.endswith("/"):  # API Gateway drops a trailing slash
            path = path[:-1]
        parts = path.split("/")
        for route in self.route_urls:
            captured = _captures(route, parts)
            if captured is not None:
                return MatchResult(route, captured, parse_qs(parsed.query, keep_blank_values=True))
        raise ValueError(f"No matching route found for: {url}")


class Gateway(LocalGateway):
    """chalice's LocalGateway, routing with ``GreedyRouteMatcher``; no route is a 404 envelope."""

    def __init__(self, app_object: Chalice, config: Config) -> None:
        super().__init__(app_object, config)
        self.event_converter = LambdaEventConverter(
            GreedyRouteMatcher(list(app_object.routes)), app_object.api.binary_types
        )

    def _generate_lambda_event(
        self, method: str, path: str, headers: dict[str, Any], body: bytes | None
    ) -> dict[str, Any]:
        try:
            event: dict[str, Any] = super()._generate_lambda_event(method, path, headers, body)
        except ValueError as no_route:  # API Gateway: 403 MISSING_AUTHENTICATION_TOKEN
            raise errors.NotFoundError("No route matches this method and path.") from no_route
        return event
