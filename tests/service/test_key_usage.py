"""A worker's usage counts: added up per key and hour, written in one batch, kept (not
lost, not doubled) while the database does not answer, and bounded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from service import key_usage
from service.database import create_engine, upgrade
from service.key_store import HOUR_MS, KeyStore, Usage
from service.key_usage import UsageCounter
from service.metrics import Metrics

NOW = 1_700_000_000.0
HOUR = int(NOW * 1000) // HOUR_MS * HOUR_MS
FP = "key-0123456789ab"


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = create_engine(f"sqlite:///{tmp_path}/keys.sqlite3")
    upgrade(engine)
    yield engine
    engine.dispose()


def test_counts_add_up_per_hour_and_are_written_once(engine: sa.Engine) -> None:
    clock = Clock()
    store = KeyStore(engine, clock)
    counter = UsageCounter(store, Metrics(("BTC",)), clock)
    counter.count(FP, rate_limited=False, stream=True)
    counter.count(FP, rate_limited=True, stream=False)
    clock.now += 3600
    counter.count(FP, rate_limited=False, stream=False)
    assert counter.pending(FP, 0) == Usage(3, 1, 1, int(clock.now * 1000))
    assert counter.pending(FP, HOUR + HOUR_MS) == Usage(1, 0, 0, int(clock.now * 1000))
    assert store.usage(FP, 0) == Usage()
    assert counter.flush() and counter.flush()  # the second has nothing left to write
    assert counter.pending(FP, 0) == Usage()
    assert store.usage(FP, 0) == Usage(3, 1, 1, int(clock.now * 1000))
    assert store.usage(FP, HOUR + HOUR_MS).requests == 1


def test_counts_wait_for_the_database_and_are_written_once_when_it_answers(
    tmp_path: Path, engine: sa.Engine
) -> None:
    metrics = Metrics(("BTC",))
    missing = create_engine(f"sqlite:///{tmp_path}/missing/dir/none.sqlite3")
    down = UsageCounter(KeyStore(missing, Clock()), metrics, Clock())
    down.count(FP, rate_limited=True, stream=False)
    assert not down.flush() and not down.flush()
    assert down.pending(FP, 0) == Usage(1, 1, 0, int(NOW * 1000))  # kept, not doubled
    assert metrics.key_usage_write_errors._value.get() == 2
    down._store = KeyStore(engine, Clock())  # the database is back
    assert down.flush()
    assert KeyStore(engine).usage(FP, 0) == Usage(1, 1, 0, int(NOW * 1000))
    missing.dispose()


def test_what_waits_is_bounded_and_what_is_dropped_counted(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(key_usage, "MAX_PENDING", 2)
    metrics = Metrics(("BTC",))
    counter = UsageCounter(KeyStore(engine, Clock()), metrics, Clock())
    for fingerprint in ("key-a", "key-b", "key-c", "key-a"):
        counter.count(fingerprint, rate_limited=False, stream=False)
    assert counter.pending("key-a", 0).requests == 2  # an entry already kept still counts
    assert counter.pending("key-c", 0) == Usage()
    assert metrics.key_usage_dropped._value.get() == 1
