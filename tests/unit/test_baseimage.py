"""Which base images a Dockerfile names, and how a recipe's tags follow the built version
(no podman here: tests/functional/test_base_images.py builds and runs the images)."""

from __future__ import annotations

import io

import pytest

from chalicelib.deploy.baseimage import (
    BUSYBOX_IMAGE,
    RECIPES,
    BaseImageError,
    Prefixed,
    Recipe,
    base_images_in,
    canonical,
    from_references,
)

OFFERED = ["python:3.11-slim", "python:3-slim", "node:18", "debian:bookworm-slim", BUSYBOX_IMAGE]


def recipe(key: str) -> Recipe:
    return next(r for r in RECIPES if r.key == key)


def test_from_references_skips_stages_flags_and_args() -> None:
    dockerfile = """\
# syntax=docker/dockerfile:1
ARG BASE=python:3.11-slim
FROM --platform=linux/amd64 node:18 AS Assets
RUN npm ci
from python:3.11-slim as build
COPY --from=assets /app/dist /dist
COPY --from=debian:bookworm-slim /etc/os-release /x
FROM ${BASE}
FROM build
COPY --from=0 /a /b
FROM scratch
FROM \\
    docker.io/library/node:18
"""
    assert from_references(dockerfile) == [
        "node:18",
        "python:3.11-slim",
        "debian:bookworm-slim",
        "docker.io/library/node:18",
    ]


def test_base_images_in_keeps_only_offered_images_in_any_spelling() -> None:
    dockerfile = (
        "FROM docker.io/library/python:3.11-slim AS deps\n"
        "FROM library/node:18\n"
        "FROM python:3.12-slim\n"  # not offered here: buildah's pull fails and is classified
        "FROM localhost/instanode/busybox\n"
        "FROM deps\n"
        "FROM ghcr.io/example/app:1\n"
    )
    assert base_images_in(dockerfile, OFFERED) == [
        "docker.io/library/python:3.11-slim",
        "library/node:18",
        "localhost/instanode/busybox",
    ]


def test_base_images_in_a_dockerfile_without_from_is_empty() -> None:
    assert base_images_in("RUN true\n", OFFERED) == []
    assert base_images_in("FROM python:3.11-slim\n", []) == []


@pytest.mark.parametrize(
    ("reference", "name"),
    [
        ("python:3.11-slim", "python:3.11-slim"),
        ("docker.io/library/python:3.11-slim", "python:3.11-slim"),
        ("index.docker.io/library/node:18", "node:18"),
        ("docker.io/node:18", "node:18"),
        ("library/debian:12-slim", "debian:12-slim"),
        ("localhost/python:3", "python:3"),
        ("debian", "debian:latest"),
        ("instanode/busybox", BUSYBOX_IMAGE),
        (BUSYBOX_IMAGE, BUSYBOX_IMAGE),
        ("ghcr.io/example/app:1", "ghcr.io/example/app:1"),
        ("docker.io/bitnami/redis:7", "docker.io/bitnami/redis:7"),
    ],
)
def test_canonical_names(reference: str, name: str) -> None:
    assert canonical(reference) == name


def test_tags_follow_the_version_the_image_runs() -> None:
    assert recipe("python-slim").names("3.11.2", "bookworm") == (
        "python:3.11-slim",
        "python:3-slim",
    )
    assert recipe("python").names("3.13.5", "trixie") == ("python:3.13", "python:3")
    assert recipe("node-slim").names("18.20.4", "bookworm") == ("node:18-slim",)
    assert recipe("node").names("20.19.2", "trixie") == ("node:20",)
    assert recipe("debian-slim").names("12.11", "bookworm") == (
        "debian:bookworm-slim",
        "debian:12-slim",
    )


def test_a_version_that_cannot_be_read_names_nothing() -> None:
    with pytest.raises(BaseImageError):
        recipe("node").names("", "bookworm")


def test_prefixed_marks_every_line_of_the_build_output() -> None:
    log = io.StringIO()
    out = Prefixed(log, "[instanode] ")
    out.write("I: downloading packages\nI: extracting")
    out.write(" archives\n")
    assert log.getvalue() == (
        "[instanode] I: downloading packages\n[instanode] I: extracting archives\n"
    )
