"""The price model: determinism, one price per tick, the band and the per-tick bound."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from service.feed import HISTORY_MAX, PriceFeed
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


def test_feed_maps_time_to_ticks_and_serves_one_quote_per_tick() -> None:
    feed = PriceFeed(PriceModel("feed", SYMBOLS), list(SYMBOLS), 3.0)
    quote = feed.quote("BTC", 3000.1)
    assert quote.tick == 1000
    assert (quote.updated_at, quote.next_update_at) == (3000.0, 3003.0)
    assert feed.quote("BTC", 3002.99) is quote
    later = feed.quote("BTC", 3003.0)
    assert later.tick == 1001
    assert quote.price == round(quote.price, 2)


def test_feed_reports_each_new_tick_once_and_never_moves_back() -> None:
    seen: list[int] = []
    feed = PriceFeed(PriceModel("feed", SYMBOLS), list(SYMBOLS), 3.0, lambda q: seen.append(q.tick))
    for now in (30.0, 31.0, 33.5, 31.0, 36.0):
        feed.quote("BTC", now)
    assert seen == [10, 11, 12]
    assert feed.quote("BTC", 36.0).tick == 12


def test_history_is_oldest_first_ends_at_the_current_tick_and_is_bounded() -> None:
    feed = PriceFeed(PriceModel("feed", SYMBOLS), list(SYMBOLS), 3.0)
    history = feed.history("ETH", 300.0, 5)
    assert [q.tick for q in history] == [96, 97, 98, 99, 100]
    assert history[-1] == feed.quote("ETH", 300.0)
    with pytest.raises(ValueError, match="limit"):
        feed.history("ETH", 300.0, HISTORY_MAX + 1)
