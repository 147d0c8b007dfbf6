"""The client's own metrics: what each event of the polling loop counts."""

from __future__ import annotations

from prometheus_client import generate_latest

from client.metrics import ClientMetrics
from client.payload import Quote
from client.retry import RetryEvent


def test_each_event_moves_its_metric() -> None:
    metrics = ClientMetrics()
    metrics.on_poll("fresh")
    metrics.on_poll("failed")
    metrics.on_retry(RetryEvent(1, 0.5, "HTTP 429 rate_limited", 429, "http_429"))
    metrics.on_skipped_ticks(3)
    metrics.on_quote(Quote(price=101.5, timestamp=1.0, symbol="BTC"), None)
    metrics.on_quote(Quote(price=99.0, timestamp=1.0), None)  # a server that names none
    text = generate_latest(metrics.registry).decode()
    assert 'crypto_poll_polls_total{outcome="fresh"} 1.0' in text
    assert 'crypto_poll_polls_total{outcome="not_modified"} 0.0' in text
    assert 'crypto_poll_polls_total{outcome="failed"} 1.0' in text
    assert 'crypto_poll_retries_total{reason="http_429"} 1.0' in text
    assert "crypto_poll_skipped_ticks_total 3.0" in text
    assert 'crypto_poll_price{symbol="BTC"} 101.5' in text
    assert 'crypto_poll_price{symbol=""} 99.0' in text
