"""The history endpoints: what was served, read from the history database.

``/v1/prices/<symbol>/history`` gives ticks (the newest ``limit``, or those of a range,
paged with a cursor), ``/v1/prices/<symbol>/candles`` candles of 1m, 5m, 15m, 1h or 1d,
and ``/v1/stats`` each symbol's statistics over a window and their correlations. A
range's answer carries no response time, so the same range answers the same bytes for as
long as its ticks are kept: its ETag is its body's, and a range that has ended is
cacheable for long. JSON by default, CSV to ``Accept: text/csv``. A database that does
not answer is a 503 here and nowhere else.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import io
import math
import re
from collections.abc import Iterable, Mapping, Sequence

import flask
import orjson
import sqlalchemy as sa
from werkzeug.http import parse_etags

from service.api import known_symbol, requested_symbols
from service.errors import ApiError
from service.feed import HISTORY_MAX
from service.history_store import Candle, Comoments, Tick, candle_of
from service.state import get_state

bp = flask.Blueprint("history", __name__)
DEFAULT_HISTORY_LIMIT = 10
# Candle widths served, and the stored width each is read from (5m and 15m from 1m).
CANDLE_INTERVALS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "1d": 86400}
STORED_WIDTH = {"1m": 60, "5m": 60, "15m": 60, "1h": 3600, "1d": 86400}
DEFAULT_CANDLES = 60  # without from: the last 60 candles
MAX_CANDLES = 1500  # one answer: 24 h of 1m, or four years of 1d
# Statistics windows, in whole minutes up to and including the one holding `to` (the
# minute still open, by default): their candles add up to the answer.
STATS_WINDOWS = {"1h": 3600, "24h": 86_400, "7d": 604_800}
DEFAULT_STATS_WINDOW = "24h"
CLOSED_MAX_AGE = 3600  # seconds a range that has ended may be cached
UNAVAILABLE_RETRY_SECONDS = 5
# What from and to may be (the OpenAPI document says the same): unix seconds, or RFC 3339's
# date-time (a leap second read as the second before).
UNIX_SECONDS = re.compile(r"[0-9]{1,10}(\.[0-9]{1,6})?")
DATE_TIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
TIME_SCHEMA = {
    "anyOf": [
        {"type": "string", "pattern": f"^{UNIX_SECONDS.pattern}$"},
        {"type": "string", "format": "date-time"},
    ]
}
EARLIEST = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC).timestamp()
LATEST = datetime.datetime(2200, 1, 1, tzinfo=datetime.UTC).timestamp()


def history_limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_HISTORY_LIMIT
    if not (len(raw) <= 6 and raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= HISTORY_MAX:
        raise ApiError(
            400, "invalid_limit", f"limit must be a whole number from 1 to {HISTORY_MAX}."
        )
    return int(raw)


def time_parameter(name: str, raw: str | None) -> float | None:
    """A time given as unix seconds or an RFC 3339 date-time (as TIME_PATTERNS say), held
    to the years 2000-2200: a range's end beyond them reaches no tick anyway."""
    if raw is None:
        return None
    value = _unix_seconds(raw) if len(raw) <= 40 else None
    if value is None:
        raise ApiError(
            400,
            f"invalid_{name}",
            f"{name} must be unix seconds or an RFC 3339 date-time with its offset, such as "
            "2026-12-01T12:00:00Z.",
        )
    return min(max(value, EARLIEST), LATEST)


def _unix_seconds(raw: str) -> float | None:
    if UNIX_SECONDS.fullmatch(raw):
        return float(raw)
    found = DATE_TIME.fullmatch(raw)
    if found is None:
        return None
    year, month, day, hour, minute, second, fraction, offset = found.groups()
    try:
        zone = datetime.UTC
        if offset not in ("Z", "z"):
            hours, minutes = int(offset[1:3]), int(offset[4:6])
            sign = -1 if offset[0] == "-" else 1
            zone = datetime.timezone(sign * datetime.timedelta(hours=hours, minutes=minutes))
        moment = datetime.datetime(
            int(year), int(month), int(day), int(hour), int(minute), min(int(second), 59),
            int((fraction or ".0")[1:7].ljust(6, "0")), tzinfo=zone,
        )  # fmt: skip
    except ValueError:  # the 31st of February, an offset of 24 hours
        return None
    return moment.timestamp()


def _cursor(raw: str | None) -> int | None:
    if raw is None:
        return None
    if not (len(raw) <= 15 and raw.isascii() and raw.isdigit()):
        raise ApiError(400, "invalid_cursor", "cursor must be the next value of an answer.")
    return int(raw)


def _unavailable() -> ApiError:
    return ApiError(
        503,
        "history_unavailable",
        "The price history database is not answering; prices are served meanwhile.",
        retry_after=UNAVAILABLE_RETRY_SECONDS,
    )


def _wants_csv() -> bool:
    return flask.request.accept_mimetypes.best_match(["application/json", "text/csv"]) == (
        "text/csv"
    )


def _respond(
    body: str, mimetype: str, max_age: int, timestamp: float | None = None
) -> flask.Response:
    """``body`` with a strong ETag of its bytes, or a 304 to a matching If-None-Match. A
    JSON ``body`` is sent with ``timestamp`` last when given: the time of the response is
    not part of what the tag validates (the live form's ticks are)."""
    tag = hashlib.blake2b(body.encode(), digest_size=9).hexdigest()
    asked = flask.request.headers.get("If-None-Match")
    if asked is not None and parse_etags(asked).contains_weak(tag):
        response = flask.Response(status=304)
    else:
        sent = body if timestamp is None else f'{body[:-1]},"timestamp":{timestamp!r}}}'
        response = flask.Response(sent, mimetype=mimetype)
    response.headers["ETag"] = f'"{tag}"'
    response.headers["Cache-Control"] = f"max-age={max_age}"
    response.headers["Vary"] = "Accept"  # JSON or CSV, by the request's Accept
    return response


def _json(document: Mapping[str, object]) -> str:
    """Compact JSON. orjson: a day of minute candles is 8,640 numbers, whose encoding
    took longer than reading them from the database (bench/NOTES.md)."""
    return orjson.dumps(document).decode()


def _csv(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def _tick_fields(tick: Tick) -> dict[str, object]:
    return {
        "price": tick.price,
        "tick": round(tick.start_ms / tick.tick_ms),
        "updated_at": tick.start_ms / 1000,
    }


@bp.get("/v1/prices/<symbol>/history")
def history(symbol: str) -> flask.Response:
    state = get_state()
    symbol = known_symbol(state, symbol)
    args = flask.request.args
    limit = history_limit(args.get("limit"))
    start = time_parameter("from", args.get("from"))
    end = time_parameter("to", args.get("to"))
    cursor = _cursor(args.get("cursor"))
    now = state.feed.now()
    if start is not None and end is not None and end <= start:
        raise ApiError(400, "invalid_range", "to must be later than from.")
    ranged = start is not None or end is not None or cursor is not None
    start_ms = cursor if cursor is not None else math.ceil(start * 1000) if start else 0
    end_ms = math.ceil((end if end is not None else LATEST) * 1000)
    try:
        if start is None and cursor is None:  # the newest ticks (before to)
            ticks = state.history.ticks(symbol, 0, end_ms, limit, newest_first=True)[::-1]
            following = None
        else:
            ticks = state.history.ticks(symbol, start_ms, end_ms, limit + 1)
            following = ticks[limit].start_ms if len(ticks) > limit else None
            ticks = ticks[:limit]
    except sa.exc.SQLAlchemyError:
        raise _unavailable() from None
    closed = end is not None and end <= now - state.settings.price_tick_seconds
    max_age = CLOSED_MAX_AGE if closed else state.feed.fresh_seconds(now)
    if _wants_csv():
        rows = ((f["tick"], f["updated_at"], f["price"]) for f in map(_tick_fields, ticks))
        return _respond(_csv(("tick", "updated_at", "price"), rows), "text/csv", max_age)
    document: dict[str, object] = {"symbol": symbol, "prices": [_tick_fields(t) for t in ticks]}
    if following is not None:
        document["next"] = str(following)
    body = _json(document)
    # The live form says when it was answered, as it always did; a range does not.
    return _respond(body, "application/json", max_age, timestamp=None if ranged else now)


def _candle_fields(candle: Candle) -> dict[str, object]:
    return {
        "start": candle.start_ms / 1000,
        "open": candle.open,
        "high": candle.high,
        "low": candle.low,
        "close": candle.close,
        "ticks": candle.ticks,
    }


def grouped(stored: Sequence[Candle], width_ms: int, stored_ms: int) -> list[Candle]:
    """Stored candles ``stored_ms`` wide (in start order) as candles ``width_ms`` wide."""
    if width_ms == stored_ms:
        return list(stored)
    groups: dict[int, list[Candle]] = {}
    for candle in stored:
        groups.setdefault(candle.start_ms - candle.start_ms % width_ms, []).append(candle)
    return [candle_of(parts, start, sums=False) for start, parts in groups.items()]


@bp.get("/v1/prices/<symbol>/candles")
def candles(symbol: str) -> flask.Response:
    state = get_state()
    symbol = known_symbol(state, symbol)
    args = flask.request.args
    interval = args.get("interval", "1m")
    if interval not in CANDLE_INTERVALS:
        raise ApiError(
            400, "invalid_interval", f"interval must be one of {', '.join(CANDLE_INTERVALS)}."
        )
    width = CANDLE_INTERVALS[interval]
    now = state.feed.now()
    end = time_parameter("to", args.get("to"))
    start = time_parameter("from", args.get("from"))
    last = end if end is not None else now
    first = start if start is not None else last - DEFAULT_CANDLES * width
    if last <= first:
        raise ApiError(400, "invalid_range", "to must be later than from.")
    width_ms = width * 1000
    start_ms = math.floor(first * 1000) // width_ms * width_ms
    end_ms = math.ceil(last * 1000)
    if (end_ms - start_ms) / width_ms > MAX_CANDLES:
        raise ApiError(
            400,
            "range_too_long",
            f"from-to spans more than {MAX_CANDLES} {interval} candles; ask for at most "
            f"{MAX_CANDLES * width // 3600:g} hours of {interval} candles at once.",
        )
    try:
        stored = state.history.candles(symbol, STORED_WIDTH[interval], start_ms, end_ms, sums=False)
    except sa.exc.SQLAlchemyError:
        raise _unavailable() from None
    found = grouped(stored, width_ms, STORED_WIDTH[interval] * 1000)
    open_from = math.floor(now / width) * width  # the candle still open now
    closed = last <= open_from
    max_age = CLOSED_MAX_AGE if closed else state.feed.fresh_seconds(now)
    if _wants_csv():
        header = ("start", "open", "high", "low", "close", "ticks")
        rows = ([f[name] for name in header] for f in map(_candle_fields, found))
        return _respond(_csv(header, rows), "text/csv", max_age)
    document = {"symbol": symbol, "interval": interval, "candles": list(map(_candle_fields, found))}
    return _respond(_json(document), "application/json", max_age)


def _statistics_fields(candle: Candle | None) -> dict[str, object]:
    """A symbol's statistics over the window (nulls where it has no tick there)."""
    if candle is None or candle.sum_price is None:
        return {"ticks": 0, **dict.fromkeys(STATISTICS)}
    change = candle.close - candle.open
    return {
        "ticks": candle.ticks,
        "first": candle.open,
        "last": candle.close,
        "change": round(change, 2),
        "change_pct": round(100 * change / candle.open, 4),
        "min": candle.low,
        "max": candle.high,
        "mean": round(candle.sum_price / candle.ticks, 4),
        "volatility": candle.volatility(),
    }


STATISTICS = ("first", "last", "change", "change_pct", "min", "max", "mean", "volatility")


def _correlations(
    symbols: Sequence[str], pairs: dict[tuple[str, str], Comoments], found: dict[str, Candle]
) -> dict[str, dict[str, float | None]]:
    """The matrix of the symbols' log-return correlations (1 on the diagonal, where a
    symbol's returns vary; null where there are too few pairs to tell)."""
    matrix: dict[str, dict[str, float | None]] = {}
    for x in symbols:
        row: dict[str, float | None] = {}
        for y in symbols:
            if x == y:
                volatility = found[x].volatility() if x in found else None
                row[y] = 1.0 if volatility else None
            else:
                sums = pairs.get((min(x, y), max(x, y)))
                row[y] = sums.correlation() if sums is not None else None
        matrix[x] = row
    return matrix


@bp.get("/v1/stats")
def stats() -> flask.Response:
    state = get_state()
    symbols = requested_symbols(state)
    args = flask.request.args
    window = args.get("window", DEFAULT_STATS_WINDOW)
    if window not in STATS_WINDOWS:
        raise ApiError(400, "invalid_window", f"window must be one of {', '.join(STATS_WINDOWS)}.")
    now = state.feed.now()
    end = time_parameter("to", args.get("to"))
    if end is None:  # up to now, the minute still open included
        end_ms = (math.floor(now / 60) + 1) * 60_000
    else:
        end_ms = math.ceil(end * 1000 / 60_000) * 60_000
    start_ms = end_ms - STATS_WINDOWS[window] * 1000
    try:
        found, pairs = state.history.statistics(symbols, start_ms, end_ms)
    except sa.exc.SQLAlchemyError:
        raise _unavailable() from None
    document = {
        "window": window,
        "from": start_ms / 1000,
        "to": end_ms / 1000,
        "symbols": {symbol: _statistics_fields(found.get(symbol)) for symbol in symbols},
        "correlation": _correlations(symbols, pairs, found),
    }
    closed = end_ms <= math.floor(now / 60) * 60_000  # the window's last minute has ended
    max_age = CLOSED_MAX_AGE if closed else state.feed.fresh_seconds(now)
    return _respond(_json(document), "application/json", max_age)
