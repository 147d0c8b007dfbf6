"""The history store on both databases it runs on (a SQLite file, Debian's PostgreSQL):
ticks written once however often they are written, and candles that say what the ticks
say whatever order and batches the ticks came in."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import random
from collections.abc import Iterator
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service import schema
from service.database import create_engine, upgrade
from service.history_store import CANDLE_WIDTHS, Candle, Comoments, HistoryStore, Tick

K = TypeVar("K")
START = 1_700_000_000_000 - 1_700_000_000_000 % 86_400_000  # a day's start, in ms


@contextlib.contextmanager
def empty_store(database_url: str) -> Iterator[HistoryStore]:
    """A store on ``database_url`` with every history table empty (a property test's
    examples share one database)."""
    engine = create_engine(database_url)
    try:
        upgrade(engine)
        with engine.begin() as connection:
            for table in reversed(schema.metadata.sorted_tables):
                connection.execute(table.delete())
        yield HistoryStore(engine)
    finally:
        engine.dispose()


@pytest.fixture
def store(database_url: str) -> Iterator[HistoryStore]:
    engine = create_engine(database_url)
    upgrade(engine)
    yield HistoryStore(engine)
    engine.dispose()


def expected_returns(ticks: list[Tick]) -> dict[tuple[str, int], float]:
    """Each tick's log return from the tick of its symbol one length before, if stored."""
    price = {(tick.symbol, tick.start_ms): tick.price for tick in ticks}
    return {
        (tick.symbol, tick.start_ms): math.log(tick.price / before)
        for tick in ticks
        if (before := price.get((tick.symbol, tick.start_ms - tick.tick_ms))) is not None
    }


def expected_candles(ticks: list[Tick], width_s: int) -> dict[tuple[str, int], Candle]:
    """What the raw ticks say of each candle: the first's price opens it, the last's
    closes it, the extremes, the count; the sums of prices, returns and their squares."""
    width = width_s * 1000
    returns = expected_returns(ticks)
    grouped: dict[tuple[str, int], list[Tick]] = {}
    for tick in ticks:
        grouped.setdefault((tick.symbol, tick.start_ms - tick.start_ms % width), []).append(tick)
    candles = {}
    for key, group in grouped.items():
        group.sort(key=lambda tick: tick.start_ms)
        prices = [tick.price for tick in group]
        rs = [returns[t.symbol, t.start_ms] for t in group if (t.symbol, t.start_ms) in returns]
        candles[key] = Candle(
            key[1], prices[0], max(prices), min(prices), prices[-1], len(group),
            group[0].start_ms, group[-1].start_ms,
            sum(prices), len(rs), sum(rs), sum(r * r for r in rs),
        )  # fmt: skip
    return candles


def assert_same_candles(stored: dict[K, Candle], expected: dict[K, Candle]) -> None:
    """Prices and counts exactly; the sums to rounding (added in another order)."""
    assert stored.keys() == expected.keys()
    for key, candle in stored.items():
        want = expected[key]
        assert candle.sum_price is not None and want.sum_price is not None
        assert candle._replace(sum_price=0.0, sum_return=0.0, sum_return_sq=0.0) == (
            want._replace(sum_price=0.0, sum_return=0.0, sum_return_sq=0.0)
        ), key
        assert (candle.sum_price, candle.sum_return, candle.sum_return_sq) == pytest.approx(
            (want.sum_price, want.sum_return, want.sum_return_sq), rel=1e-9, abs=1e-12
        ), key


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


RUNS = [
    at - at % 7000 - 35_000
    for at in (60_000, 3_600_000, 86_400_000, 86_460_000, 2 * 86_400_000 + 7_200_000, 200_000_000)
]
SYMBOLS = ("BTC", "ETH", "SOL")
ticks_strategy = st.lists(
    st.tuples(
        # Runs of consecutive ticks (log returns) across the ends of minutes, hours and
        # days, spread over three days so that each has several.
        st.sampled_from(RUNS).flatmap(lambda run: st.integers(0, 9).map(lambda i: run + i * 7000)),
        st.sets(st.sampled_from(SYMBOLS), min_size=1),  # mostly several at one tick: pairs
        st.lists(st.floats(0.01, 1e9).map(lambda p: round(p, 2)), min_size=3, max_size=3),
    ),
    min_size=1,
    max_size=30,
    unique_by=lambda row: row[0],
).map(
    lambda rows: [
        Tick(symbol, START + at, 7000, prices[i])
        for at, chosen, prices in rows
        for i, symbol in enumerate(SYMBOLS)
        if symbol in chosen
    ]
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ticks=ticks_strategy, seed=st.integers(0, 2**32))
def test_candles_say_what_the_ticks_say_in_any_order_and_batches(
    database_url: str, ticks: list[Tick], seed: int
) -> None:
    with empty_store(database_url) as store:  # each example starts empty
        shuffled = list(ticks)
        random.Random(seed).shuffle(shuffled)
        at = 0
        while at < len(shuffled):  # batches of any size, some written again
            size = random.Random(seed + at).randint(1, 10)
            store.record(shuffled[at : at + size] + shuffled[: at // 3])
            at += size
        symbols = {tick.symbol for tick in ticks}
        for width in CANDLE_WIDTHS:
            assert_same_candles(
                stored_candles(store, symbols, width), expected_candles(ticks, width)
            )


def test_pruning_deletes_old_ticks_and_keeps_their_candles(store: HistoryStore) -> None:
    ticks = [Tick("A", START + i * 60_000, 60_000, float(i + 1)) for i in range(10)]
    store.record(ticks)
    assert store.prune(START + 5 * 60_000) == 5
    assert [tick.price for tick in store.ticks("A", 0, 2**62, 100)] == [6.0, 7.0, 8.0, 9.0, 10.0]
    assert len(store.candles("A", 60, 0, 2**62)) == 10
    (day,) = store.candles("A", 86_400, 0, 2**62)
    assert (day.open, day.close, day.ticks) == (1.0, 10.0, 10)


def expected_statistics(
    ticks: list[Tick], start_ms: int, end_ms: int
) -> tuple[dict[str, Candle], dict[tuple[str, str], Comoments]]:
    """Straight from the ticks: each symbol's ticks that started in the window as one
    candle (their returns from the tick before, in the window or not), and the comoments
    of each two symbols' returns at the same ticks."""
    inside = [tick for tick in ticks if start_ms <= tick.start_ms < end_ms]
    returns = {key: r for key, r in expected_returns(ticks).items() if start_ms <= key[1] < end_ms}
    whole = 10**9  # seconds: a candle wider than any window here, one per symbol
    candles = {key[0]: candle for key, candle in expected_candles(inside, whole).items()}
    for symbol, candle in candles.items():
        rs = [r for (s, _), r in returns.items() if s == symbol]
        candles[symbol] = candle._replace(
            start_ms=start_ms, returns=len(rs), sum_return=sum(rs),
            sum_return_sq=sum(r * r for r in rs),
        )  # fmt: skip
    pairs = {}
    for x, y in itertools.combinations(sorted(candles), 2):
        both = [
            (r, returns[y, at]) for (s, at), r in returns.items() if s == x and (y, at) in returns
        ]
        if both:
            pairs[x, y] = Comoments(
                len(both), sum(a for a, _ in both), sum(b for _, b in both),
                sum(a * a for a, _ in both), sum(b * b for _, b in both),
                sum(a * b for a, b in both),
            )  # fmt: skip
    return candles, pairs


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ticks=ticks_strategy,
    window=st.tuples(st.integers(0, 3 * 1440), st.integers(1, 3 * 1440)).map(
        lambda w: (START + w[0] * 60_000, START + (w[0] + w[1]) * 60_000)
    ),
)
def test_statistics_say_what_the_ticks_of_the_window_say(
    database_url: str, ticks: list[Tick], window: tuple[int, int]
) -> None:
    with empty_store(database_url) as store:  # each example starts empty
        store.record(ticks)
        candles, pairs = store.statistics(SYMBOLS, *window)
        want_candles, want_pairs = expected_statistics(ticks, *window)
        assert_same_candles(candles, want_candles)
        assert pairs.keys() == want_pairs.keys()
        for pair, sums in pairs.items():
            want = want_pairs[pair]
            assert sums.pairs == want.pairs
            assert tuple(sums) == pytest.approx(tuple(want), rel=1e-9, abs=1e-12)


def test_candles_from_before_revision_0002_get_statistics_from_the_ticks_kept(
    database_url: str,
) -> None:
    engine = create_engine(database_url)
    try:
        upgrade(engine, "0001")
        kept = [
            Tick(s, START + i * 3000, 3000, 100.0 + i * (s == "A")) for i in range(40) for s in "AB"
        ]
        # What revision 0001's recorder wrote: the ticks, and candles without sums; one of
        # them a minute whose ticks have been pruned since.
        rows = [
            {"symbol": symbol, "width_s": width, **candle._asdict()}
            for width in CANDLE_WIDTHS
            for (symbol, _), candle in expected_candles(kept, width).items()
        ]
        pruned = Candle(START - 60_000, 1.0, 1.0, 1.0, 1.0, 1, START - 60_000, START - 60_000)
        rows.append({"symbol": "A", "width_s": 60, **pruned._asdict()})
        sums = ("sum_price", "returns", "sum_return", "sum_return_sq")
        with engine.begin() as connection:
            connection.execute(schema.ticks.insert(), [dataclasses.asdict(t) for t in kept])
            connection.execute(
                schema.candles.insert(),
                [{k: v for k, v in row.items() if k not in sums} for row in rows],
            )
        upgrade(engine)
        store = HistoryStore(engine)
        assert store.fill_statistics() == 2  # the two minutes whose ticks are kept
        for width in CANDLE_WIDTHS:
            found = stored_candles(store, {"A", "B"}, width)
            if width == 60:  # its ticks are gone: no statistics, rather than made-up ones
                assert found.pop(("A", START - 60_000)) == pruned
            assert_same_candles(found, expected_candles(kept, width))
        (pair,) = store.statistics(["A", "B"], START, START + 120_000)[1].values()
        assert pair.pairs == 39  # every tick of A and B but the first has a return
        assert store.fill_statistics() == 0
    finally:
        engine.dispose()
