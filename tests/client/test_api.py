"""PriceClient against a real loopback HTTP server: parsing, conditional requests, errors."""

from __future__ import annotations

import pytest

from client.api import BadPayload, FatalError, PriceClient, RetryableError
from client.payload import MAX_BODY_BYTES
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
        ({**quote_body(), "price": int("9" * 400)}, "'price'"),
        ("[" * 100_000 + "]" * 100_000, "nested too deep"),
        ('{"price": 1, "timestamp": 1, "x": ' + "[" * 40 + "]" * 40 + "}", "nested deeper"),
        (b"\xff\x00", "not JSON"),
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


def test_the_seed_servers_document_is_a_quote_with_no_hints() -> None:
    body = {"price": 101.23, "timestamp": 1692789123.45}
    with ScriptedServer([Answer(200, body, JSON)]) as server:
        fetched = PriceClient(server.url).fetch()
    (quote,) = fetched.quotes
    assert (quote.price, quote.timestamp) == (101.23, 1692789123.45)
    assert (quote.symbol, quote.tick, quote.period) == (None, None, None)
    assert fetched.etag is None and fetched.max_age is None


def test_malformed_hints_are_ignored_not_fatal() -> None:
    body = {**quote_body(101.0), "tick": 1.5, "symbol": "B\nC", "next_update_at": "soon"}
    headers = {**JSON, "ETag": '"a"\x7f', "Cache-Control": "max-age=\u00b2"}
    with ScriptedServer([Answer(200, body, headers)]) as server:
        fetched = PriceClient(server.url).fetch()
    (quote,) = fetched.quotes
    assert (quote.price, quote.tick, quote.symbol, quote.period) == (101.0, None, None, None)
    assert fetched.etag is None and fetched.max_age is None


def test_a_body_over_the_bound_is_refused_without_reading_it_all() -> None:
    huge = b'{"price": 1, "timestamp": 1, "pad": "' + b"x" * (MAX_BODY_BYTES + 10) + b'"}'
    with ScriptedServer([Answer(200, huge, JSON)]) as server:
        with pytest.raises(BadPayload, match="larger than"):
            PriceClient(server.url).fetch()
