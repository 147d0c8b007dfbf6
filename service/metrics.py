"""Prometheus metrics, correct under gunicorn's many processes.

Given a multiprocess directory (``Settings.metrics_dir``, from
``PROMETHEUS_MULTIPROC_DIR``, which gunicorn's config exports before prometheus-client is
first imported: prometheus-client picks its file-backed values at import), every sample is
written to per-process files and ``/metrics`` merges them, so a scrape sees the whole pod
rather than one worker. Without one (the Flask test client, a plain ``flask run``) a
private registry holds the samples.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from service.metrics_archive import ArchiveAwareCollector
from service.prices import TickQuote
from service.version import __version__

# Sized for an API that answers in about a millisecond; the tail reaches gunicorn's timeout.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
# To 10 s: a fan-out that takes longer than a tick (3 s) is what the p99 must show.
FANOUT_BUCKETS = (
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
STREAM_END_REASONS = ("lifetime", "draining", "gone", "slow_consumer", "too_slow")
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
POLL_OUTCOMES = ("fresh", "not_modified")
PUSH_TRANSPORTS = ("sse", "websocket")
# Why a stream, WebSocket or long-poll was refused before it was held (its error code).
CONNECTION_REFUSALS = ("too_many_streams", "over_capacity", "shutting_down", "forbidden_origin")


class Metrics:
    """Every metric the service exports, created once per application."""

    def __init__(self, symbols: Iterable[str], multiprocess_dir: str | None = None) -> None:
        # In multiprocess mode the samples live in files, so the metrics join no registry
        # and the exposition registry reads the files instead.
        own = None if multiprocess_dir else CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "http_requests",
            "HTTP requests answered, by method, matched URL rule and status code.",
            ["method", "route", "status"],
            registry=own,
        )
        self.duration = Histogram(
            "http_request_duration_seconds",
            "Time from request start to response, by method and matched URL rule.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=own,
        )
        self.in_flight = Gauge(
            "http_requests_in_flight",
            "Requests being handled right now, across the live worker processes.",
            registry=own,
            multiprocess_mode="livesum",
        )
        self.long_polls_waiting = Gauge(
            "long_polls_waiting",
            "Long-polls (Prefer: wait) holding their answer until the tick turns.",
            registry=own,
            multiprocess_mode="livesum",
        )
        self.streams_open = Gauge(
            "streams_open",
            "Open push connections by transport (sse, websocket), across live workers.",
            ["transport"],
            registry=own,
            multiprocess_mode="livesum",
        )
        self.stream_events = Counter(
            "stream_events_sent",
            "Price events sent on push connections, by transport (one per tick and stream).",
            ["transport"],
            registry=own,
        )
        self.connections_refused = Counter(
            "connections_refused",
            "Streams, WebSockets and long-polls refused before they were held, by route and "
            "reason: too_many_streams (the client's cap), over_capacity (the worker's), "
            "shutting_down, forbidden_origin.",
            ["route", "reason"],
            registry=own,
        )
        self.fanout = Histogram(
            "stream_fanout_seconds",
            "Time one tick's fan-out took to hand the tick to every push connection of a "
            "worker (from the first connection to the last).",
            buckets=FANOUT_BUCKETS,
            registry=own,
        )
        self.stream_ends = Counter(
            "stream_ends",
            "Push connections ended, by transport and reason: lifetime, draining, gone (the "
            "client left), slow_consumer (fell a queue behind), too_slow (a write timed out).",
            ["transport", "reason"],
            registry=own,
        )
        self.rate_limited = Counter(
            "http_requests_rate_limited",
            "Requests refused with 429 by the rate limiter, by route and client class.",
            ["route", "client_class"],
            registry=own,
        )
        self.limiter_storage_errors = Counter(
            "ratelimit_storage_errors",
            "Rate limit storage calls that failed (the request was then served or refused "
            "as RATE_LIMIT_FAIL_OPEN says).",
            registry=own,
        )
        self.price = Gauge(
            "crypto_price",
            "Current simulated price, by symbol.",
            ["symbol"],
            registry=own,
            multiprocess_mode="mostrecent",
        )
        self.price_tick = Gauge(
            "crypto_price_tick",
            "Index of the newest price tick computed (ticks since the unix epoch).",
            registry=own,
            multiprocess_mode="max",
        )
        self.price_updated = Gauge(
            "crypto_price_updated_timestamp_seconds",
            "Unix time at which the newest computed price tick started.",
            registry=own,
            multiprocess_mode="max",
        )
        self.polls = Counter(
            "polls",
            "Successful price polls by symbol and outcome: fresh (body sent) or "
            "not_modified (304 to a matching If-None-Match).",
            ["symbol", "outcome"],
            registry=own,
        )
        self.key_refresh_errors = Counter(
            "crypto_api_key_refresh_errors",
            "Polls of the managed API keys that failed (database down): meanwhile the keys "
            "last read stay in force, and a revocation waits.",
            registry=own,
        )
        self.key_usage_write_errors = Counter(
            "crypto_api_key_usage_write_errors",
            "Writes of the API keys' usage counts that failed; the counts are kept and "
            "written with the next batch.",
            registry=own,
        )
        self.key_usage_dropped = Counter(
            "crypto_api_key_usage_dropped",
            "Usage counts dropped because too many were waiting for the database.",
            registry=own,
        )
        self.tokens_issued = Counter(
            "crypto_api_tokens_issued",
            "Stream tokens issued by POST /v1/tokens.",
            registry=own,
        )
        self.build_info = Gauge(
            "crypto_service_build_info",
            "Always 1; labels carry the service version and Python version.",
            ["version", "python_version"],
            registry=own,
            multiprocess_mode="max",
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self._exposition = own if own is not None else _multiprocess_registry(multiprocess_dir)
        # Known series start at zero, so rates and ratios exist before the first event.
        for transport in PUSH_TRANSPORTS:
            self.streams_open.labels(transport)
            self.stream_events.labels(transport)
            for reason in STREAM_END_REASONS:
                self.stream_ends.labels(transport, reason)
        for symbol in symbols:
            for outcome in POLL_OUTCOMES:
                self.polls.labels(symbol, outcome)
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}

    def start_rate_limit_series(self, routes: Iterable[str], client_classes: Iterable[str]) -> None:
        """Create the 429 counters of these routes and client classes, and the refusal
        counters of these routes, at zero."""
        classes = tuple(client_classes)
        for route in routes:
            for client_class in classes:
                self.rate_limited.labels(route, client_class)
            for reason in CONNECTION_REFUSALS:
                self.connections_refused.labels(route, reason)

    def _child(self, metric: Counter | Histogram, *labels: str) -> Any:
        """``metric.labels(*labels)``, resolved once per label set rather than per request."""
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe_request(self, method: str, route: str, status: int, seconds: float | None) -> None:
        """Count a request, and time it unless ``seconds`` is None (a WebSocket session)."""
        method = method if method in KNOWN_METHODS else "OTHER"
        self._child(self.requests, method, route, str(status)).inc()
        if seconds is not None:
            self._child(self.duration, method, route).observe(seconds)

    def count_poll(self, symbol: str, outcome: str) -> None:
        self._child(self.polls, symbol, outcome).inc()

    def observe_fanout(self, seconds: float, written: Mapping[str, int]) -> None:
        """A fan-out's time, and the events it wrote to sockets itself, by transport."""
        self.fanout.observe(seconds)
        for transport, events in written.items():
            self._child(self.stream_events, transport).inc(events)

    def count_stream_end(self, transport: str, reason: str) -> None:
        self._child(self.stream_ends, transport, reason).inc()

    def count_connection_refused(self, route: str, reason: str) -> None:
        self._child(self.connections_refused, route, reason).inc()

    def count_rate_limited(self, route: str, client_class: str) -> None:
        self._child(self.rate_limited, route, client_class).inc()

    def count_key_refresh_error(self) -> None:
        self.key_refresh_errors.inc()

    def count_usage_write_error(self) -> None:
        self.key_usage_write_errors.inc()

    def count_usage_dropped(self) -> None:
        self.key_usage_dropped.inc()

    def count_token_issued(self) -> None:
        self.tokens_issued.inc()

    def observe_new_tick(self, quote: TickQuote) -> None:
        self.price.labels(quote.symbol).set(quote.price)
        self.price_tick.set(quote.tick)
        self.price_updated.set(quote.updated_at)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self._exposition), CONTENT_TYPE_LATEST


class HistoryMetrics:
    """The recorder's metrics (service/recorder.py: a process of its own, whose samples
    the workers' /metrics reads from the multiprocess directory like their own)."""

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        own = None if multiprocess_dir else CollectorRegistry(auto_describe=True)
        self.registry = own  # without a multiprocess directory: where the samples are
        self.written = Counter(
            "crypto_history_ticks_written",
            "Ticks (one symbol's quote each) the recorder wrote to the history database, "
            "those another replica had written already included.",
            registry=own,
        )
        self.write_errors = Counter(
            "crypto_history_write_errors",
            "History writes that failed (database down, slow or full); retried.",
            registry=own,
        )
        self.recorded_through = Gauge(
            "crypto_history_recorded_through_timestamp_seconds",
            "Unix time up to which every tick is in the history database (the end of the "
            "newest tick written in order): its lag is time() minus this.",
            registry=own,
            multiprocess_mode="max",
        )

    def count_written(self, ticks: int) -> None:
        self.written.inc(ticks)

    def count_write_error(self) -> None:
        self.write_errors.inc()

    def set_recorded_through(self, unix_seconds: float) -> None:
        self.recorded_through.set(unix_seconds)


def _multiprocess_registry(directory: str | None) -> CollectorRegistry:
    registry = CollectorRegistry()
    ArchiveAwareCollector(registry, directory or "")
    return registry
