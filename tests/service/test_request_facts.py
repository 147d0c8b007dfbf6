"""The record the parts of the service fill in about a request."""

from __future__ import annotations

from typing import Any

from service.request_facts import ENVIRON_KEY, UNMATCHED_ROUTE, RequestFacts, facts_of
from tests.conftest import AppFactory


def test_the_record_is_made_once_and_shared_through_the_environ() -> None:
    environ: dict[str, Any] = {}
    facts = facts_of(environ)
    assert environ[ENVIRON_KEY] is facts is facts_of(environ)
    assert facts == RequestFacts(UNMATCHED_ROUTE, None, None, [])
    facts.client, facts.client_class = "127.0.0.1", "anonymous"
    assert facts_of(environ).client_class == "anonymous"


def test_the_limiter_and_the_routing_fill_it_in(make_app: AppFactory) -> None:
    # Through the app: a 429 is counted under the matched route and the client's class,
    # which the routing and the limiter wrote into the record.
    client = make_app(RATE_LIMIT="1/minute").test_client()
    for _ in range(3):
        client.get("/v1/prices/BTC/history")
    text = client.get("/metrics").get_data(as_text=True)
    route = "/v1/prices/<symbol>/history"
    assert (
        f'http_requests_rate_limited_total{{client_class="anonymous",route="{route}"}} 2.0' in text
    )
