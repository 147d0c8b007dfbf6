"""When to poll next: never before ``interval``, on the server's tick when it says when
that is, later after failures, and never before a Retry-After."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

MAX_FAILURE_GAP = 60.0  # seconds: the longest gap that repeated failures stretch to


@dataclass(frozen=True)
class TickGrid:
    """The server's tick boundaries in local time: ``anchor + k * period``."""

    anchor: float
    period: float

    def next_boundary(self, at_or_after: float) -> float:
        steps: int = math.ceil((at_or_after - self.anchor) / self.period - 1e-9)
        return self.anchor + steps * self.period


def failure_gap(interval: float, consecutive_failures: int) -> float:
    """The gap between polls after that many failed polls in a row: doubling, capped."""
    if consecutive_failures <= 0:
        return interval
    return max(interval, min(MAX_FAILURE_GAP, interval * 2.0 ** min(consecutive_failures, 16)))


def next_poll_at(
    *,
    last_start: float,
    interval: float,
    consecutive_failures: int,
    not_before: float,
    grid: TickGrid | None,
    align: bool,
    spread: float,
    rng: random.Random,
) -> float:
    """Local unix time of the next poll.

    Aligned (the default, when the server gave a tick grid): at least ``interval`` after the
    last poll started, then the first tick boundary at or after that, plus a random spread
    in [0, spread] so that many clients do not arrive in the same millisecond. Otherwise the
    plain fixed interval, as the seed client did.
    """
    earliest = max(last_start + failure_gap(interval, consecutive_failures), not_before)
    if not (align and grid is not None):
        return earliest
    return grid.next_boundary(earliest) + rng.uniform(0.0, spread)
