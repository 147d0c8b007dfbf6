"""When to poll next: never sooner than ``interval`` after the last poll ended, never
before the next price is due when the server says when that is, later after failures, and
never before a Retry-After."""

from __future__ import annotations

import random

MAX_FAILURE_GAP = 60.0  # seconds: the longest gap that repeated failures stretch to


def failure_gap(interval: float, consecutive_failures: int) -> float:
    """The gap between polls after that many failed polls in a row: doubling, capped."""
    if consecutive_failures <= 0:
        return interval
    return max(interval, min(MAX_FAILURE_GAP, interval * 2.0 ** min(consecutive_failures, 16)))


def next_poll_at(
    *,
    last_end: float,
    interval: float,
    consecutive_failures: int,
    not_before: float,
    next_tick_at: float | None,
    align: bool,
    spread: float,
    rng: random.Random,
) -> float:
    """Local unix time of the next poll.

    ``last_end`` is when the last poll *ended*, its retries and their waits included: a
    poll that took long (a Retry-After, a server coming up) must not make the next one
    fire at once and fetch the price it just got.

    Aligned (the default, when the server said when its next price is due,
    ``next_tick_at`` in local time): at least ``interval`` after the last poll, and not
    before the next price, plus a random spread in [0, spread] so that many clients do not
    arrive in the same millisecond. When the interval has already carried past that
    moment, a newer price is out: poll then, rather than wait for a later one and skip it.
    Otherwise the plain fixed interval, as the seed client did.
    """
    earliest = max(last_end + failure_gap(interval, consecutive_failures), not_before)
    if not align or next_tick_at is None:
        return earliest
    return max(earliest, next_tick_at + rng.uniform(0.0, spread))
