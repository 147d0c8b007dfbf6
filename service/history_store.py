"""The price history in its database: ticks written once however many replicas write
them, candles rolled up from them as they are written, and the reads the API makes.

Every replica's recorder writes the same ticks; the ticks' primary key keeps one of
each, and only the rows a write actually inserted are rolled up into candles, in the same
transaction (one writer at a time: SQLite's lock, or a PostgreSQL advisory lock), so a
candle counts each tick once whichever replica wrote it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from service.database import on_connection
from service.schema import candle_pairs, candles, ticks

CANDLE_WIDTHS = (60, 3600, 86400)  # seconds: what is stored; 5m and 15m are read from 1m
ROWS_PER_STATEMENT = 1000  # SQLite binds at most 32,766 values in one statement
T = TypeVar("T")
WRITER_LOCK = 0x63727970  # PostgreSQL advisory lock id ("cryp") held while writing


@dataclasses.dataclass(frozen=True, slots=True)
class Tick:
    symbol: str
    start_ms: int  # unix ms when the tick started
    tick_ms: int  # its length
    price: float  # as served


class Candle(NamedTuple):
    """A candle as stored. A named tuple rather than a dataclass: a candles request
    builds a day of minutes, and tuples are several times cheaper to make
    (bench/NOTES.md)."""

    start_ms: int
    open: float
    high: float
    low: float
    close: float
    ticks: int
    first_ms: int  # the start of the tick that opened it
    last_ms: int  # and of the one that closed it
    # The statistics' parts (None where they were never computed: service/schema.py says when).
    sum_price: float | None = None
    returns: int | None = None  # ticks with a log return from the tick before
    sum_return: float | None = None
    sum_return_sq: float | None = None

    def volatility(self) -> float | None:
        """The sample standard deviation of the log returns, with two or more."""
        if self.returns is None or self.returns < 2:
            return None
        assert self.sum_return is not None and self.sum_return_sq is not None
        spread = self.sum_return_sq - self.sum_return**2 / self.returns
        return math.sqrt(max(spread, 0.0) / (self.returns - 1))


class Comoments(NamedTuple):
    """Two symbols' log returns over the ticks where both have one: x the symbol's, y the
    other's."""

    pairs: int
    sum_x: float
    sum_y: float
    sum_xx: float
    sum_yy: float
    sum_xy: float

    def correlation(self) -> float | None:
        """Pearson's, where both vary."""
        if self.pairs < 2:
            return None
        n = self.pairs
        cross = self.sum_xy - self.sum_x * self.sum_y / n
        spread_x = self.sum_xx - self.sum_x**2 / n
        spread_y = self.sum_yy - self.sum_y**2 / n
        if spread_x <= 0 or spread_y <= 0:
            return None
        return max(-1.0, min(1.0, cross / math.sqrt(spread_x * spread_y)))


def candle_of(parts: Sequence[Candle], start_ms: int, sums: bool = True) -> Candle:
    """One candle from its parts (ticks as one-tick candles, or narrower candles), in
    any order: open of the earliest, close of the latest, the extremes, the count, and
    unless told not to, the sums (exactly rounded, so the same whatever the order)."""
    first = min(parts, key=lambda part: part.first_ms)
    last = max(parts, key=lambda part: part.last_ms)
    summed = sums and all(part.sum_price is not None for part in parts)
    return Candle(
        start_ms,
        first.open,
        max(part.high for part in parts),
        min(part.low for part in parts),
        last.close,
        sum(part.ticks for part in parts),
        first.first_ms,
        last.last_ms,
        math.fsum(p.sum_price for p in parts) if summed else None,  # type: ignore[misc]
        sum(p.returns for p in parts) if summed else None,  # type: ignore[misc]
        math.fsum(p.sum_return for p in parts) if summed else None,  # type: ignore[misc]
        math.fsum(p.sum_return_sq for p in parts) if summed else None,  # type: ignore[misc]
    )


def comoments_of(parts: Iterable[Comoments]) -> Comoments:
    parts = list(parts)
    return Comoments(
        sum(part.pairs for part in parts),
        *(math.fsum(getattr(part, name) for part in parts) for name in _COMOMENT_SUMS),
    )


_COMOMENT_SUMS = ("sum_x", "sum_y", "sum_xx", "sum_yy", "sum_xy")


def tick_candle(start_ms: int, price: float, log_return: float | None = None) -> Candle:
    returned = log_return is not None
    r = log_return or 0.0
    return Candle(
        start_ms, price, price, price, price, 1, start_ms, start_ms, price, int(returned), r, r * r
    )


def log_returns(series: dict[int, tuple[int, float]]) -> dict[int, float | None]:
    """Each tick's log return (start -> (length, price)): from the tick that started one
    length before, if that one is stored and as long."""
    returns: dict[int, float | None] = {}
    for start, (length, price) in series.items():
        before = series.get(start - length)
        returns[start] = (
            math.log(price / before[1]) if before and before[0] == length and before[1] else None
        )
    return returns


def comoments_between(x: dict[int, float | None], y: dict[int, float | None]) -> Comoments:
    both = [(a, b) for start, a in x.items() if a is not None and (b := y.get(start)) is not None]
    return Comoments(
        len(both),
        math.fsum(a for a, _ in both),
        math.fsum(b for _, b in both),
        math.fsum(a * a for a, _ in both),
        math.fsum(b * b for _, b in both),
        math.fsum(a * b for a, b in both),
    )


def covering(start_ms: int, end_ms: int) -> list[tuple[int, int, int]]:
    """[start_ms, end_ms) (whole minutes) as the fewest stored candles: (width, from, to)
    spans of the widest candles that fit, narrower ones at the edges."""
    spans: list[tuple[int, int, int]] = []

    def split(start: int, end: int, widths: Sequence[int]) -> None:
        if start >= end or not widths:
            return
        width_ms = widths[0] * 1000
        inner_start = -(-start // width_ms) * width_ms
        inner_end = end // width_ms * width_ms
        if inner_start < inner_end:
            spans.append((widths[0], inner_start, inner_end))
            split(start, inner_start, widths[1:])
            split(inner_end, end, widths[1:])
        else:
            split(start, end, widths[1:])

    split(start_ms, end_ms, sorted(CANDLE_WIDTHS, reverse=True))
    return sorted(spans, key=lambda span: span[1])


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
            insert(ticks)
            .on_conflict_do_nothing()
            .returning(ticks.c.symbol, ticks.c.start_ms, ticks.c.tick_ms)
        )
        self._upsert_candles = _upsert(insert, candles, Candle)
        self._upsert_pairs = _upsert(insert, candle_pairs, Comoments)
        # The symbols stored, for the comoments of a minute (read once: a full scan).
        self._symbols: set[str] | None = None

    def _read(self, work: Callable[[sa.Connection], T]) -> T:
        return on_connection(self.engine, work)

    def record(self, rows: Sequence[Tick]) -> int:
        """Write these ticks and roll them up; the number that were not there yet."""
        inserted: list[tuple[str, int, int]] = []
        with self.engine.begin() as connection:
            self._lock(connection)
            for chunk in _chunks(rows):
                written = connection.execute(
                    self._insert_ticks, [dataclasses.asdict(row) for row in chunk]
                )
                inserted.extend((symbol, start, length) for symbol, start, length in written)
            self._roll_up(connection, inserted)
        return len(inserted)

    def fill_statistics(self) -> int:
        """Roll up again the minutes whose candles have no statistics yet (rolled up before
        revision 0002) and whose ticks are kept; how many minutes."""
        with self.engine.begin() as connection:
            self._lock(connection)
            bare = connection.execute(
                sa.select(candles.c.symbol, candles.c.start_ms).where(
                    candles.c.width_s == 60, candles.c.sum_price.is_(None)
                )
            ).all()
            kept: list[tuple[str, int, int]] = []
            for symbol, start in bare:
                kept.extend(
                    connection.execute(
                        sa.select(ticks.c.symbol, ticks.c.start_ms, ticks.c.tick_ms).where(
                            ticks.c.symbol == symbol,
                            ticks.c.start_ms >= start,
                            ticks.c.start_ms < start + 60_000,
                        )
                    ).tuples()
                )
            self._roll_up(connection, kept)
        return len({start - start % 60_000 for _, start, _ in kept})

    def _lock(self, connection: sa.Connection) -> None:
        if self._postgres:
            connection.execute(sa.select(sa.func.pg_advisory_xact_lock(WRITER_LOCK)))

    def _stored_symbols(self, connection: sa.Connection) -> set[str]:
        if self._symbols is None:
            query = sa.select(candles.c.symbol).where(candles.c.width_s == 86_400).distinct()
            self._symbols = set(connection.scalars(query))
        return self._symbols

    def _roll_up(self, connection: sa.Connection, inserted: Sequence[tuple[str, int, int]]) -> None:
        """Recompute what the inserted ticks change, narrowest first: a minute from its
        ticks (the minute of each, and of the tick after it, whose log return it gives),
        an hour from its minutes, a day from its hours; every symbol's candles and
        comoments of each."""
        if not inserted:
            return
        symbols = self._stored_symbols(connection)
        symbols.update(symbol for symbol, _, _ in inserted)
        lookback = max(length for _, _, length in inserted)
        touched: set[int] = set()
        for _, start, length in inserted:
            touched.update((start - start % 60_000, (start + length) - (start + length) % 60_000))
        narrower = None
        for width in CANDLE_WIDTHS:
            width_ms = width * 1000
            touched = {start - start % width_ms for start in touched}
            rolled: list[dict[str, object]] = []
            paired: list[dict[str, object]] = []
            for start in sorted(touched):
                if narrower is None:
                    found, pairs = self._minute(connection, symbols, start, lookback)
                else:
                    found, pairs = self._wider(connection, symbols, narrower, start, width_ms)
                rolled.extend(
                    {"symbol": symbol, "width_s": width, **candle._asdict()}
                    for symbol, candle in found.items()
                )
                paired.extend(
                    {"symbol": a, "other": b, "width_s": width, "start_ms": start,
                     **sums._asdict()}
                    for (a, b), sums in pairs.items()
                )  # fmt: skip
            if rolled:
                connection.execute(self._upsert_candles, rolled)
            if paired:
                connection.execute(self._upsert_pairs, paired)
            narrower = width

    def _minute(
        self, connection: sa.Connection, symbols: set[str], start: int, lookback: int
    ) -> tuple[dict[str, Candle], dict[tuple[str, str], Comoments]]:
        """A minute's candles and comoments, from its ticks and those just before it."""
        rows = connection.execute(
            sa.select(ticks.c.symbol, ticks.c.start_ms, ticks.c.tick_ms, ticks.c.price).where(
                ticks.c.symbol.in_(sorted(symbols)),
                ticks.c.start_ms >= start - lookback,
                ticks.c.start_ms < start + 60_000,
            )
        )
        series: dict[str, dict[int, tuple[int, float]]] = {}
        for symbol, tick_start, length, price in rows:
            series.setdefault(symbol, {})[tick_start] = (length, price)
        returns = {
            symbol: {at: r for at, r in log_returns(points).items() if at >= start}
            for symbol, points in series.items()
        }
        found = {
            symbol: candle_of(
                [tick_candle(at, series[symbol][at][1], r) for at, r in by_start.items()], start
            )
            for symbol, by_start in returns.items()
            if by_start
        }
        pairs = {
            (a, b): sums
            for a in sorted(returns)
            for b in sorted(returns)
            if a < b and (sums := comoments_between(returns[a], returns[b])).pairs
        }
        return found, pairs

    def _wider(
        self, connection: sa.Connection, symbols: set[str], narrower: int, start: int, width_ms: int
    ) -> tuple[dict[str, Candle], dict[tuple[str, str], Comoments]]:
        """A wider candle's candles and comoments, from the narrower ones in it."""
        parts = self._candles(connection, symbols, narrower, start, start + width_ms)
        pair_parts = self._comoments(connection, symbols, narrower, start, start + width_ms)
        return (
            {symbol: candle_of(found, start) for symbol, found in parts.items()},
            {pair: comoments_of(found) for pair, found in pair_parts.items()},
        )

    def _candles(
        self,
        connection: sa.Connection,
        symbols: Iterable[str],
        width: int,
        start: int,
        end: int,
        sums: bool = True,
    ) -> dict[str, list[Candle]]:
        """The stored candles, with the statistics' sums unless told not to (a third of
        the columns, left unread when only prices are shown)."""
        names = Candle._fields if sums else Candle._fields[:8]
        columns = [candles.c[name] for name in names]
        rows = connection.execute(
            sa.select(candles.c.symbol, *columns)
            .where(
                candles.c.symbol.in_(sorted(symbols)),
                candles.c.width_s == width,
                candles.c.start_ms >= start,
                candles.c.start_ms < end,
            )
            .order_by(candles.c.symbol, candles.c.start_ms)
        )
        found: dict[str, list[Candle]] = {}
        for row in rows.all():  # all at once: a third of the time of one by one
            found.setdefault(row[0], []).append(Candle(*row[1:]))
        return found

    def _comoments(
        self, connection: sa.Connection, symbols: Iterable[str], width: int, start: int, end: int
    ) -> dict[tuple[str, str], list[Comoments]]:
        columns = [candle_pairs.c[name] for name in Comoments._fields]
        chosen = sorted(symbols)
        rows = connection.execute(
            sa.select(candle_pairs.c.symbol, candle_pairs.c.other, *columns).where(
                candle_pairs.c.symbol.in_(chosen),
                candle_pairs.c.other.in_(chosen),
                candle_pairs.c.width_s == width,
                candle_pairs.c.start_ms >= start,
                candle_pairs.c.start_ms < end,
            )
        )
        found: dict[tuple[str, str], list[Comoments]] = {}
        for symbol, other, *values in rows:
            found.setdefault((symbol, other), []).append(Comoments(*values))
        return found

    def statistics(
        self, symbols: Sequence[str], start_ms: int, end_ms: int
    ) -> tuple[dict[str, Candle], dict[tuple[str, str], Comoments]]:
        """Over the whole minutes [start_ms, end_ms): each symbol's candle (of the candles
        that have statistics) and each pair's comoments (keys in name order), added up
        from the widest stored candles that fit."""
        parts: dict[str, list[Candle]] = {}
        pair_parts: dict[tuple[str, str], list[Comoments]] = {}

        def read(connection: sa.Connection) -> None:
            for width, start, end in covering(start_ms, end_ms):
                for symbol, found in self._candles(connection, symbols, width, start, end).items():
                    parts.setdefault(symbol, []).extend(c for c in found if c.sum_price is not None)
                for pair, sums in self._comoments(connection, symbols, width, start, end).items():
                    pair_parts.setdefault(pair, []).extend(sums)

        self._read(read)
        return (
            {symbol: candle_of(found, start_ms) for symbol, found in parts.items() if found},
            {pair: comoments_of(found) for pair, found in pair_parts.items()},
        )

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
        return self._read(lambda c: {row.symbol: Tick(*row) for row in c.execute(query)})

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
        return self._read(lambda c: [Tick(*row) for row in c.execute(query)])

    def candles(
        self, symbol: str, width: int, start_ms: int, end_ms: int, sums: bool = True
    ) -> list[Candle]:
        """The stored candles of ``width`` seconds that start in [start_ms, end_ms) (with
        the statistics' sums unless told not to)."""
        return self._read(
            lambda c: self._candles(c, [symbol], width, start_ms, end_ms, sums).get(symbol, [])
        )

    def prune(self, ticks_before_ms: int) -> int:
        """Delete the ticks that started before ``ticks_before_ms``; how many."""
        with self.engine.begin() as connection:
            deleted = connection.execute(sa.delete(ticks).where(ticks.c.start_ms < ticks_before_ms))
        return deleted.rowcount


def _upsert(insert: Any, table: sa.Table, row: type[Candle | Comoments]) -> Any:
    """An insert of ``table`` that replaces the named tuple ``row``'s fields on conflict."""
    statement = insert(table)
    keys = [column.name for column in table.primary_key.columns]
    fields = [name for name in row._fields if name not in keys]
    return statement.on_conflict_do_update(
        index_elements=keys, set_={name: statement.excluded[name] for name in fields}
    )
