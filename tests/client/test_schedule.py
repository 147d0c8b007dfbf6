"""Poll scheduling as pure functions of time: alignment, spread, failures, Retry-After."""

from __future__ import annotations

import math
import random

from client.schedule import MAX_FAILURE_GAP, TickGrid, failure_gap, next_poll_at

GRID = TickGrid(anchor=0.0, period=3.0)


def schedule(last_start: float, **overrides: object) -> float:
    arguments: dict[str, object] = {
        "last_start": last_start,
        "interval": 2.0,
        "consecutive_failures": 0,
        "not_before": 0.0,
        "grid": GRID,
        "align": True,
        "spread": 0.0,
        "rng": random.Random(0),
    }
    arguments.update(overrides)
    return next_poll_at(**arguments)  # type: ignore[arg-type]


def test_aligned_poll_waits_the_interval_then_for_the_next_tick() -> None:
    assert schedule(3.1) == 6.0  # 5.1 is mid-tick: the price cannot change before 6
    assert schedule(4.0) == 6.0  # exactly on a boundary
    assert schedule(0.5) == 3.0


def test_spread_is_added_after_the_boundary() -> None:
    rng = random.Random(3)
    times = [schedule(3.1, spread=0.25, rng=rng) for _ in range(200)]
    assert all(6.0 <= t <= 6.25 for t in times)
    assert max(times) - min(times) > 0.2  # really spread


def test_without_alignment_or_hint_the_fixed_interval_is_kept() -> None:
    assert schedule(3.1, align=False) == 5.1
    assert schedule(3.1, grid=None) == 5.1


def test_failures_stretch_the_gap_up_to_a_cap_and_reset() -> None:
    assert [failure_gap(2.0, n) for n in range(6)] == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0]
    assert failure_gap(2.0, 50) == MAX_FAILURE_GAP
    assert failure_gap(120.0, 3) == 120.0  # never shorter than the interval


def test_retry_after_is_a_floor_on_the_next_poll() -> None:
    assert schedule(3.1, not_before=10.0, align=False) == 10.0
    assert schedule(3.1, not_before=10.0) == 12.0


def test_grid_boundaries() -> None:
    grid = TickGrid(anchor=1.5, period=3.0)
    assert grid.next_boundary(1.5) == 1.5
    assert grid.next_boundary(1.6) == 4.5
    assert grid.next_boundary(-10.0) == -10.5 + 3.0


def simulate(align: bool, polls: int = 300) -> tuple[float, float]:
    """Requests per observed price change and mean delay from tick start to observation,
    for a client at the defaults (2 s interval, 0.25 s spread) against 3 s ticks."""
    rng = random.Random(11)
    now, last_tick, changes, delays = 0.37, None, 0, []
    for _ in range(polls):
        tick = math.floor(now / 3.0)
        if last_tick is not None and tick != last_tick:
            changes += 1
            delays.append(now - tick * 3.0)
        last_tick = tick
        now = schedule(now, align=align, spread=0.25, rng=rng)
    return polls / changes, sum(delays) / len(delays)


def test_alignment_makes_about_one_request_per_price_change() -> None:
    aligned_ratio, aligned_delay = simulate(align=True)
    fixed_ratio, fixed_delay = simulate(align=False)
    assert aligned_ratio < 1.05 and aligned_delay <= 0.25
    assert fixed_ratio > 1.4 and fixed_delay > 0.5  # the seed's fixed 2 s loop
