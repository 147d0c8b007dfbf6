"""Poll scheduling as a pure function of time: from the end of the last poll, tick-aligned,
spread, stretched by failures, floored by Retry-After."""

from __future__ import annotations

import math
import random

from client.schedule import MAX_FAILURE_GAP, failure_gap, next_poll_at

PERIOD = 3.0


def schedule(last_end: float, **overrides: object) -> float:
    arguments: dict[str, object] = {
        "last_end": last_end,
        "interval": 2.0,
        "consecutive_failures": 0,
        "not_before": 0.0,
        "next_tick_at": (math.floor(last_end / PERIOD) + 1) * PERIOD,
        "align": True,
        "spread": 0.0,
        "rng": random.Random(0),
    }
    arguments.update(overrides)
    return next_poll_at(**arguments)  # type: ignore[arg-type]


def test_aligned_poll_waits_for_the_next_price() -> None:
    assert schedule(3.1) == 6.0  # 5.1 is mid-tick: the price cannot change before 6
    assert schedule(0.5) == 3.0


def test_an_interval_that_outlasts_the_tick_polls_when_it_ends() -> None:
    # The poll ended at 4.1 (after a Retry-After) with the price due at 6: 6.1, not 9.
    assert schedule(4.1, next_tick_at=6.0) == 6.1
    assert schedule(4.1, next_tick_at=6.0, interval=0.5) == 6.0


def test_spread_is_added_after_the_boundary() -> None:
    rng = random.Random(3)
    times = [schedule(3.1, spread=0.25, rng=rng) for _ in range(200)]
    assert all(6.0 <= t <= 6.25 for t in times)
    assert max(times) - min(times) > 0.2  # really spread


def test_without_alignment_or_hint_the_fixed_interval_is_kept() -> None:
    assert schedule(3.1, align=False) == 5.1
    assert schedule(3.1, next_tick_at=None) == 5.1


def test_failures_stretch_the_gap_up_to_a_cap_and_reset() -> None:
    assert [failure_gap(2.0, n) for n in range(6)] == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0]
    assert failure_gap(2.0, 50) == MAX_FAILURE_GAP
    assert failure_gap(120.0, 3) == 120.0  # never shorter than the interval
    assert schedule(10.0, consecutive_failures=2, next_tick_at=3.0) == 18.0


def test_retry_after_is_a_floor_on_the_next_poll() -> None:
    assert schedule(3.1, not_before=10.0, align=False) == 10.0
    assert schedule(3.1, not_before=10.0, next_tick_at=6.0) == 10.0


def test_a_new_tick_is_asked_for_as_soon_as_it_is_due_whatever_the_interval() -> None:
    # Started 2.6 s into a tick: the next price at 3.0, not 2 s after this poll.
    assert schedule(2.62, tick_seconds=PERIOD, new_tick=True) == 3.0
    assert schedule(2.62, tick_seconds=PERIOD, new_tick=True, not_before=5.0) == 5.0


def test_the_interval_still_guards_against_asking_twice_for_the_same_tick() -> None:
    # The last poll brought nothing new (a clock ahead of the server's): the interval.
    assert schedule(2.62, tick_seconds=PERIOD, new_tick=False) == 4.62
    # Ticks shorter than the interval: one poll a tick would be more often than asked.
    assert schedule(2.62, tick_seconds=1.0, new_tick=True, next_tick_at=3.0) == 4.62
    assert schedule(2.62, tick_seconds=PERIOD, new_tick=True, consecutive_failures=1) == 6.62


def simulate(
    align: bool, polls: int = 300, retry_after_every: int = 0, start: float = 0.37
) -> tuple[float, float, int, int, list[float]]:
    """A client at the defaults (2 s interval, 0.25 s spread) against 3 s ticks, each poll
    taking 20 ms; every ``retry_after_every``-th poll first meets a 429 with Retry-After: 4.
    Returns requests per observed price change, the mean delay from tick start to
    observation, the answers that repeated the last tick (304s), and the ticks skipped
    while the server answered."""
    rng = random.Random(11)
    now, last_tick, changes, delays, repeats, skipped = start, None, 0, [], 0, 0
    requests = 0
    for poll in range(1, polls + 1):
        requests += 1
        if retry_after_every and poll % retry_after_every == 0:
            now += 0.02 + 4.0  # the 429, then its Retry-After
            requests += 1
            last_tick = None  # ticks that passed during a refusal are not the client's skips
        now += 0.02
        tick = math.floor(now / PERIOD)
        if last_tick is not None and tick == last_tick:
            repeats += 1
        elif last_tick is not None:
            changes += 1
            delays.append(now - tick * PERIOD)
            skipped += tick - last_tick - 1
        new_tick = tick != last_tick
        last_tick = tick
        now = schedule(
            now,
            align=align,
            spread=0.25,
            rng=rng,
            next_tick_at=(tick + 1) * PERIOD,
            tick_seconds=PERIOD,
            new_tick=new_tick,
        )
    return requests / max(changes, 1), sum(delays) / len(delays), repeats, skipped, delays


def test_alignment_makes_one_request_per_price_change() -> None:
    aligned_ratio, aligned_delay, repeats, skipped, _ = simulate(align=True)
    fixed_ratio, fixed_delay, _, _, _ = simulate(align=False)
    assert aligned_ratio < 1.01 and aligned_delay <= 0.3 and repeats == 0 and skipped == 0
    assert fixed_ratio > 1.4 and fixed_delay > 0.5  # the seed's fixed 2 s loop


def test_started_late_in_a_tick_every_price_after_the_first_is_seen_on_time() -> None:
    for start in (2.6, 2.9, 1.1, 0.01):
        _, _, repeats, skipped, delays = simulate(align=True, polls=20, start=start)
        assert max(delays) <= 0.5, (start, delays[:3])  # the first ones too
        assert repeats == 0 and skipped == 0  # and no more requests for it


def test_after_a_long_poll_the_next_poll_neither_repeats_nor_skips_a_tick() -> None:
    _, _, repeats, skipped, _ = simulate(align=True, retry_after_every=5)
    assert repeats == 0 and skipped == 0
