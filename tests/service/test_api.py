"""Every route and error of the HTTP API, through Flask's test client."""

from __future__ import annotations

import math
import time

import flask
import pytest
from openapi_spec_validator import validate

from service.state import get_state
from tests.conftest import AppFactory

QUOTE_FIELDS = {"price", "timestamp", "symbol", "tick", "updated_at", "next_update_at"}
NOW = 1_700_000_000.5  # tick 566,666,666 of 3 s, 2 s before the next: pinned, it never turns


@pytest.fixture
def pinned(make_app: AppFactory) -> flask.testing.FlaskClient:
    return make_app(clock=lambda: NOW).test_client()


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
    assert body["timestamp"] == NOW
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


def test_wrong_method_is_a_json_405_with_allow(client: flask.testing.FlaskClient) -> None:
    response = client.post("/crypto-price", data="x")
    assert response.status_code == 405
    assert response.get_json()["error"] == "method_not_allowed"
    assert "GET" in response.headers["Allow"]


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


def test_history_returns_the_last_ticks_oldest_first(pinned: flask.testing.FlaskClient) -> None:
    body = pinned.get("/v1/prices/eth/history?limit=25").get_json()
    ticks = [p["tick"] for p in body["prices"]]
    assert body["symbol"] == "ETH"
    assert ticks == list(range(566_666_666 - 24, 566_666_666 + 1))
    assert len(pinned.get("/v1/prices/ETH/history").get_json()["prices"]) == 10
    current = pinned.get("/crypto-price?symbol=ETH").get_json()
    assert body["prices"][-1]["price"] == current["price"]


def test_probes_and_documents(client: flask.testing.FlaskClient, make_app: AppFactory) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/readyz").get_json() == {"status": "ready"}
    app = make_app()
    get_state(app).draining.set()
    draining = app.test_client().get("/readyz")
    assert draining.status_code == 503 and draining.get_json()["error"] == "draining"
    document = client.get("/openapi.json").get_json()
    validate(document)
    assert set(document["paths"]) == {
        "/crypto-price",
        "/v1/prices",
        "/v1/prices/{symbol}/history",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    }


def test_request_id_is_echoed_when_sane_and_replaced_otherwise(
    client: flask.testing.FlaskClient,
) -> None:
    assert (
        client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"]
        == "abc-123"
    )
    replaced = client.get("/healthz", headers={"X-Request-ID": "x" * 5000}).headers["X-Request-ID"]
    assert replaced != "x" * 5000 and len(replaced) == 32
    injected = client.get("/healthz", headers={"X-Request-ID": "a b<script>"})
    assert injected.headers["X-Request-ID"] != "a b<script>"


def test_metrics_count_requests_by_rule_and_fold_unmatched_paths(
    pinned: flask.testing.FlaskClient,
) -> None:
    client = pinned
    for path in ("/crypto-price", "/crypto-price?symbol=ETH", "/a", "/b/c", "/d"):
        client.get(path)
    client.open("/crypto-price", method="BREW")
    xrp = client.get("/crypto-price?symbol=XRP").get_json()
    text = client.get("/metrics").get_data(as_text=True)
    assert 'http_requests_total{method="GET",route="/crypto-price",status="200"} 3.0' in text
    assert 'http_requests_total{method="GET",route="unmatched",status="404"} 3.0' in text
    assert 'http_requests_total{method="OTHER",route="unmatched",status="405"} 1.0' in text
    assert f'crypto_price{{symbol="XRP"}} {xrp["price"]}' in text
    assert "crypto_price_tick 5.66666666e+08" in text
    assert "crypto_service_build_info{" in text
    assert "http_requests_in_flight 1.0" in text  # the scrape itself


def test_injected_faults_answer_json_500(make_app: AppFactory) -> None:
    client = make_app(FAULT_ERROR_RATE="1").test_client()
    response = client.get("/crypto-price")
    assert response.status_code == 500
    assert response.get_json()["error"] == "injected_fault"
    assert client.get("/healthz").status_code == 200  # only price endpoints are faulted


def test_unexpected_exceptions_are_a_bare_json_500(make_app: AppFactory) -> None:
    app = make_app()

    def explode() -> str:
        raise RuntimeError("secret internals")

    app.add_url_rule("/explode", view_func=explode)
    response = app.test_client().get("/explode")
    assert response.status_code == 500
    assert response.get_json() == {
        "error": "internal_server_error",
        "message": "Internal server error.",
    }
    assert "secret" not in response.get_data(as_text=True)
