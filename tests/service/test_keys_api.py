"""Managed keys through the app (a real SQLite file, the clock pinned): a key created in
the database is honoured without a restart and refused once revoked; tokens open the
streams and are refused, clearly, when expired, forged or their key revoked; usage tells
a key's holder its limit and today's counts."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import flask
import pytest

from service.database import create_engine
from service.key_store import KeyStore
from service.state import get_state
from tests.conftest import PINNED_NOW, AppFactory

EVENT_STREAM = {"Accept": "text/event-stream"}
HANDSHAKE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


class Clock:
    def __init__(self, now: float = PINNED_NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(make_app: AppFactory, clock: Clock) -> flask.Flask:
    return make_app(clock=clock, RATE_LIMIT="100/minute")


@pytest.fixture
def store(app: flask.Flask, clock: Clock) -> Iterator[KeyStore]:
    engine = create_engine(get_state(app).settings.database_url)
    yield KeyStore(engine, clock)
    engine.dispose()


def within(seconds: float, check: Callable[[], bool]) -> float:
    """How long until ``check()`` held (fails after ``seconds``)."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < seconds, "did not happen in time"
        time.sleep(0.05)
    return time.monotonic() - started


def first_event(client: flask.testing.FlaskClient, url: str) -> tuple[int, str, str]:
    """Status, the first event's name and its data, of a stream asked as EventSource does."""
    event = "message"
    with client.get(url, headers=EVENT_STREAM) as answer:
        for part in answer.iter_encoded():  # read no further than the first event
            for line in part.decode().splitlines():
                if line.startswith("event: "):
                    event = line[7:]
                if line.startswith("data: "):
                    return answer.status_code, event, line[6:]
    raise AssertionError("no event")


def test_a_key_created_in_the_database_is_honoured_then_refused_once_revoked(
    app: flask.Flask, store: KeyStore
) -> None:
    client = app.test_client()
    key, record = store.create("ci", "7/minute")
    answer = client.get("/v1/prices", headers={"X-API-Key": key})  # read at first use
    assert answer.status_code == 200
    assert answer.headers["RateLimit-Policy"] == '"api-key";q=7;w=60'
    store.revoke("ci")
    waited = within(
        3, lambda: client.get("/v1/prices", headers={"X-API-Key": key}).status_code == 401
    )
    assert waited < 2.5
    refused = client.get("/v1/prices", headers={"X-API-Key": key})
    assert refused.json == {
        "error": "unauthorized",
        "message": "The X-API-Key header does not name a known API key.",
    }
    assert record.fingerprint not in refused.get_data(as_text=True)


def test_a_token_opens_the_stream_for_its_key_and_counts_against_it(
    app: flask.Flask, store: KeyStore, clock: Clock
) -> None:
    client = app.test_client()
    key, record = store.create("browser", "9/minute")
    issued = client.post("/v1/tokens", headers={"X-API-Key": key})
    assert issued.status_code == 201 and issued.headers["Cache-Control"] == "no-store"
    token = issued.json["token"]  # type: ignore[index]
    assert issued.json == {
        "token": token,
        "key": record.fingerprint,
        "expires_at": int(PINNED_NOW) + 300,
        "expires_in": 300,
    }
    status, event, data = first_event(client, f"/v1/prices/stream?symbols=BTC&token={token}")
    assert (status, event) == (200, "message") and "prices" in json.loads(data)
    # The same key's budget: the token issue, the stream, then this poll (3 of 9).
    polled = client.get("/v1/prices", headers={"X-API-Key": key})
    assert polled.headers["RateLimit"].startswith('"api-key";r=6;')
    # A token is not a key anywhere else: /v1/prices serves it as an anonymous client.
    anonymous = client.get(f"/v1/prices?token={token}")
    assert anonymous.headers["RateLimit-Policy"].startswith('"default"')


@pytest.mark.parametrize("how", ["expired", "forged", "revoked"])
def test_a_bad_token_is_a_clear_401_and_an_event_stream_to_eventsource(
    app: flask.Flask, store: KeyStore, clock: Clock, how: str
) -> None:
    client = app.test_client()
    key, _ = store.create("browser")
    token = client.post("/v1/tokens", headers={"X-API-Key": key}).json["token"]  # type: ignore[index]
    if how == "expired":
        clock.now += 300
        expected = "token_expired"
    elif how == "forged":
        token = token[:-1] + ("A" if token[-1] != "A" else "B")
        expected = "invalid_token"
    else:
        store.revoke("browser")
        expected = "token_revoked"
        within(3, lambda: client.get(f"/v1/prices/stream?token={token}").status_code == 401)
    url = f"/v1/prices/stream?token={token}"
    plain = client.get(url)
    assert plain.status_code == 401 and plain.json["error"] == expected  # type: ignore[index]
    assert "POST /v1/tokens" in plain.json["message"] or how == "revoked"  # type: ignore[index]
    assert token not in plain.get_data(as_text=True)
    status, event, data = first_event(client, url)
    assert (status, event) == (200, "error")
    assert json.loads(data)["status"] == 401 and json.loads(data)["error"] == expected
    websocket = client.get(f"/v1/prices/ws?token={token}", headers=HANDSHAKE)
    assert websocket.status_code == 401 and websocket.json["error"] == expected  # type: ignore[index]


def test_usage_tells_the_limit_what_is_left_and_todays_counts(
    app: flask.Flask, store: KeyStore
) -> None:
    client = app.test_client()
    key, record = store.create("ci", "3/minute")
    headers = {"X-API-Key": key}
    statuses = [client.get("/v1/prices", headers=headers).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    usage = client.get("/v1/usage", headers=headers)  # not limited: answers over the limit
    assert usage.status_code == 200 and usage.headers["Cache-Control"] == "no-store"
    body = usage.json
    assert body["key"] == record.fingerprint and body["name"] == "ci"  # type: ignore[index]
    assert (body["limit"], body["remaining"]) == ("3/minute", 0)  # type: ignore[index]
    today = body["today"]  # type: ignore[index]
    assert today["from"] == int(PINNED_NOW) // 86400 * 86400
    assert (today["requests"], today["rate_limited"], today["streams"]) == (4, 1, 0)
    get_state(app).usage.flush()
    again = client.get("/v1/usage", headers=headers).json["today"]  # type: ignore[index]
    assert (again["requests"], again["rate_limited"]) == (5, 1)  # the first usage counted


def test_the_key_endpoints_need_a_key_and_take_no_body(app: flask.Flask, store: KeyStore) -> None:
    client = app.test_client()
    for answer in (client.post("/v1/tokens"), client.get("/v1/usage")):
        assert answer.status_code == 401 and answer.json["error"] == "unauthorized"  # type: ignore[index]
        assert "needs an X-API-Key header" in answer.json["message"]  # type: ignore[index]
    unknown = client.post("/v1/tokens", headers={"X-API-Key": "cpk_" + "x" * 38})
    assert unknown.status_code == 401
    key, _ = store.create("ci")
    within(3, lambda: client.get("/v1/usage", headers={"X-API-Key": key}).status_code == 200)
    huge = client.post("/v1/tokens", headers={"X-API-Key": key}, data=b"x" * 5000)
    assert huge.status_code == 413 and huge.json["error"] == "body_too_large"  # type: ignore[index]
    assert client.get("/v1/tokens", headers={"X-API-Key": key}).status_code == 405


def test_a_database_that_never_answered_is_a_503_for_keys_and_nothing_else(
    make_app: AppFactory, tmp_path: Path
) -> None:
    app = make_app(DATABASE_URL="postgresql://nobody@127.0.0.1:9/none")
    client = app.test_client()
    refused = client.get("/v1/prices", headers={"X-API-Key": "cpk_" + "x" * 38})
    assert refused.status_code == 503 and refused.json["error"] == "keys_unavailable"  # type: ignore[index]
    assert refused.headers["Retry-After"] == "1"
    assert client.get("/v1/prices").status_code == 200  # no key: served as ever
