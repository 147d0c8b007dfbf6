"""PriceClient against a real loopback HTTP server: parsing, conditional requests, errors."""

from __future__ import annotations

import time
from email.utils import formatdate

import pytest

from client.api import BadPayload, FatalError, PriceClient, RetryableError, parse_retry_after
from tests.scripted_server import Answer, ScriptedServer, quote_body

JSON = {"Content-Type": "application/json"}


def test_fresh_quote_then_conditional_request_gets_not_modified() -> None:
    script = [
        Answer(200, quote_body(101.5), {**JSON, "ETag": '"t1"', "Cache-Control": "max-age=2"}),
        Answer(304, b"", {"ETag": '"t1"'}),
    ]
    with ScriptedServer(script) as server, PriceClient(server.url, ["btc"]) as client:
        first = client.fetch()
        second = client.fetch()
    assert not first.not_modified and first.quotes[0].price == 101.5
    assert first.max_age == 2.0 and first.etag == '"t1"'
    assert second.not_modified and second.quotes == ()
    assert server.requests[0]["path"] == "/crypto-price?symbol=BTC"
    assert "If-None-Match" not in server.requests[0]
    assert server.requests[1]["If-None-Match"] == '"t1"'
    assert server.requests[1]["User-Agent"].startswith("crypto-poll/")


def test_several_symbols_use_the_batch_endpoint_and_keep_every_field() -> None:
    item = {k: v for k, v in quote_body().items() if k != "timestamp"}
    body = {"prices": [item, {**item, "symbol": "ETH", "extra": "kept"}], "timestamp": 5.0}
    with ScriptedServer([Answer(200, body, JSON)]) as server:
        fetched = PriceClient(server.url, ["BTC", "ETH"], api_key="k" * 20).fetch()
    assert server.requests[0]["path"] == "/v1/prices?symbols=BTC%2CETH"
    assert server.requests[0]["X-API-Key"] == "k" * 20
    assert [q.symbol for q in fetched.quotes] == ["BTC", "ETH"]
    assert fetched.quotes[1].fields["extra"] == "kept"
    assert fetched.quotes[1].fields["timestamp"] == 5.0


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("<html>oops</html>", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ({**quote_body(), "price": "cheap"}, "'price'"),
        ({**quote_body(), "price": True}, "'price'"),
        ({k: v for k, v in quote_body().items() if k != "tick"}, "'tick'"),
        ({**quote_body(), "tick": 1.5}, "'tick'"),
        ({**quote_body(), "timestamp": None}, "'timestamp'"),
        ({"prices": [], "timestamp": 1.0}, "non-empty list"),
        ({"prices": ["x"], "timestamp": 1.0}, "not a JSON object"),
        ('{"price": NaN, "timestamp": 1}', "'price'"),
    ],
)
def test_bad_payloads_are_one_clear_error(body: object, fragment: str) -> None:
    with ScriptedServer([Answer(200, body, JSON)]) as server:  # type: ignore[arg-type]
        with pytest.raises(BadPayload) as caught:
            PriceClient(server.url).fetch()
    assert fragment in caught.value.reason
    assert "\n" not in caught.value.reason


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (429, RetryableError),
        (502, RetryableError),
        (503, RetryableError),
        (504, RetryableError),
        (500, RetryableError),
        (400, FatalError),
        (401, FatalError),
        (404, FatalError),
        (501, FatalError),
    ],
)
def test_statuses_are_classified(status: int, kind: type[Exception]) -> None:
    body = {"error": "some_code", "message": "m"}
    with ScriptedServer([Answer(status, body, {**JSON, "Retry-After": "7"})]) as server:
        with pytest.raises(kind) as caught:
            PriceClient(server.url).fetch()
    assert f"HTTP {status} some_code" == caught.value.reason  # type: ignore[attr-defined]
    if isinstance(caught.value, RetryableError):
        assert caught.value.retry_after == 7.0


def test_refused_connection_is_retryable() -> None:
    with ScriptedServer([Answer()]) as server:
        url = server.url
    with pytest.raises(RetryableError, match="connection failed"):
        PriceClient(url, timeout=1).fetch()


def test_retry_after_in_seconds_or_http_date() -> None:
    now = time.time()
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30, abs=1)
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon") == 0.0
    assert parse_retry_after(None) == 0.0
