"""Who a request's client is: its address, one of API_KEYS, a managed key or its token;
API_KEYS keep working beside managed keys and while the database is down."""

from __future__ import annotations

import flask
import pytest

from service.identity import API_KEY, InvalidApiKey, KeysUnavailable
from service.key_format import fingerprint_of
from service.request_facts import facts_of
from service.state import get_state
from tests.conftest import AppFactory

STATIC = "static-key-0123456789"
DOWN = "postgresql://nobody@127.0.0.1:9/none"


def identified(
    app_factory: AppFactory, headers: dict[str, str], url: str = "/v1/prices", **env: str
) -> tuple[str, str]:
    """The client key and limit the app's identity tells for such a request."""
    app = app_factory(API_KEYS=f"{STATIC}=7/minute", **env)
    address = {"REMOTE_ADDR": "192.0.2.7"}
    with app.test_request_context(url, headers=headers, environ_base=address):
        identity = get_state(app).identity
        client = identity.identify(flask.request.environ, accept_token=True)
        facts = facts_of(flask.request.environ)
        assert (facts.client, facts.client_class) == (client.key, client.client_class.name)
        return client.key, str(client.client_class.limit.amount)


def test_a_client_without_a_key_is_its_address(make_app: AppFactory) -> None:
    assert identified(make_app, {}) == ("192.0.2.7", "120")


def test_api_keys_keep_working_beside_managed_keys_and_while_the_database_is_down(
    make_app: AppFactory,
) -> None:
    assert identified(make_app, {"X-API-Key": STATIC}) == (fingerprint_of(STATIC), "7")
    assert identified(make_app, {"X-API-Key": STATIC}, DATABASE_URL=DOWN) == (
        fingerprint_of(STATIC),
        "7",
    )
    with pytest.raises(KeysUnavailable):  # a key that is not one of them: cannot tell
        identified(make_app, {"X-API-Key": "another-key-0123456789"}, DATABASE_URL=DOWN)
    with pytest.raises(InvalidApiKey):  # the database answers: it is no key
        identified(make_app, {"X-API-Key": "another-key-0123456789"})


def test_the_header_wins_over_a_token(make_app: AppFactory) -> None:
    app = make_app(API_KEYS=STATIC)
    token, _ = get_state(app).identity.issue_token(fingerprint_of(STATIC))
    client = app.test_client()
    wrong = {"X-API-Key": "wrong-key-0123456789"}
    answer = client.get(f"/v1/prices/stream?token={token}", headers=wrong)
    assert answer.status_code == 401 and answer.json["error"] == "unauthorized"  # type: ignore[index]


def test_a_token_of_one_of_api_keys_is_that_key(make_app: AppFactory) -> None:
    empty = identified(make_app, {}, url="/v1/prices/stream?token=")  # as if none
    assert empty == ("192.0.2.7", "120")
    app = make_app(API_KEYS=f"{STATIC}=7/minute")
    token, _ = get_state(app).identity.issue_token(fingerprint_of(STATIC))
    with app.test_request_context(f"/v1/prices/stream?token={token}"):
        client = get_state(app).identity.identify(flask.request.environ, accept_token=True)
    assert client.key == fingerprint_of(STATIC) and client.client_class.name == API_KEY
