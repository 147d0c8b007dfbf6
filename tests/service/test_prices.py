"""The price model: determinism, one price per tick, the band and the per-tick bound."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from service.prices import BAND, MAX_STEP, WINDOW, PriceModel

SYMBOLS = {"BTC": 100.0, "ETH": 50.0}
NOW_TICK = 598_000_000  # about the tick index of 2026 with 3 s ticks


def test_same_seed_symbol_and_tick_give_the_same_price_in_separate_models() -> None:
    first, second = PriceModel("seed", SYMBOLS), PriceModel("seed", SYMBOLS)
    ticks = [0, 1, 2047, 2048, NOW_TICK, NOW_TICK + 1]
    assert [first.exact_price("BTC", t) for t in ticks] == [
        second.exact_price("BTC", t) for t in reversed(ticks)
    ][::-1]


def test_seed_and_symbol_change_the_walk() -> None:
    model, other = PriceModel("seed", SYMBOLS), PriceModel("other", SYMBOLS)
    walk = [model.price("BTC", NOW_TICK + i) for i in range(20)]
    assert walk != [other.price("BTC", NOW_TICK + i) for i in range(20)]
    assert [model.exact_price("BTC", NOW_TICK + i) / 100 for i in range(20)] != [
        model.exact_price("ETH", NOW_TICK + i) / 50 for i in range(20)
    ]


def test_each_tick_moves_at_most_two_percent() -> None:
    model = PriceModel("bound", SYMBOLS)
    start = NOW_TICK - 5000
    prices = [model.exact_price("BTC", t) for t in range(start, start + 5000)]
    moves = [b / a for a, b in itertools.pairwise(prices)]
    assert max(moves) <= 1 + MAX_STEP + 1e-12
    assert min(moves) >= 1 / (1 + MAX_STEP) - 1e-12
    # The walk really moves: it is not a constant that trivially meets the bound.
    assert sum(1 for m in moves if abs(m - 1) > 0.002) > len(moves) // 2


def test_price_stays_in_band_and_reverts_to_base_over_a_long_uptime() -> None:
    model = PriceModel("band", SYMBOLS)
    # A year of 3 s ticks is ~10.5 M ticks; sample the whole span and beyond.
    rng = random.Random(7)
    ticks = [rng.randrange(0, 50_000_000) for _ in range(400)]
    prices = [model.exact_price("BTC", t) for t in ticks]
    assert all(100 * math.exp(-BAND) <= p <= 100 * math.exp(BAND) for p in prices)
    log_mean = sum(math.log(p / 100) for p in prices) / len(prices)
    assert abs(log_mean) < 0.03, "a multiplicative walk would drift; this one must not"
    # Spread comparable to the stationary deviation (~5.7 %), nowhere near the band edge.
    assert 0.02 < max(abs(math.log(p / 100)) for p in prices) < 0.4


def test_deviation_equals_the_moving_average_definition() -> None:
    model = PriceModel("definition", {"BTC": 100.0})
    tick = 3 * 1024 + 5  # spans block boundaries
    innovations = [model._draw_block("BTC", m // 1024)[m % 1024] for m in range(tick + 1)]
    expected = sum(0.995**k * innovations[tick - k] for k in range(WINDOW))
    assert model.deviation("BTC", tick) == pytest.approx(expected, rel=1e-9, abs=1e-12)
