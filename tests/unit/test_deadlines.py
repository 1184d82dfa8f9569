"""A request's deadline, the calls bounded by it, and the lease that outlives it."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import pytest

from chalicelib.config import Settings
from chalicelib.errors import ConfigError
from chalicelib.idempotency import Record, State
from chalicelib.service import DEADLINE_MARGIN_SECONDS, Deadline, DeadlineReachedError, before

SECRET = "j" * 40


def settings(**env: str) -> Settings:
    return Settings.from_env({"INSTANODE_JWT_SECRET": SECRET, **env})


class LambdaContext:
    """What Lambda hands a function: the time it has left."""

    def __init__(self, remaining_ms: float) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> float:
        return self.remaining_ms


def test_from_env_defaults_the_api_timeout_to_28_and_the_lease_to_60() -> None:
    s = settings()
    assert (s.api_timeout_seconds, s.provisioning_lease_seconds) == (28, 60)


@pytest.mark.parametrize("lease", ["28", "10"])
def test_from_env_rejects_a_lease_not_longer_than_the_api_timeout(lease: str) -> None:
    with pytest.raises(ConfigError, match="LEASE"):
        settings(INSTANODE_PROVISIONING_LEASE_SECONDS=lease)


def test_from_env_rejects_a_malformed_api_timeout() -> None:
    with pytest.raises(ConfigError, match="INSTANODE_API_TIMEOUT_SECONDS"):
        settings(INSTANODE_API_TIMEOUT_SECONDS="soon")


def test_deadline_without_a_lambda_context_is_the_api_timeout_less_the_margin() -> None:
    left = Deadline.of(settings(INSTANODE_API_TIMEOUT_SECONDS="20")).left()
    assert 20 - DEADLINE_MARGIN_SECONDS - 0.5 < left <= 20 - DEADLINE_MARGIN_SECONDS


def test_deadline_follows_a_lambda_context_with_less_time_left() -> None:
    left = Deadline.of(settings(), LambdaContext(9_000)).left()
    assert 9 - DEADLINE_MARGIN_SECONDS - 0.5 < left <= 9 - DEADLINE_MARGIN_SECONDS


def test_deadline_keeps_the_api_timeout_when_the_context_has_more_time() -> None:
    left = Deadline.of(settings(), LambdaContext(900_000)).left()  # chalice local's 15 min
    assert left <= 28 - DEADLINE_MARGIN_SECONDS


def test_before_returns_what_a_quick_call_returns() -> None:
    assert before(Deadline(time.monotonic() + 5), lambda: 42) == 42


def test_before_raises_the_calls_own_error_even_a_timeout() -> None:
    def times_out() -> None:
        raise TimeoutError("the driver's own socket timeout")

    with pytest.raises(TimeoutError, match="driver"):
        before(Deadline(time.monotonic() + 5), times_out)


def test_before_gives_up_at_the_deadline_and_hands_the_late_call_over() -> None:
    release, ended = threading.Event(), threading.Event()
    seen: list[Future[str]] = []

    def slow() -> str:
        release.wait(5)
        return "made"

    def late(call: Future[str]) -> None:
        seen.append(call)
        ended.set()

    started = time.monotonic()
    with pytest.raises(DeadlineReachedError):
        before(Deadline(started + 0.2), slow, late)
    assert time.monotonic() - started < 1 and not seen
    release.set()
    assert ended.wait(5) and seen[0].result() == "made"


@pytest.mark.parametrize(
    ("state", "holder", "lease_until", "abandoned"),
    [
        (State.IN_PROGRESS, "r1", 99, True),
        (State.IN_PROGRESS, "r1", 100, False),  # lease still running
        (State.IN_PROGRESS, "", 99, False),  # no provision's claim: taken over by the put
        (State.COMPLETED, "r1", 99, False),
    ],
)
def test_record_is_abandoned_only_when_a_provisions_lease_is_over(
    state: State, holder: str, lease_until: int, abandoned: bool
) -> None:
    record = Record(state, "h", 0, {}, lease_until=lease_until, holder=holder)
    assert record.abandoned(100) is abandoned
