"""The WSGI middleware: request IDs, security headers, metrics per matched URL rule, and a
streamed body recorded when it ends."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any

import flask
import structlog
import structlog.testing
from werkzeug.test import EnvironBuilder

from service.instrumentation import Instrumentation
from service.metrics import Metrics
from service.request_facts import facts_of


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


def streamed_app(parts: list[bytes | Exception]) -> Any:
    """A WSGI app whose body is a stream (as the SSE view marks it) of ``parts``, raising
    any exception among them where it stands."""

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        facts_of(environ).streamed = facts_of(environ).held = True
        start_response("200 OK", [("Content-Type", "text/event-stream")])

        def body() -> Iterator[bytes]:
            for part in parts:
                if isinstance(part, Exception):
                    raise part
                time.sleep(0.05)
                yield part

        return body()

    return app


def served(parts: list[bytes | Exception], read: int | None = None) -> Mapping[str, Any]:
    """The access line of one streamed request, the server reading ``read`` parts (all
    when None) and then closing the body, as a WSGI server does."""
    captured = structlog.testing.LogCapture()
    log = structlog.wrap_logger(
        None,
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        processors=[captured],
    )
    app = Instrumentation(streamed_app(parts), Metrics(("BTC",), None), log)
    environ = EnvironBuilder(path="/v1/prices/stream").get_environ()
    body = app(environ, lambda status, headers, exc_info=None: lambda data: None)
    assert not captured.entries, "recorded before the body ended"
    try:
        for count, _ in enumerate(body, start=1):
            if count == read:
                break
    except RuntimeError:
        pass
    finally:
        body.close()  # type: ignore[attr-defined]
    (line,) = captured.entries
    return line


def test_a_streamed_body_is_recorded_when_it_ends_with_its_length() -> None:
    line = served([b"a", b"b", b"c", b"d"])
    assert (line["status"], line["body"]) == (200, "complete")
    assert line["duration_ms"] >= 200  # four parts of 50 ms, not the time to its headers


def test_a_streamed_body_the_client_left_is_cut() -> None:
    assert served([b"a", b"b", b"c"], read=1)["body"] == "cut"


def test_a_streamed_body_that_fails_midway_is_cut_and_before_its_first_part_a_500() -> None:
    midway = served([b"a", RuntimeError("broken")])
    assert (midway["status"], midway["body"]) == (200, "cut")
    at_once = served([RuntimeError("broken")])
    assert (at_once["status"], at_once["body"]) == (500, "failed")
