"""The price feed: wall-clock time to ticks, one quote per tick, new ticks reported once and
in order, whatever the threads do."""

from __future__ import annotations

import random
import re
import sys
import threading
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.feed import HISTORY_MAX, TICK_PATTERN, PriceFeed, parse_tick
from service.prices import PriceModel

SYMBOLS = {"BTC": 100.0, "ETH": 50.0}


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


@pytest.fixture
def frequent_thread_switches() -> Iterator[None]:
    # Hand the GIL over every microsecond, so that threads interleave inside quote().
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


@pytest.mark.usefixtures("frequent_thread_switches")
def test_threads_straddling_tick_boundaries_never_report_a_tick_going_back() -> None:
    seen: list[int] = []
    rng = random.Random(5)
    for _ in range(20):
        feed = PriceFeed(
            PriceModel("feed", SYMBOLS), list(SYMBOLS), 1.0, lambda q: seen.append(q.tick)
        )
        # Each thread's clock reads a moment across a few boundaries: exactly what requests
        # arriving around a tick turn see.
        moments = [rng.uniform(10.0, 14.0) for _ in range(64)]
        barrier = threading.Barrier(len(moments))

        def ask(now: float, feed: PriceFeed = feed, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            feed.quote("BTC", now)

        threads = [threading.Thread(target=ask, args=(now,)) for now in moments]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        run, seen[:] = list(seen), []
        assert run == sorted(set(run)), f"new ticks reported out of order: {run}"
        assert run[-1] == int(max(moments))


@given(st.text(max_size=20))
def test_a_tick_named_by_a_client_is_read_exactly_when_the_documented_pattern_matches_it(
    text: str,
) -> None:
    tick = parse_tick(text)
    if re.fullmatch(TICK_PATTERN.strip("^$"), text, flags=re.ASCII):
        assert tick == int(text)
    else:
        assert tick is None


@pytest.mark.parametrize("text", ["", "-1", "+1", " 1", "1 ", "١٢", "1" * 16, "1e3", "0x1"])
def test_what_is_not_a_tick_is_none(text: str) -> None:
    assert parse_tick(text) is None
