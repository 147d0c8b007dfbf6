"""The WSGI middleware: request IDs, security headers, metrics per matched URL rule."""

from __future__ import annotations

import flask


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
