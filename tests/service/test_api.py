"""The price endpoints: fields, ETags and 304s, batches, history, and their bad requests."""

from __future__ import annotations

import math
import threading
import time

import flask
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.api import LONG_POLL_MAX_SECONDS, preferred_wait
from service.app import create_app
from service.config import Settings
from service.state import get_state
from tests.conftest import PINNED_NOW, AppFactory

QUOTE_FIELDS = {"price", "timestamp", "symbol", "tick", "updated_at", "next_update_at"}


def test_crypto_price_keeps_the_seed_fields_and_adds_tick_times(
    pinned: flask.testing.FlaskClient,
) -> None:
    response = pinned.get("/crypto-price")
    assert response.status_code == 200
    assert response.content_type == "application/json"
    body = response.get_json()
    assert list(body)[:1] == ["price"] and set(body) == QUOTE_FIELDS
    assert body["symbol"] == "BTC" and body["tick"] == 566_666_666
    assert 50 <= body["price"] <= 200 and body["price"] == round(body["price"], 2)
    assert body["timestamp"] == PINNED_NOW
    assert (body["updated_at"], body["next_update_at"]) == (1_699_999_998.0, 1_700_000_001.0)


def test_the_real_clock_is_the_default(client: flask.testing.FlaskClient) -> None:
    before = time.time()
    body = client.get("/crypto-price").get_json()
    assert before <= body["timestamp"] <= time.time()
    assert body["tick"] == math.floor(body["timestamp"] / 3.0)


def test_polling_etiquette_headers(pinned: flask.testing.FlaskClient) -> None:
    response = pinned.get("/crypto-price")
    etag, weak = response.get_etag()
    assert etag is not None and etag.startswith("566666666-") and not weak
    assert response.cache_control.max_age == 0  # 0.5 s left in the tick: whole seconds
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert len(response.headers["X-Request-ID"]) >= 16


def test_matching_if_none_match_gets_304_without_body_and_counts_as_not_modified(
    pinned: flask.testing.FlaskClient,
) -> None:
    first = pinned.get("/crypto-price?symbol=eth")
    tag = first.headers["ETag"]
    for header in (tag, f"W/{tag}", f'"other", {tag}', "*"):
        again = pinned.get("/crypto-price?symbol=ETH", headers={"If-None-Match": header})
        assert again.status_code == 304, header
        assert again.data == b"" and again.headers["ETag"] == tag
        assert again.headers["Cache-Control"] == "max-age=0"
    stale = pinned.get("/crypto-price?symbol=ETH", headers={"If-None-Match": '"1-abc"'})
    assert stale.status_code == 200
    metrics = pinned.get("/metrics").get_data(as_text=True)
    assert 'polls_total{outcome="not_modified",symbol="ETH"} 4.0' in metrics
    assert 'polls_total{outcome="fresh",symbol="ETH"} 2.0' in metrics
    assert 'polls_total{outcome="fresh",symbol="BTC"} 0.0' in metrics


def test_etag_differs_per_symbol_and_between_seeds(make_app: AppFactory) -> None:
    one = make_app(PRICE_TICK_SECONDS="3600").test_client()
    other = make_app(PRICE_TICK_SECONDS="3600", PRICE_SEED="other").test_client()
    tags = {
        one.get("/crypto-price?symbol=BTC").headers["ETag"],
        one.get("/crypto-price?symbol=ETH").headers["ETag"],
        other.get("/crypto-price?symbol=BTC").headers["ETag"],
    }
    assert len(tags) == 3


@pytest.mark.parametrize(
    ("path", "status", "error"),
    [
        ("/crypto-price?symbol=DOGE", 404, "unknown_symbol"),
        ("/crypto-price?symbol=b%C3%A9", 400, "invalid_symbol"),
        ("/crypto-price?symbol=", 400, "invalid_symbol"),
        ("/crypto-price?symbol=" + "A" * 5000, 400, "invalid_symbol"),
        ("/v1/prices?symbols=BTC,NOPE", 404, "unknown_symbol"),
        ("/v1/prices?symbols=BTC,,ETH", 400, "invalid_symbol"),
        ("/v1/prices?symbols=" + ",".join(["BTC"] * 51), 400, "too_many_symbols"),
        ("/v1/prices/NOPE/history", 404, "unknown_symbol"),
        ("/v1/prices/BTC/history?limit=0", 400, "invalid_limit"),
        ("/v1/prices/BTC/history?limit=-1", 400, "invalid_limit"),
        ("/v1/prices/BTC/history?limit=ten", 400, "invalid_limit"),
        ("/v1/prices/BTC/history?limit=1001", 400, "invalid_limit"),
        ("/v1/prices/BTC/history?limit=" + "9" * 5000, 400, "invalid_limit"),
        ("/v1/prices/BTC/history?limit=%EF%BC%95", 400, "invalid_limit"),  # fullwidth 5
        ("/no/such/path", 404, "not_found"),
    ],
)
def test_bad_requests_get_json_errors(
    client: flask.testing.FlaskClient, path: str, status: int, error: str
) -> None:
    response = client.get(path)
    assert response.status_code == status
    assert response.content_type == "application/json"
    body = response.get_json()
    assert body["error"] == error and body["message"]
    assert "Traceback" not in response.get_data(as_text=True)


def test_unknown_symbol_lists_the_valid_ones(client: flask.testing.FlaskClient) -> None:
    body = client.get("/crypto-price?symbol=DOGE").get_json()
    assert body["valid_symbols"] == ["BTC", "ETH", "SOL", "XRP"]
    assert "BTC" in body["message"]


def test_batch_prices_all_some_and_repeated(client: flask.testing.FlaskClient) -> None:
    everything = client.get("/v1/prices").get_json()
    assert [p["symbol"] for p in everything["prices"]] == ["BTC", "ETH", "SOL", "XRP"]
    assert all(set(p) == QUOTE_FIELDS - {"timestamp"} for p in everything["prices"])
    some = client.get("/v1/prices?symbols=sol,BTC,SOL").get_json()
    assert [p["symbol"] for p in some["prices"]] == ["SOL", "BTC"]
    assert isinstance(some["timestamp"], float)


def test_batch_and_single_agree_within_a_tick(make_app: AppFactory) -> None:
    client = make_app(PRICE_TICK_SECONDS="3600").test_client()
    single = client.get("/crypto-price?symbol=XRP").get_json()
    batch = client.get("/v1/prices?symbols=XRP").get_json()["prices"][0]
    assert (batch["price"], batch["tick"]) == (single["price"], single["tick"])


def test_a_long_poll_is_answered_when_the_tick_turns(make_app: AppFactory) -> None:
    client = make_app(PRICE_TICK_SECONDS="0.5").test_client()
    first = client.get("/v1/prices?symbols=BTC,ETH")
    started = time.monotonic()
    held = client.get(
        "/v1/prices?symbols=BTC,ETH",
        headers={"If-None-Match": first.headers["ETag"], "Prefer": "wait=5"},
    )
    assert held.status_code == 200 and time.monotonic() - started < 1.5
    assert held.headers["Preference-Applied"] == "wait=5"
    ticks = {p["tick"] for p in held.get_json()["prices"]}
    assert ticks == {first.get_json()["prices"][0]["tick"] + 1}


def test_a_long_poll_that_runs_out_of_time_is_a_304(pinned: flask.testing.FlaskClient) -> None:
    tag = pinned.get("/crypto-price").headers["ETag"]
    started = time.monotonic()
    held = pinned.get("/crypto-price", headers={"If-None-Match": tag, "Prefer": "wait=1"})
    assert held.status_code == 304 and 1.0 <= time.monotonic() - started < 3
    assert held.headers["Preference-Applied"] == "wait=1"
    text = pinned.get("/metrics").get_data(as_text=True)
    assert "long_polls_waiting 0.0" in text
    assert 'polls_total{outcome="not_modified",symbol="BTC"} 1.0' in text


def test_without_a_current_tag_or_a_valid_prefer_nothing_waits(
    pinned: flask.testing.FlaskClient,
) -> None:
    started = time.monotonic()
    fresh = pinned.get("/crypto-price", headers={"Prefer": "wait=30"})
    assert fresh.status_code == 200 and fresh.headers["Preference-Applied"] == "wait=30"
    stale = pinned.get("/crypto-price", headers={"Prefer": "wait=600", "If-None-Match": '"1-a"'})
    assert stale.status_code == 200 and stale.headers["Preference-Applied"] == "wait=60"
    for prefer in ("wait=0", "wait=abc", "handling=lenient", "wait=-3"):
        tag = pinned.get("/crypto-price").headers["ETag"]
        plain = pinned.get("/crypto-price", headers={"Prefer": prefer, "If-None-Match": tag})
        assert plain.status_code == 304 and "Preference-Applied" not in plain.headers, prefer
    assert time.monotonic() - started < 1


def test_prefer_wait_beyond_what_anyone_holds_is_the_cap_and_not_a_number_is_no_wait(
    pinned: flask.testing.FlaskClient,
) -> None:
    fresh = pinned.get("/crypto-price", headers={"Prefer": "wait=1000001"})
    assert fresh.headers["Preference-Applied"] == "wait=60"
    for prefer in ("wait=1e400", "wait=1.5", 'wait="2', "wait=1 2"):
        tag = pinned.get("/crypto-price").headers["ETag"]
        plain = pinned.get("/crypto-price", headers={"Prefer": prefer, "If-None-Match": tag})
        assert plain.status_code == 304 and "Preference-Applied" not in plain.headers, prefer


TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-!#$%&'*+.^_`|~0123456789", min_size=1)
QUOTED = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters='"\\')
).map(lambda text: f'"{text}"')
WORD = TOKEN | QUOTED  # RFC 7240's word: a token or a quoted string


@given(prefer=st.text(max_size=200))
def test_any_prefer_header_is_no_wait_or_a_wait_within_bounds(prefer: str) -> None:
    wait = preferred_wait(prefer)
    assert wait is None or 1 <= wait <= LONG_POLL_MAX_SECONDS


@given(
    before=st.lists(st.tuples(TOKEN, WORD).filter(lambda p: p[0].lower() != "wait"), max_size=3),
    seconds=st.integers(min_value=0, max_value=10**30),
    quoted=st.booleans(),
    parameters=st.lists(st.tuples(TOKEN, WORD), max_size=2),
    after=st.lists(st.tuples(TOKEN, WORD), max_size=3),
    case=st.sampled_from(["wait", "WAIT", "Wait"]),
)
def test_the_first_wait_preference_is_read_as_rfc_7240_writes_it(
    before: list[tuple[str, str]],
    seconds: int,
    quoted: bool,
    parameters: list[tuple[str, str]],
    after: list[tuple[str, str]],
    case: str,
) -> None:
    value = f'"{seconds}"' if quoted else str(seconds)
    wait = f"{case} = {value}" + "".join(f"; {name}={word}" for name, word in parameters)
    header = ", ".join([*(f"{n}={w}" for n, w in before), wait, *(f"{n}={w}" for n, w in after)])
    assert preferred_wait(header) == (min(seconds, LONG_POLL_MAX_SECONDS) or None), header


def test_a_long_poll_ends_at_once_when_the_service_starts_draining(make_app: AppFactory) -> None:
    app = make_app(clock=lambda: PINNED_NOW)
    client = app.test_client()
    tag = client.get("/crypto-price").headers["ETag"]
    threading.Timer(0.3, get_state(app).start_draining).start()
    started = time.monotonic()
    held = client.get("/crypto-price", headers={"If-None-Match": tag, "Prefer": "wait=30"})
    assert held.status_code == 503 and time.monotonic() - started < 2
    assert held.get_json()["error"] == "shutting_down"
    assert held.headers["Retry-After"] == "1" and held.headers["Connection"] == "close"
    # A new long-poll or stream is refused at once; a plain poll is still answered.
    again = client.get("/crypto-price", headers={"If-None-Match": tag, "Prefer": "wait=30"})
    assert again.status_code == 503
    assert client.get("/v1/prices/stream").status_code == 503
    assert client.get("/crypto-price", headers={"If-None-Match": tag}).status_code == 304


def test_a_long_poll_behind_the_tick_catches_up_one_tick_at_a_time(make_app: AppFactory) -> None:
    client = make_app(PRICE_TICK_SECONDS="0.5").test_client()
    first = client.get("/v1/prices?symbols=ETH")
    tick = first.get_json()["prices"][0]["tick"]
    time.sleep(1.1)  # two ticks or more pass unseen, as in an outage
    plain = client.get("/v1/prices?symbols=ETH", headers={"If-None-Match": first.headers["ETag"]})
    assert plain.get_json()["prices"][0]["tick"] >= tick + 2  # a poll gets the current tick
    tag, seen = first.headers["ETag"], []
    for _ in range(3):
        caught_up = client.get(
            "/v1/prices?symbols=ETH", headers={"If-None-Match": tag, "Prefer": "wait=5"}
        )
        assert caught_up.status_code == 200
        tag = caught_up.headers["ETag"]
        seen.append(caught_up.get_json()["prices"][0]["tick"])
    assert seen == [tick + 1, tick + 2, tick + 3]  # every tick, none skipped
    foreign = client.get(
        "/v1/prices?symbols=BTC", headers={"If-None-Match": tag, "Prefer": "wait=1"}
    )
    assert foreign.status_code == 200  # another subject's tag is just not current


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    if_none_match=st.sampled_from(['""', "*", 'W/""', '"566666665-x"', ",", '"', "W/"])
    | st.lists(st.sampled_from(['"', "W/", ",", " ", "-", "5", "a", "*"]), max_size=12).map("".join)
    | st.text(max_size=80).map(lambda t: t.encode("utf-8").decode("latin-1")),
    prefer=st.sampled_from(["wait=1", "wait=0", "wait=1, respond-async", "wait=x", ""]),
)
def test_any_if_none_match_with_a_long_poll_is_answered_never_500(
    if_none_match: str, prefer: str
) -> None:
    # The clock is pinned 0.1 s before a tick, so a held long-poll ends within it.
    app = create_app(
        Settings.from_env({"LOG_LEVEL": "critical", "RATE_LIMIT": "1000000/minute"}),
        clock=lambda: 1_699_999_998.0 - 0.1,
    )
    headers = {"If-None-Match": if_none_match, "Prefer": prefer}
    if any(c in if_none_match for c in "\r\n\0"):
        return  # not a header a client can send
    response = app.test_client().get("/crypto-price", headers=headers)
    assert response.status_code in (200, 304), (response.status_code, headers)


def test_a_long_poll_beyond_the_workers_held_connections_is_refused_with_503(
    make_app: AppFactory,
) -> None:
    app = make_app(clock=lambda: PINNED_NOW, MAX_HELD_CONNECTIONS="0")
    client = app.test_client()
    tag = client.get("/crypto-price").headers["ETag"]
    refused = client.get("/crypto-price", headers={"If-None-Match": tag, "Prefer": "wait=30"})
    assert refused.status_code == 503 and refused.json["error"] == "over_capacity"  # type: ignore[index]
    assert 2 <= int(refused.headers["Retry-After"]) <= 6
    assert client.get("/crypto-price", headers={"If-None-Match": tag}).status_code == 304
