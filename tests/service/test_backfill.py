"""The backfill: the ticks of a period as the feed served them, the same rows whether the
prices are computed here or in other processes."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from service import schema
from service.backfill import backfill
from service.config import Settings
from service.database import create_engine, upgrade
from service.history_store import HistoryStore
from service.prices import PriceModel
from tests.conftest import PINNED_NOW


def backfilled(path: Path, processes: int) -> dict[str, list[tuple[object, ...]]]:
    engine = create_engine(f"sqlite:///{path}")
    try:
        upgrade(engine)
        settings = Settings.from_env({"PRICE_TICK_SECONDS": "30"})
        stored = backfill(settings, HistoryStore(engine), 0.5, clock=lambda: PINNED_NOW,
                          processes=processes)  # fmt: skip
        assert stored == 1441 * len(settings.symbols)  # 12 h of 30 s ticks, both ends
        with engine.connect() as connection:
            return {
                table.name: [
                    tuple(row)
                    for row in connection.execute(sa.select(table).order_by(*table.primary_key))
                ]
                for table in schema.metadata.sorted_tables
            }
    finally:
        engine.dispose()


def test_prices_computed_in_other_processes_are_the_same_rows(tmp_path: Path) -> None:
    here = backfilled(tmp_path / "here.sqlite3", processes=1)
    there = backfilled(tmp_path / "there.sqlite3", processes=2)
    assert here == there
    model = PriceModel(Settings().price_seed, Settings().symbols)
    for symbol, start_ms, tick_ms, price in here["ticks"][::97]:  # as the feed serves them
        assert price == model.price(str(symbol), int(str(start_ms)) // int(str(tick_ms)))
