"""The price history in its database: ticks written once however many replicas write
them, candles rolled up from them as they are written, and the reads the API makes.

Every replica's recorder writes the same ticks; the ticks' primary key keeps one of
each, and only the rows a write actually inserted are rolled up into candles, in the same
transaction (one writer at a time: SQLite's lock, or a PostgreSQL advisory lock), so a
candle counts each tick once whichever replica wrote it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from service.history_schema import candles, ticks

CANDLE_WIDTHS = (60, 3600, 86400)  # seconds: what is stored; 5m and 15m are read from 1m
ROWS_PER_STATEMENT = 1000  # SQLite binds at most 32,766 values in one statement
WRITER_LOCK = 0x63727970  # PostgreSQL advisory lock id ("cryp") held while writing


@dataclass(frozen=True, slots=True)
class Tick:
    symbol: str
    start_ms: int  # unix ms when the tick started
    tick_ms: int  # its length
    price: float  # as served


@dataclass(frozen=True, slots=True)
class Candle:
    start_ms: int
    open: float
    high: float
    low: float
    close: float
    ticks: int
    first_ms: int  # the start of the tick that opened it
    last_ms: int  # and of the one that closed it


def candle_of(parts: Sequence[Candle], start_ms: int) -> Candle:
    """One candle from its parts (ticks as one-tick candles, or narrower candles), in
    any order: open of the earliest, close of the latest, the extremes, the count."""
    first = min(parts, key=lambda part: part.first_ms)
    last = max(parts, key=lambda part: part.last_ms)
    return Candle(
        start_ms,
        first.open,
        max(part.high for part in parts),
        min(part.low for part in parts),
        last.close,
        sum(part.ticks for part in parts),
        first.first_ms,
        last.last_ms,
    )


def tick_candle(start_ms: int, price: float) -> Candle:
    return Candle(start_ms, price, price, price, price, 1, start_ms, start_ms)


def _chunks(rows: Sequence[Tick]) -> Iterator[Sequence[Tick]]:
    for at in range(0, len(rows), ROWS_PER_STATEMENT):
        yield rows[at : at + ROWS_PER_STATEMENT]


class HistoryStore:
    """Reads and writes the history tables through one engine."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        insert = postgresql.insert if self._postgres else sqlite.insert
        # Built once, executed with parameters: SQLAlchemy compiles each once.
        self._insert_ticks = (
            insert(ticks).on_conflict_do_nothing().returning(ticks.c.symbol, ticks.c.start_ms)
        )
        upsert = insert(candles)
        self._upsert_candles = upsert.on_conflict_do_update(
            index_elements=[candles.c.symbol, candles.c.width_s, candles.c.start_ms],
            set_={name: upsert.excluded[name] for name in Candle.__slots__[1:]},
        )

    def record(self, rows: Sequence[Tick]) -> int:
        """Write these ticks and roll them up; the number that were not there yet."""
        inserted: list[tuple[str, int]] = []
        with self.engine.begin() as connection:
            if self._postgres:
                connection.execute(sa.select(sa.func.pg_advisory_xact_lock(WRITER_LOCK)))
            for chunk in _chunks(rows):
                written = connection.execute(self._insert_ticks, [_row(row) for row in chunk])
                inserted.extend((symbol, start) for symbol, start in written)
            self._roll_up(connection, inserted)
        return len(inserted)

    def _roll_up(self, connection: sa.Connection, inserted: Iterable[tuple[str, int]]) -> None:
        """Recompute the candles that the inserted ticks fall in, narrowest first: a
        minute from its ticks, an hour from its minutes, a day from its hours."""
        touched = {(symbol, start) for symbol, start in inserted}
        narrower: int | None = None
        for width in CANDLE_WIDTHS:
            width_ms = width * 1000
            touched = {(symbol, start - start % width_ms) for symbol, start in touched}
            rolled = []
            for symbol, start in sorted(touched):
                parts = self._parts(connection, symbol, narrower, start, start + width_ms)
                if parts:
                    candle = candle_of(parts, start)
                    rolled.append({"symbol": symbol, "width_s": width, **_fields(candle)})
            if rolled:
                connection.execute(self._upsert_candles, rolled)
            narrower = width

    def _parts(
        self, connection: sa.Connection, symbol: str, width: int | None, start: int, end: int
    ) -> list[Candle]:
        if width is None:
            rows = connection.execute(
                sa.select(ticks.c.start_ms, ticks.c.price).where(
                    ticks.c.symbol == symbol, ticks.c.start_ms >= start, ticks.c.start_ms < end
                )
            )
            return [tick_candle(start_ms, price) for start_ms, price in rows]
        return list(self._candle_rows(connection, symbol, width, start, end))

    def _candle_rows(
        self, connection: sa.Connection, symbol: str, width: int, start: int, end: int
    ) -> Iterator[Candle]:
        columns = [candles.c[name] for name in Candle.__slots__]
        rows = connection.execute(
            sa.select(*columns)
            .where(
                candles.c.symbol == symbol,
                candles.c.width_s == width,
                candles.c.start_ms >= start,
                candles.c.start_ms < end,
            )
            .order_by(candles.c.start_ms)
        )
        for row in rows:
            yield Candle(*row)

    def latest(self) -> dict[str, Tick]:
        """Each symbol's newest tick stored."""
        newest = (
            sa.select(ticks.c.symbol, sa.func.max(ticks.c.start_ms).label("start_ms"))
            .group_by(ticks.c.symbol)
            .subquery()
        )
        query = sa.select(ticks).join(
            newest,
            sa.and_(ticks.c.symbol == newest.c.symbol, ticks.c.start_ms == newest.c.start_ms),
        )
        with self.engine.connect() as connection:
            return {row.symbol: Tick(*row) for row in connection.execute(query)}

    def ticks(
        self, symbol: str, start_ms: int, end_ms: int, limit: int, newest_first: bool = False
    ) -> list[Tick]:
        """Up to ``limit`` ticks of ``symbol`` that started in [start_ms, end_ms)."""
        order = ticks.c.start_ms.desc() if newest_first else ticks.c.start_ms
        query = (
            sa.select(ticks)
            .where(
                ticks.c.symbol == symbol, ticks.c.start_ms >= start_ms, ticks.c.start_ms < end_ms
            )
            .order_by(order)
            .limit(limit)
        )
        with self.engine.connect() as connection:
            return [Tick(*row) for row in connection.execute(query)]

    def candles(self, symbol: str, width: int, start_ms: int, end_ms: int) -> list[Candle]:
        """The stored candles of ``width`` seconds that start in [start_ms, end_ms)."""
        with self.engine.connect() as connection:
            return list(self._candle_rows(connection, symbol, width, start_ms, end_ms))

    def prune(self, ticks_before_ms: int) -> int:
        """Delete the ticks that started before ``ticks_before_ms``; how many."""
        with self.engine.begin() as connection:
            deleted = connection.execute(sa.delete(ticks).where(ticks.c.start_ms < ticks_before_ms))
        return deleted.rowcount


def _row(tick: Tick) -> dict[str, object]:
    return {
        "symbol": tick.symbol,
        "start_ms": tick.start_ms,
        "tick_ms": tick.tick_ms,
        "price": tick.price,
    }


def _fields(candle: Candle) -> dict[str, object]:
    return {name: getattr(candle, name) for name in Candle.__slots__}
