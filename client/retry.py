"""Retries within one poll, with tenacity: which failures, how long to wait, when to stop."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass

from tenacity import (
    RetryCallState,
    Retrying,
    stop_after_attempt,
    stop_when_event_set,
)
from tenacity.stop import stop_base

from client.api import Fetched, Fetcher, PollError, RetryableError


class stop_before_budget(stop_base):
    """tenacity's stop_before_delay, also counting the waits already planned, so the bound
    holds however ``sleep`` passes time: stop when the next wait would end past ``budget``."""

    def __init__(self, budget: float) -> None:
        self.budget = budget

    def __call__(self, retry_state: RetryCallState) -> bool:
        spent = max(retry_state.seconds_since_start or 0.0, retry_state.idle_for)
        return spent + (retry_state.upcoming_sleep or 0.0) >= self.budget


class Interrupted(Exception):
    """The stop event was set while waiting to retry."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 10  # attempts per poll, the first included
    max_wait: float = 30.0  # seconds a poll may spend retrying
    base: float = 0.5  # the first backoff is drawn from [0, base]
    cap: float = 8.0  # no single backoff is drawn from a wider range than [0, cap]


@dataclass(frozen=True)
class RetryEvent:
    attempt: int  # the attempt that just failed, from 1
    wait: float  # seconds until the next one
    reason: str
    status: int | None
    kind: str  # a bounded metric label: http_429, timeout, connection...


def fetch_with_retries(
    client: Fetcher,
    policy: RetryPolicy,
    stop: threading.Event,
    on_retry: Callable[[RetryEvent], None] = lambda _event: None,
    rng: random.Random | None = None,
    sleep: Callable[[float], None] | None = None,
) -> tuple[Fetched, int]:
    """Fetch, retrying what is worth retrying; return the result and the attempts it took.

    Retried: connection errors, timeouts, 429 and 502-504; a 500 once. Waits are
    exponential with full jitter, capped, never shorter than the server's Retry-After.
    Bounded by ``max_attempts`` and by ``max_wait`` (a wait that would end past it is not
    started). Raises the last PollError when giving up (its ``attempts`` set to how many
    were made), or Interrupted when ``stop`` is set.
    ``sleep`` replaces the stop-aware wait (tests pass one that only records).
    """
    rng = rng or random.Random()
    seen_500 = False

    def should_retry(state: RetryCallState) -> bool:
        nonlocal seen_500
        assert state.outcome is not None
        error = state.outcome.exception()
        if not isinstance(error, RetryableError):
            return False
        if error.status == 500:
            if seen_500:
                return False
            seen_500 = True
        return True

    def wait(state: RetryCallState) -> float:
        assert state.outcome is not None
        error = state.outcome.exception()
        ceiling = min(policy.cap, policy.base * 2 ** (state.attempt_number - 1))
        jittered = rng.uniform(0, ceiling)
        floor = error.retry_after if isinstance(error, RetryableError) else 0.0
        return max(jittered, floor)

    def before_sleep(state: RetryCallState) -> None:
        assert state.outcome is not None and state.next_action is not None
        error = state.outcome.exception()
        assert isinstance(error, RetryableError)
        on_retry(
            RetryEvent(
                state.attempt_number,
                state.next_action.sleep,
                error.reason,
                error.status,
                error.kind,
            )
        )

    def wait_or_stop(seconds: float) -> None:
        if stop.wait(seconds):
            raise Interrupted()

    retrying = Retrying(
        stop=(
            stop_after_attempt(policy.max_attempts)
            | stop_before_budget(policy.max_wait)
            | stop_when_event_set(stop)
        ),
        wait=wait,
        retry=should_retry,
        before_sleep=before_sleep,
        sleep=sleep or wait_or_stop,
        reraise=True,
    )
    try:
        fetched = retrying(client.fetch)
    except PollError as error:
        error.attempts = retrying.statistics.get("attempt_number", 1)
        raise
    return fetched, retrying.statistics.get("attempt_number", 1)
