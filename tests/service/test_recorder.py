"""The recorder with a pinned clock, on a real SQLite file: what it writes is what the
workers serve, a restart leaves no gap, other settings start a new history and leave the
old one as it was served, and ticks missed while the database was locked are written when
it is free again."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.config import Settings
from service.database import create_engine, upgrade
from service.feed import PriceFeed
from service.history_store import HistoryStore
from service.metrics import HistoryMetrics
from service.prices import PriceModel
from service.recorder import Recorder
from tests.conftest import PINNED_NOW


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/history.sqlite3"


@pytest.fixture
def store(url: str) -> Iterator[HistoryStore]:
    engine = create_engine(url, sqlite_busy_ms=100)
    upgrade(engine)
    yield HistoryStore(engine)
    engine.dispose()


def recorder(store: HistoryStore, clock: Clock, **env: str) -> Recorder:
    return Recorder(Settings.from_env(env), store, HistoryMetrics(), clock=clock)


def starts(store: HistoryStore, symbol: str = "BTC") -> list[int]:
    return [tick.start_ms for tick in store.ticks(symbol, 0, 2**62, 10**6)]


def test_what_is_written_is_what_the_feed_serves(store: HistoryStore) -> None:
    clock = Clock(PINNED_NOW)
    first = recorder(store, clock)
    first.write_due()
    clock.now += 30
    first.write_due()
    settings = Settings()
    feed = PriceFeed(PriceModel(settings.price_seed, settings.symbols), list(settings.symbols), 3.0)
    for symbol in settings.symbols:
        stored = store.ticks(symbol, 0, 2**62, 100)
        assert len(stored) == 11
        for tick in stored:
            served = feed.quote(symbol, tick.start_ms / 1000 + 0.001)
            assert (tick.price, tick.start_ms / 1000, tick.tick_ms) == (
                served.price, served.updated_at, 3000,
            )  # fmt: skip


def test_a_restart_resumes_after_the_newest_tick_stored(store: HistoryStore) -> None:
    clock = Clock(PINNED_NOW)
    recorder(store, clock).write_due()
    clock.now += 60  # down for a minute
    recorder(store, clock).write_due()
    written = starts(store)
    assert len(written) == 21
    assert all(b - a == 3000 for a, b in itertools.pairwise(written))


@pytest.mark.parametrize(
    "changed",
    [
        {"PRICE_SEED": "another"},
        {"SYMBOLS": "BTC:100.01,ETH:50,SOL:20,XRP:10"},
        {"SYMBOLS": "BTC:100,ETH:50"},
        {"PRICE_TICK_SECONDS": "2"},
    ],
    ids=["seed", "base-price", "symbols", "tick-length"],
)
def test_other_settings_start_a_new_history_and_leave_the_old_as_served(
    store: HistoryStore, changed: dict[str, str]
) -> None:
    clock = Clock(PINNED_NOW)
    recorder(store, clock).write_due()
    (before,) = store.ticks("BTC", 0, 2**62, 10)
    clock.now += 60
    restarted = recorder(store, clock, **changed)
    restarted.write_due()
    old, new = store.ticks("BTC", 0, 2**62, 10)
    assert old == before  # as it was served then
    assert new.start_ms // 1000 == int(clock.now) - int(clock.now) % (new.tick_ms // 1000)
    model = PriceModel(restarted.settings.price_seed, restarted.settings.symbols)
    assert new.price == model.price("BTC", round(new.start_ms / new.tick_ms))


def test_ticks_missed_while_the_database_is_locked_are_written_once_it_is_free(
    url: str, store: HistoryStore
) -> None:
    clock = Clock(PINNED_NOW)
    writer = recorder(store, clock)
    assert writer.step() > 0
    blocker = sqlite3.connect(url.removeprefix("sqlite:///"))
    blocker.execute("BEGIN EXCLUSIVE")  # another process holding the database
    for _ in range(5):
        clock.now += 3
        wait = writer.step()
        assert wait >= 1  # a retry after a pause, not a spin
    errors = writer.metrics.registry.get_sample_value("crypto_history_write_errors_total")  # type: ignore[union-attr]
    assert errors == 5
    blocker.rollback()
    blocker.close()
    clock.now += 3
    writer.step()
    written = starts(store)
    assert len(written) == 7
    assert all(b - a == 3000 for a, b in itertools.pairwise(written))
    through = writer.metrics.registry.get_sample_value(  # type: ignore[union-attr]
        "crypto_history_recorded_through_timestamp_seconds"
    )
    assert through == (written[-1] + 3000) / 1000
