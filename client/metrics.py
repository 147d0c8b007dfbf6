"""The client's own Prometheus metrics, served on --metrics-port when asked."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from client.api import Quote
from client.poller import Listener
from client.retry import RetryEvent

OUTCOMES = ("fresh", "not_modified", "failed")


class ClientMetrics(Listener):
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.polls = Counter(
            "crypto_poll_polls",
            "Polls by outcome: fresh, not_modified, or failed after its retries.",
            ["outcome"],
            registry=self.registry,
        )
        self.retries = Counter(
            "crypto_poll_retries",
            "Retried requests, by reason (http_429, http_503, timeout, connection...).",
            ["reason"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "crypto_poll_request_duration_seconds",
            "Duration of successful requests.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry,
        )
        self.change_delay = Histogram(
            "crypto_poll_change_delay_seconds",
            "Time from the start of a price tick to the client seeing its price.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0),
            registry=self.registry,
        )
        self.skipped_ticks = Counter(
            "crypto_poll_skipped_ticks",
            "Price ticks that passed unseen between two fresh quotes.",
            registry=self.registry,
        )
        self.price = Gauge(
            "crypto_poll_price",
            "Last price seen, by symbol (empty when the server names none).",
            ["symbol"],
            registry=self.registry,
        )
        for outcome in OUTCOMES:
            self.polls.labels(outcome)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        start_http_server(port, addr=addr, registry=self.registry)

    def on_poll(self, outcome: str) -> None:
        self.polls.labels(outcome).inc()

    def on_quote(self, quote: Quote, previous: Quote | None) -> None:
        self.price.labels(quote.symbol or "").set(quote.price)

    def on_retry(self, event: RetryEvent) -> None:
        self.retries.labels(event.kind).inc()

    def on_request(self, seconds: float) -> None:
        self.latency.observe(seconds)

    def on_change_delay(self, seconds: float) -> None:
        self.change_delay.observe(seconds)

    def on_skipped_ticks(self, ticks: int) -> None:
        self.skipped_ticks.inc(ticks)
