"""The history endpoints on a real SQLite file filled by the backfill (pinned clock):
ticks as they were served, ranges paged exactly once, candles that say what the ticks
say, CSV, ETags, and a clear 400 for every bad parameter."""

from __future__ import annotations

import csv
import datetime
import io
import itertools
import math
import statistics
from collections.abc import Callable
from pathlib import Path

import flask
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from service.backfill import backfill
from service.config import Settings
from service.database import create_engine, upgrade
from service.errors import ApiError
from service.history_api import (
    CANDLE_INTERVALS,
    EARLIEST,
    LATEST,
    MAX_CANDLES,
    STATISTICS,
    TIME_SCHEMA,
    time_parameter,
)
from service.history_store import HistoryStore
from service.prices import PriceModel
from tests.conftest import PINNED_NOW, AppFactory

TICK = 60.0  # a day is 1,441 ticks: quick to backfill, several hours and a day of candles


@pytest.fixture(scope="module")
def recorded_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of an app whose history holds the day before PINNED_NOW."""
    url = f"sqlite:///{tmp_path_factory.mktemp('history')}/history.sqlite3"
    env = {"DATABASE_URL": url, "PRICE_TICK_SECONDS": str(TICK), "RATE_LIMIT": "10000/minute"}
    engine = create_engine(url)
    upgrade(engine)
    backfill(Settings.from_env(env), HistoryStore(engine), 1.0, clock=lambda: PINNED_NOW)
    engine.dispose()
    return env


@pytest.fixture
def recorded(
    recorded_env: dict[str, str], make_app: AppFactory
) -> Callable[..., flask.testing.FlaskClient]:
    env = recorded_env

    def client(now: float = PINNED_NOW) -> flask.testing.FlaskClient:
        return make_app(clock=lambda: now, **env).test_client()

    return client


def all_ticks(client: flask.testing.FlaskClient) -> list[dict[str, float]]:
    found: list[dict[str, float]] = []
    url = "/v1/prices/BTC/history?from=946684800&limit=1000"
    while url:
        body = client.get(url).get_json()
        found += body["prices"]
        url = f"/v1/prices/BTC/history?cursor={body['next']}&limit=1000" if "next" in body else ""
    return found


def test_the_newest_ticks_are_those_the_feed_served(
    recorded: Callable[..., flask.testing.FlaskClient],
) -> None:
    client = recorded()
    body = client.get("/v1/prices/btc/history?limit=25").get_json()
    assert list(body) == ["symbol", "prices", "timestamp"] and body["timestamp"] == PINNED_NOW
    prices = body["prices"]
    assert len(prices) == 25
    current = int(PINNED_NOW // TICK)
    assert [p["tick"] for p in prices] == list(range(current - 24, current + 1))
    served = client.get("/crypto-price?symbol=BTC").get_json()
    assert (
        prices[-1]["price"] == served["price"] and prices[-1]["updated_at"] == served["updated_at"]
    )
    assert len(client.get("/v1/prices/BTC/history").get_json()["prices"]) == 10


def test_a_range_is_paged_exactly_once_and_answers_the_same_bytes_each_time(
    recorded: Callable[..., flask.testing.FlaskClient],
) -> None:
    client = recorded()
    ticks = all_ticks(client)
    assert len(ticks) == 1441
    assert all(b["tick"] - a["tick"] == 1 for a, b in itertools.pairwise(ticks))
    start, end = ticks[100]["updated_at"], ticks[400]["updated_at"]
    unix = client.get(f"/v1/prices/BTC/history?from={start}&to={end}&limit=1000")
    rfc3339 = (
        datetime.datetime.fromtimestamp(start, datetime.UTC).isoformat().replace("+00:00", "Z")
    )
    as_text = client.get(f"/v1/prices/BTC/history?from={rfc3339}&to={end}&limit=1000")
    assert unix.data == as_text.data
    assert [p["tick"] for p in unix.get_json()["prices"]] == [t["tick"] for t in ticks[100:400]]
    later = recorded(PINNED_NOW + 3600)  # an hour on: the range's answer is as it was
    assert later.get(f"/v1/prices/BTC/history?from={start}&to={end}&limit=1000").data == unix.data
    assert unix.headers["Cache-Control"] == "max-age=3600"
    again = client.get(
        f"/v1/prices/BTC/history?from={start}&to={end}&limit=1000",
        headers={"If-None-Match": unix.headers["ETag"]},
    )
    assert again.status_code == 304 and again.data == b""


def test_the_newest_ticks_are_not_modified_until_a_tick_is_stored(
    recorded: Callable[..., flask.testing.FlaskClient],
) -> None:
    first = recorded().get("/v1/prices/BTC/history?limit=5")
    tag = first.headers["ETag"]
    same = recorded(PINNED_NOW + 1).get(  # later in the same tick: a new timestamp only
        "/v1/prices/BTC/history?limit=5", headers={"If-None-Match": tag}
    )
    assert same.status_code == 304 and same.headers["ETag"] == tag
    assert first.headers["Vary"] == "Accept"
    as_csv = recorded().get("/v1/prices/BTC/history?limit=5", headers={"Accept": "text/csv"})
    assert as_csv.headers["ETag"] != tag  # another representation, another tag


def test_csv_says_what_json_says(recorded: Callable[..., flask.testing.FlaskClient]) -> None:
    client = recorded()
    as_json = client.get("/v1/prices/ETH/history?limit=30").get_json()["prices"]
    answer = client.get("/v1/prices/ETH/history?limit=30", headers={"Accept": "text/csv"})
    assert answer.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(answer.get_data(as_text=True))))
    assert [(int(r["tick"]), float(r["updated_at"]), float(r["price"])) for r in rows] == [
        (p["tick"], p["updated_at"], p["price"]) for p in as_json
    ]
    candles = client.get("/v1/prices/ETH/candles?interval=1h", headers={"Accept": "text/csv"})
    assert candles.get_data(as_text=True).splitlines()[0] == "start,open,high,low,close,ticks"


@pytest.mark.parametrize("interval", list(CANDLE_INTERVALS))
def test_candles_say_what_the_ticks_say(
    recorded: Callable[..., flask.testing.FlaskClient], interval: str
) -> None:
    client = recorded()
    ticks = all_ticks(client)
    width = CANDLE_INTERVALS[interval]
    body = client.get(
        f"/v1/prices/BTC/candles?interval={interval}&from={PINNED_NOW - 86400 - width}"
    ).get_json()
    assert body["symbol"] == "BTC" and body["interval"] == interval
    expected = []
    for start, group in itertools.groupby(ticks, key=lambda t: t["updated_at"] // width * width):
        prices = [t["price"] for t in group]
        expected.append(
            {"start": start, "open": prices[0], "high": max(prices), "low": min(prices),
             "close": prices[-1], "ticks": len(prices)}
        )  # fmt: skip
    assert body["candles"] == expected


@pytest.mark.parametrize(
    ("query", "status", "error", "fragment"),
    [
        ("/v1/prices/BTC/history?from=yesterday", 400, "invalid_from", "RFC 3339"),
        ("/v1/prices/BTC/history?to=1e400", 400, "invalid_to", "unix seconds"),
        ("/v1/prices/BTC/history?to=-5", 400, "invalid_to", "unix seconds"),
        ("/v1/prices/BTC/history?from=2026-12-01T12:00:00", 400, "invalid_from", "offset"),
        ("/v1/prices/BTC/history?from=2026-02-30T12:00:00Z", 400, "invalid_from", "RFC 3339"),
        (
            "/v1/prices/BTC/history?from=2026-12-01T12:00:00%2B24:00",
            400,
            "invalid_from",
            "RFC 3339",
        ),
        (
            "/v1/prices/BTC/history?from=1800000000&to=1700000000",
            400,
            "invalid_range",
            "later than from",
        ),
        ("/v1/prices/BTC/history?cursor=abc", 400, "invalid_cursor", "cursor"),
        ("/v1/prices/BTC/history?limit=1001", 400, "invalid_limit", "1 to 1000"),
        ("/v1/prices/BTC/candles?interval=2m", 400, "invalid_interval", "1m, 5m, 15m, 1h, 1d"),
        (
            "/v1/prices/BTC/candles?interval=1m&from=1600000000",
            400,
            "range_too_long",
            f"{MAX_CANDLES} 1m",
        ),
        (
            "/v1/prices/BTC/candles?from=1800000000&to=1700000000",
            400,
            "invalid_range",
            "later than from",
        ),
        ("/v1/stats?window=2h", 400, "invalid_window", "1h, 24h, 7d"),
        ("/v1/stats?window=", 400, "invalid_window", "1h, 24h, 7d"),
        ("/v1/stats?to=yesterday", 400, "invalid_to", "RFC 3339"),
        ("/v1/stats?symbols=BTC,XYZ", 404, "unknown_symbol", "valid symbols"),
    ],
)
def test_a_bad_parameter_is_a_400_that_names_it_and_its_bound(
    recorded: Callable[..., flask.testing.FlaskClient],
    query: str,
    status: int,
    error: str,
    fragment: str,
) -> None:
    answer = recorded().get(query)
    assert answer.status_code == status
    body = answer.get_json()
    assert body["error"] == error and fragment in body["message"], body


@given(
    st.text(max_size=60)
    | st.datetimes(timezones=st.timezones()).map(lambda moment: moment.isoformat())
    | st.floats(0, 1e10).map(lambda seconds: f"{seconds:.3f}")
)
def test_any_time_parameter_is_a_time_in_bounds_or_a_400(raw: str) -> None:
    refused: tuple[int | None, str] | None = None
    try:
        value = time_parameter("from", raw)
    except ApiError as error:
        refused = (error.code, error.error)
    else:
        assert value is not None and EARLIEST <= value <= LATEST
    assert refused in (None, (400, "invalid_from"))


def test_a_database_that_does_not_answer_fails_the_history_and_nothing_else(
    make_app: AppFactory, tmp_path: Path
) -> None:
    client = make_app(
        DATABASE_URL=f"sqlite:///{tmp_path}/missing/dir/history.sqlite3"
    ).test_client()
    answer = client.get("/v1/prices/BTC/history")
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
    assert answer.get_json()["error"] == "history_unavailable"
    assert client.get("/v1/prices/BTC/candles").status_code == 503
    assert client.get("/v1/stats").status_code == 503
    assert client.get("/v1/prices").status_code == 200
    assert client.get("/crypto-price").status_code == 200


@given(st.datetimes(timezones=st.timezones()))
def test_an_rfc_3339_time_is_the_instant_it_names(moment: datetime.datetime) -> None:
    text = moment.isoformat(timespec="microseconds")
    offset = moment.utcoffset()
    assume(offset is None or offset.seconds % 60 == 0)  # RFC 3339 offsets are whole minutes
    expected = min(max(moment.timestamp(), EARLIEST), LATEST)
    assert time_parameter("from", text) == pytest.approx(expected, abs=1e-6)


def test_the_document_describes_the_times_that_are_read() -> None:
    import jsonschema  # type: ignore[import-untyped]

    checker = jsonschema.Draft202012Validator(
        TIME_SCHEMA, format_checker=jsonschema.FormatChecker()
    )
    for text in [
        "1796000000",
        "1796000000.25",
        "2026-12-01T12:00:00Z",
        "2026-12-01t12:00:00+05:30",
    ]:
        assert checker.is_valid(text) and time_parameter("to", text) is not None


def served_statistics(
    stored: set[int], symbols: list[str], first: int, last: int
) -> tuple[dict[str, dict[str, float]], dict[tuple[str, str], float]]:
    """Straight from the price model (what the feed served), over the stored ticks from
    first to last: the statistics and the correlations of the log returns."""
    model = PriceModel(Settings().price_seed, Settings().symbols)
    ticks = [tick for tick in range(first, last + 1) if tick in stored]
    returns = {
        symbol: {
            tick: math.log(model.price(symbol, tick) / model.price(symbol, tick - 1))
            for tick in ticks
            if tick - 1 in stored
        }
        for symbol in symbols
    }
    found = {}
    for symbol in symbols:
        prices = [model.price(symbol, tick) for tick in ticks]
        found[symbol] = {
            "ticks": len(prices), "first": prices[0], "last": prices[-1], "min": min(prices),
            "max": max(prices), "mean": statistics.fmean(prices),
            "volatility": statistics.stdev(returns[symbol].values()),
            "change_pct": 100 * (prices[-1] - prices[0]) / prices[0],
        }  # fmt: skip
    correlations = {
        (x, y): statistics.correlation(list(returns[x].values()), list(returns[y].values()))
        for x, y in itertools.combinations(symbols, 2)
    }
    return found, correlations


@pytest.mark.parametrize(("window", "hours_before"), [("1h", 3), ("24h", 0)])
def test_statistics_say_what_the_model_served_in_the_window(
    recorded: Callable[..., flask.testing.FlaskClient], window: str, hours_before: int
) -> None:
    client = recorded()
    to = (PINNED_NOW - hours_before * 3600) // 60 * 60  # a whole minute
    answer = client.get(f"/v1/stats?symbols=ETH,BTC,SOL&window={window}&to={to:.0f}")
    assert answer.status_code == 200
    body = answer.get_json()
    seconds = {"1h": 3600, "24h": 86_400}[window]
    assert (body["window"], body["from"], body["to"]) == (window, to - seconds, to)
    assert list(body["symbols"]) == ["ETH", "BTC", "SOL"]  # as asked
    stored = {int(point["tick"]) for point in all_ticks(client)}
    first, last = math.ceil((to - seconds) / TICK), math.ceil(to / TICK) - 1
    expected, correlations = served_statistics(stored, ["ETH", "BTC", "SOL"], first, last)
    for symbol, want in expected.items():
        got = body["symbols"][symbol]
        assert got["ticks"] == want["ticks"] and got["ticks"] > 50
        assert (got["first"], got["last"], got["min"], got["max"]) == (
            want["first"], want["last"], want["min"], want["max"]
        )  # fmt: skip
        assert got["change"] == round(want["last"] - want["first"], 2)
        assert got["change_pct"] == pytest.approx(want["change_pct"], abs=1e-4)
        assert got["mean"] == pytest.approx(want["mean"], abs=1e-4)
        assert got["volatility"] == pytest.approx(want["volatility"], rel=1e-9)
    matrix = body["correlation"]
    assert list(matrix) == ["ETH", "BTC", "SOL"]
    for (x, y), want_r in correlations.items():
        assert matrix[x][y] == matrix[y][x] == pytest.approx(want_r, rel=1e-9, abs=1e-12)
    assert all(matrix[s][s] == 1.0 for s in matrix)


def test_a_closed_window_answers_the_same_bytes_and_may_be_cached_long(
    recorded: Callable[..., flask.testing.FlaskClient],
) -> None:
    query = f"/v1/stats?window=1h&to={PINNED_NOW - 7200:.0f}"
    first = recorded().get(query)
    later = recorded(PINNED_NOW + 600).get(query)
    assert first.data == later.data and first.headers["Cache-Control"] == "max-age=3600"
    again = recorded().get(query, headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304


def test_the_live_window_ends_with_the_minute_still_open(
    recorded: Callable[..., flask.testing.FlaskClient],
) -> None:
    answer = recorded().get("/v1/stats?window=1h&symbols=BTC")
    body = answer.get_json()
    minute_end = (PINNED_NOW // 60 + 1) * 60
    assert (body["from"], body["to"]) == (minute_end - 3600, minute_end)
    newest = recorded().get("/v1/prices/BTC/history?limit=1").get_json()["prices"][-1]
    assert body["symbols"]["BTC"]["last"] == newest["price"]  # the current tick's
    assert answer.headers["Cache-Control"] == f"max-age={math.floor(TICK - PINNED_NOW % TICK)}"


def test_a_window_without_ticks_has_nulls_not_zeros(
    recorded: Callable[..., flask.testing.FlaskClient],
) -> None:
    body = recorded().get("/v1/stats?window=1h&symbols=BTC,ETH&to=1000000000").get_json()
    assert body["symbols"]["BTC"] == {"ticks": 0, **dict.fromkeys(STATISTICS)}
    assert body["correlation"] == {
        "BTC": {"BTC": None, "ETH": None},
        "ETH": {"BTC": None, "ETH": None},
    }
