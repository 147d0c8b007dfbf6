"""Retries within a poll, with tenacity's sleep replaced by a recorder: no real waiting."""

from __future__ import annotations

import random
import threading

import pytest

from client.api import FatalError, PriceClient, RetryableError
from client.retry import Interrupted, RetryEvent, RetryPolicy, fetch_with_retries
from tests.scripted_server import Answer, ScriptedServer, quote_body

JSON = {"Content-Type": "application/json"}
OK = Answer(200, quote_body(), JSON)


def run(script: list[Answer], policy: RetryPolicy | None = None) -> tuple[object, list[float], int]:
    slept: list[float] = []
    events: list[RetryEvent] = []
    with ScriptedServer(script) as server:
        try:
            result: object = fetch_with_retries(
                PriceClient(server.url),
                policy or RetryPolicy(),
                threading.Event(),
                events.append,
                random.Random(1),
                sleep=slept.append,
            )
        except Exception as exc:
            result = exc
        assert len(events) == len(slept)
        return result, slept, len(server.requests)


def test_transient_errors_are_retried_until_success() -> None:
    result, slept, requests = run([Answer(503), Answer(502), OK])
    assert isinstance(result, tuple) and result[1] == 3
    assert requests == 3 and len(slept) == 2


def test_retry_after_is_a_floor_on_the_wait() -> None:
    result, slept, _ = run([Answer(429, b"", {"Retry-After": "4"}), OK])
    assert isinstance(result, tuple)
    assert slept[0] >= 4.0


def test_backoff_is_full_jitter_within_a_capped_exponential() -> None:
    policy = RetryPolicy(max_attempts=8, max_wait=1000, base=0.5, cap=2.0)
    result, slept, requests = run([Answer(503)], policy)
    assert isinstance(result, RetryableError) and requests == 8
    ceilings = [0.5, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0]
    assert all(0 <= wait <= ceiling for wait, ceiling in zip(slept, ceilings, strict=True))
    assert len(set(slept)) == len(slept)  # jittered, not fixed


def test_other_client_errors_are_never_retried() -> None:
    for status in (400, 401, 404):
        result, slept, requests = run([Answer(status), OK])
        assert isinstance(result, FatalError) and requests == 1 and slept == []


def test_a_500_is_retried_at_most_once() -> None:
    result, _, requests = run([Answer(500), Answer(500), OK])
    assert isinstance(result, RetryableError) and result.status == 500 and requests == 2
    result, _, requests = run([Answer(500), Answer(503), OK])
    assert isinstance(result, tuple) and requests == 3


def test_total_time_bounds_the_retries() -> None:
    # Each wait is at least 10 s (Retry-After); a 25 s budget allows two, not a third.
    policy = RetryPolicy(max_attempts=100, max_wait=25)
    result, slept, requests = run([Answer(503, b"", {"Retry-After": "10"})], policy)
    assert isinstance(result, RetryableError)
    assert requests == 3 and sum(slept) < 25


def test_setting_stop_interrupts_the_backoff_sleep() -> None:
    stop = threading.Event()
    with ScriptedServer([Answer(503, b"", {"Retry-After": "10"})]) as server:
        timer = threading.Timer(0.2, stop.set)
        timer.start()
        with pytest.raises(Interrupted):
            fetch_with_retries(PriceClient(server.url), RetryPolicy(), stop)
        timer.join()
