"""The history store on both databases it runs on (a SQLite file, Debian's PostgreSQL):
ticks written once however often they are written, and candles that say what the ticks
say whatever order and batches the ticks came in."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service import history_schema
from service.database import create_engine, upgrade
from service.history_store import CANDLE_WIDTHS, Candle, HistoryStore, Tick

START = 1_700_000_000_000 - 1_700_000_000_000 % 86_400_000  # a day's start, in ms


@pytest.fixture
def store(database_url: str) -> Iterator[HistoryStore]:
    engine = create_engine(database_url)
    upgrade(engine)
    yield HistoryStore(engine)
    engine.dispose()


def expected_candles(ticks: list[Tick], width_s: int) -> dict[tuple[str, int], Candle]:
    """What the raw ticks say of each candle: the first's price opens it, the last's
    closes it, the extremes, the count."""
    width = width_s * 1000
    grouped: dict[tuple[str, int], list[Tick]] = {}
    for tick in ticks:
        grouped.setdefault((tick.symbol, tick.start_ms - tick.start_ms % width), []).append(tick)
    candles = {}
    for key, group in grouped.items():
        group.sort(key=lambda tick: tick.start_ms)
        prices = [tick.price for tick in group]
        candles[key] = Candle(
            key[1], prices[0], max(prices), min(prices), prices[-1], len(group),
            group[0].start_ms, group[-1].start_ms,
        )  # fmt: skip
    return candles


def stored_candles(
    store: HistoryStore, symbols: set[str], width_s: int
) -> dict[tuple[str, int], Candle]:
    return {
        (symbol, candle.start_ms): candle
        for symbol in symbols
        for candle in store.candles(symbol, width_s, 0, 2**62)
    }


def test_a_tick_written_twice_is_stored_once(store: HistoryStore) -> None:
    ticks = [Tick(symbol, START + i * 3000, 3000, 100 + i) for i in range(50) for symbol in "AB"]
    assert store.record(ticks) == 100
    assert store.record(ticks[:30]) == 0  # another replica writing the same ticks
    assert store.record([*ticks[90:], Tick("A", START + 150000, 3000, 1.5)]) == 1
    assert len(store.ticks("A", 0, 2**62, 1000)) == 51
    (minute,) = store.candles("A", 60, START + 120_000, START + 180_000)
    assert (minute.ticks, minute.close) == (11, 1.5)  # counted once each
    assert store.latest()["A"] == Tick("A", START + 150_000, 3000, 1.5)


ticks_strategy = st.lists(
    st.builds(
        Tick,
        symbol=st.sampled_from(["BTC", "ETH"]),
        # Spread over three days, so minutes, hours and days all have several.
        start_ms=st.integers(0, 3 * 86_400 // 7).map(lambda i: START + i * 7000),
        tick_ms=st.just(7000),
        price=st.floats(0.01, 1e9, allow_nan=False).map(lambda p: round(p, 2)),
    ),
    min_size=1,
    max_size=60,
    unique_by=lambda tick: (tick.symbol, tick.start_ms),
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ticks=ticks_strategy, seed=st.integers(0, 2**32))
def test_candles_say_what_the_ticks_say_in_any_order_and_batches(
    database_url: str, ticks: list[Tick], seed: int
) -> None:
    engine = create_engine(database_url)
    try:
        upgrade(engine)
        store = HistoryStore(engine)
        with engine.begin() as connection:  # each example starts empty
            connection.execute(history_schema.candles.delete())
            connection.execute(history_schema.ticks.delete())
        shuffled = list(ticks)
        random.Random(seed).shuffle(shuffled)
        at = 0
        while at < len(shuffled):  # batches of any size, some written again
            size = random.Random(seed + at).randint(1, 10)
            store.record(shuffled[at : at + size] + shuffled[: at // 3])
            at += size
        symbols = {tick.symbol for tick in ticks}
        for width in CANDLE_WIDTHS:
            assert stored_candles(store, symbols, width) == expected_candles(ticks, width)
    finally:
        engine.dispose()


def test_pruning_deletes_old_ticks_and_keeps_their_candles(store: HistoryStore) -> None:
    ticks = [Tick("A", START + i * 60_000, 60_000, float(i + 1)) for i in range(10)]
    store.record(ticks)
    assert store.prune(START + 5 * 60_000) == 5
    assert [tick.price for tick in store.ticks("A", 0, 2**62, 100)] == [6.0, 7.0, 8.0, 9.0, 10.0]
    assert len(store.candles("A", 60, 0, 2**62)) == 10
    (day,) = store.candles("A", 86_400, 0, 2**62)
    assert (day.open, day.close, day.ticks) == (1.0, 10.0, 10)
