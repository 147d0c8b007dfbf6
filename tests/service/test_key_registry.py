"""A worker's view of the managed keys: read again only when their generation moves, a
change seen within a poll, expiry checked at each use, and a database that stops
answering keeps the keys last read (counted) while one that never answered is said."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from service.database import create_engine, upgrade
from service.key_format import digest_of
from service.key_registry import KeyRegistry, KeysUnknown
from service.key_store import KeyStore
from service.metrics import Metrics

NOW = 1_700_000_000.0


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


class CountingStore(KeyStore):
    """The real store, counting how often the keys themselves are read."""

    reads = 0

    def working(self) -> tuple[int, list]:  # type: ignore[type-arg]
        self.reads += 1
        return super().working()


def test_keys_are_read_again_only_when_they_change(engine: sa.Engine) -> None:
    clock = Clock()
    store = CountingStore(engine, clock)
    registry = KeyRegistry(store, Metrics(("BTC",)), clock)
    key, record = store.create("ci")
    assert registry.lookup(digest_of(key)) == record
    for _ in range(5):
        assert registry.refresh()
    assert store.reads == 1
    other, _ = store.create("cd")
    assert registry.lookup(digest_of(other)) is None  # not polled yet
    assert registry.refresh() and store.reads == 2
    assert registry.lookup(digest_of(other)) is not None
    assert registry.by_fingerprint(record.fingerprint) == record
    store.revoke("ci")
    registry.refresh()
    assert registry.lookup(digest_of(key)) is None
    assert registry.by_fingerprint(record.fingerprint) is None


def test_a_rotated_out_key_stops_at_its_expiry_without_a_read(engine: sa.Engine) -> None:
    clock = Clock()
    store = KeyStore(engine, clock)
    registry = KeyRegistry(store, Metrics(("BTC",)), clock)
    old, _ = store.create("ci")
    store.rotate("ci", 60)
    registry.refresh()
    clock.now += 59.999
    assert registry.lookup(digest_of(old)) is not None
    clock.now += 0.001
    assert registry.lookup(digest_of(old)) is None


def test_keys_last_read_stay_while_the_database_is_down_and_errors_are_counted(
    engine: sa.Engine, tmp_path: Path
) -> None:
    clock = Clock()
    store = KeyStore(engine, clock)
    metrics = Metrics(("BTC",))
    registry = KeyRegistry(store, metrics, clock)
    key, _ = store.create("ci")
    registry.refresh()
    (tmp_path / "keys.sqlite3").rename(tmp_path / "gone.sqlite3")
    engine.dispose()  # the next connection opens a new, empty file: no tables
    assert not registry.refresh()
    assert registry.lookup(digest_of(key)) is not None
    assert metrics.key_refresh_errors._value.get() == 1


def test_a_worker_that_never_read_the_keys_says_so() -> None:
    engine = create_engine("postgresql://nobody@127.0.0.1:9/none")
    registry = KeyRegistry(KeyStore(engine), Metrics(("BTC",)))
    with pytest.raises(KeysUnknown):
        registry.lookup(digest_of("cpk_anything"))
    engine.dispose()
