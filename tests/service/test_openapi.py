"""The OpenAPI document: valid, complete, and stating the API's own bounds, which it takes
from the constants the routes enforce (so changing one cannot leave the document lying)."""

from __future__ import annotations

import re

import flask
from openapi_spec_validator import validate

from service import api, history_api
from service.feed import HISTORY_MAX
from tests.conftest import AppFactory


def document(client: flask.testing.FlaskClient) -> dict[str, object]:
    answer: dict[str, object] = client.get("/openapi.json").get_json()
    return answer


def test_the_document_is_valid_and_lists_every_route(make_app: AppFactory) -> None:
    app = make_app()
    openapi = document(app.test_client())
    validate(openapi)
    routes = {
        re.sub(r"<(\w+)>", r"{\1}", rule.rule)
        for rule in app.url_map.iter_rules()
        if not rule.endpoint.startswith("page.")  # the HTML page and its files are not API
    }
    assert set(openapi["paths"]) == routes  # type: ignore[call-overload]


def parameter(client: flask.testing.FlaskClient, path: str, name: str) -> dict[str, object]:
    operation = document(client)["paths"][path]["get"]  # type: ignore[index]
    (found,) = [p for p in operation["parameters"] if p.get("name") == name]
    schema: dict[str, object] = found["schema"]
    return schema


def test_the_documented_bounds_are_the_enforced_ones(client: flask.testing.FlaskClient) -> None:
    limit = parameter(client, "/v1/prices/{symbol}/history", "limit")
    assert (limit["minimum"], limit["maximum"], limit["default"]) == (
        1,
        HISTORY_MAX,
        history_api.DEFAULT_HISTORY_LIMIT,
    )
    symbols = re.compile(str(parameter(client, "/v1/prices", "symbols")["pattern"]))
    most = ",".join(["BTC"] * api.MAX_BATCH_SYMBOLS)
    assert symbols.match(most) and not symbols.match(most + ",BTC")
    symbol = re.compile(str(parameter(client, "/crypto-price", "symbol")["pattern"]))
    assert symbol.match("btc") and not symbol.match("B" * 11) and not symbol.match("B-C")


def test_what_the_document_allows_the_routes_accept_and_no_more(
    client: flask.testing.FlaskClient,
) -> None:
    most = ",".join(["BTC"] * api.MAX_BATCH_SYMBOLS)
    assert client.get(f"/v1/prices?symbols={most}").status_code == 200
    assert client.get(f"/v1/prices?symbols={most},BTC").status_code == 400
    assert client.get(f"/v1/prices/BTC/history?limit={HISTORY_MAX}").status_code == 200
    assert client.get(f"/v1/prices/BTC/history?limit={HISTORY_MAX + 1}").status_code == 400
    default = client.get("/v1/prices/BTC/history").get_json()["prices"]
    assert len(default) == history_api.DEFAULT_HISTORY_LIMIT
