"""The service's metrics: known series exist at zero, new ticks move the price gauges."""

from __future__ import annotations

from service.metrics import Metrics
from service.prices import TickQuote


def exposition(metrics: Metrics) -> str:
    return metrics.exposition()[0].decode()


def test_known_series_start_at_zero_so_rates_exist_before_the_first_event() -> None:
    metrics = Metrics(["BTC", "ETH"])
    metrics.start_rate_limit_series(["/crypto-price"], ["api_key", "anonymous"])
    text = exposition(metrics)
    for symbol in ("BTC", "ETH"):
        for outcome in ("fresh", "not_modified"):
            assert f'polls_total{{outcome="{outcome}",symbol="{symbol}"}} 0.0' in text
    for client_class in ("api_key", "anonymous"):
        assert (
            f'http_requests_rate_limited_total{{client_class="{client_class}",'
            'route="/crypto-price"} 0.0' in text
        )


def test_a_new_tick_sets_the_price_the_tick_and_its_time() -> None:
    metrics = Metrics(["BTC"])
    metrics.observe_new_tick(TickQuote("BTC", 101.5, 7, 21.0, 24.0))
    text = exposition(metrics)
    assert 'crypto_price{symbol="BTC"} 101.5' in text
    assert "crypto_price_tick 7.0" in text
    assert "crypto_price_updated_timestamp_seconds 21.0" in text


def test_unknown_methods_share_one_label_value() -> None:
    metrics = Metrics(["BTC"])
    metrics.observe_request("BREW", "unmatched", 405, 0.001)
    metrics.observe_request("PURGE", "unmatched", 405, 0.001)
    assert 'http_requests_total{method="OTHER",route="unmatched",status="405"} 2.0' in (
        exposition(metrics)
    )
