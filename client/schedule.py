"""When to poll next: as soon as a new price is due when the server says when that is,
never twice for the same price sooner than ``interval`` after the last poll ended, later
after failures, and never before a Retry-After."""

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
    tick_seconds: float | None = None,
    new_tick: bool = False,
) -> float:
    """Local unix time of the next poll.

    ``last_end`` is when the last poll *ended*, its retries and their waits included: a
    poll that took long (a Retry-After, a server coming up) must not make the next one
    fire at once and fetch the price it just got.

    Aligned (the default, when the server said when its next price is due,
    ``next_tick_at`` in local time, and how long its ticks last, ``tick_seconds``): at
    the next price, plus a random spread in [0, spread] so that many clients do not
    arrive in the same millisecond. A new tick since the last poll is reason enough to
    poll: when the last poll brought one (``new_tick``) and ticks last at least
    ``interval`` (one poll a tick is then no more often than the interval asks), the next
    tick is asked for as soon as it is due, even sooner than ``interval`` after the last
    poll (a client started late in a tick would otherwise see its next prices late). The
    interval guards against asking twice for the same tick: after a poll that brought
    nothing new, after failures, or with ticks shorter than it, the next poll is at least
    ``interval`` after the last, and not before the next price. When the interval has
    already carried past that moment, a newer price is out: poll then, rather than wait
    for a later one and skip it. Not aligned: the plain fixed interval, as the seed
    client did.
    """
    earliest = max(last_end + failure_gap(interval, consecutive_failures), not_before)
    if not align or next_tick_at is None:
        return earliest
    at_tick = next_tick_at + rng.uniform(0.0, spread)
    if (
        new_tick
        and not consecutive_failures
        and tick_seconds is not None
        and tick_seconds >= interval
    ):
        return max(at_tick, not_before)
    return max(earliest, at_tick)
