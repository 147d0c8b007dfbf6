"""The push views in-process: a refusal is a 200 event stream to a client that asks for
one (EventSource) and a status to others; what counts as asking; every stream's retry
jittered; what a connection is sent: a replay that stops once told, ticks from the
fan-out and, for those it missed while replaying, from the shared cache."""

from __future__ import annotations

import json
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client.sse import EventStream, split_lines
from service.fanout import Subscription
from service.push import SSE_RETRY_SECONDS, asks_for_event_stream, body_framing, pushed
from service.state import get_state
from tests.conftest import PINNED_NOW, AppFactory

EVENT_STREAM = {"Accept": "text/event-stream"}


def events_of(body: bytes) -> tuple[EventStream, list[object]]:
    stream = EventStream()
    return stream, list(stream.feed(split_lines([body])))


@pytest.mark.parametrize(
    ("accept", "asks"),
    [
        ("text/event-stream", True),
        ("text/html, text/event-stream;q=0.5", True),
        ("TEXT/EVENT-STREAM", True),
        ("text/event-stream;q=0", False),
        ("text/event-stream; q=0.0; charset=utf-8", False),
        ("text/event-stream;charset=utf-8", True),
        ("text/event-stream;q=nan", False),
        ("text/event-stream;q=x", False),
        ("text/event-stream;q=1e400", False),
        ("text/event-stream;q=inf", False),
        ("text/event-stream;q=2", False),
        ('text/html;x="a, text/event-stream"', False),
        ('text/html;x="a,b", text/event-stream', True),
        ("*/*", False),
        ("text/*", False),
        ("application/json", False),
        ("", False),
        (None, False),
    ],
)
def test_what_counts_as_asking_for_an_event_stream(accept: str | None, asks: bool) -> None:
    assert asks_for_event_stream(accept) is asks


@given(st.text(max_size=300))
def test_any_accept_header_is_read_without_error(accept: str) -> None:
    assert asks_for_event_stream(accept) in (True, False)


def test_a_refused_event_stream_is_a_200_with_the_error_and_the_wait(
    make_app: AppFactory,
) -> None:
    app = make_app(RATE_LIMIT="1/minute")
    client = app.test_client()
    assert client.get("/crypto-price").status_code == 200
    refused = client.get("/v1/prices/stream", headers=EVENT_STREAM)
    assert refused.status_code == 200
    assert refused.headers["Content-Type"].startswith("text/event-stream")
    wait = int(refused.headers["Retry-After"])
    stream, events = events_of(refused.get_data())
    (event,) = events
    error = json.loads(event.data)  # type: ignore[attr-defined]
    assert event.event == "error"  # type: ignore[attr-defined]
    assert error["error"] == "rate_limited" and error["status"] == 429
    assert error["retry_after"] == wait >= 1
    assert stream.retry_ms is not None and wait * 1000 <= stream.retry_ms <= 2 * wait * 1000
    plain = client.get("/v1/prices/stream")  # no Accept: the status itself
    assert plain.status_code == 429 and plain.json["error"] == "rate_limited"  # type: ignore[index]


def test_a_stream_asked_of_a_draining_worker_is_an_error_event_too(make_app: AppFactory) -> None:
    app = make_app()
    get_state(app).start_draining()
    client = app.test_client()
    answer = client.get("/v1/prices/stream?symbols=BTC", headers=EVENT_STREAM)
    _, events = events_of(answer.get_data())
    assert answer.status_code == 200
    assert json.loads(events[0].data)["error"] == "shutting_down"  # type: ignore[attr-defined]
    bad = client.get("/v1/prices/stream?symbols=NOPE", headers=EVENT_STREAM)
    assert bad.status_code == 200  # even a bad request: EventSource reads nothing else
    assert client.get("/v1/prices/stream").status_code == 503


def test_each_stream_has_its_own_retry_of_at_least_the_base(make_app: AppFactory) -> None:
    app = make_app(STREAM_LIFETIME_MINUTES="0.01", PRICE_TICK_SECONDS="60")
    client = app.test_client()
    retries = set()
    for _ in range(8):
        with client.get("/v1/prices/stream", headers=EVENT_STREAM) as answer:
            first_line = next(answer.iter_encoded()).decode()
        assert first_line.startswith("retry: ")
        retries.add(int(first_line.split()[1]))
    assert all(SSE_RETRY_SECONDS * 1000 <= r <= 2 * SSE_RETRY_SECONDS * 1000 for r in retries)
    assert len(retries) > 1


def test_a_replay_stops_mid_way_once_the_subscription_ends(make_app: AppFactory) -> None:
    app = make_app(clock=lambda: PINNED_NOW)
    state = get_state(app)
    current = state.feed.tick_at(PINNED_NOW)
    subscription = Subscription(("BTC",))
    items = pushed(state, subscription, after=current - 500)
    first = [next(items) for _ in range(3)]
    assert [item.tick for item in first] == [current - 499, current - 498, current - 497]
    subscription.end("draining")
    assert list(items) == []


def test_ticks_published_before_a_connection_subscribed_come_from_the_cache_once(
    make_app: AppFactory,
) -> None:
    app = make_app(clock=lambda: PINNED_NOW)
    state = get_state(app)
    current = state.feed.tick_at(PINNED_NOW)
    subscription = Subscription(("BTC",))
    items = pushed(state, subscription, after=None)
    assert next(items).tick == current
    seen: list[int] = []
    consumer = threading.Thread(target=lambda: seen.extend(next(items).tick for _ in range(2)))
    consumer.start()
    wait = time.monotonic() + 5
    while len(state.hub) == 0 and time.monotonic() < wait:  # until it joined the fan-out
        time.sleep(0.01)
    state.hub.publish(current)  # already sent: not again
    state.hub.publish(current + 2)  # current + 1 was never handed to it: from the cache
    consumer.join(timeout=5)
    assert seen == [current + 1, current + 2]


def test_far_behind_clients_share_one_render_of_each_past_tick(make_app: AppFactory) -> None:
    app = make_app(clock=lambda: PINNED_NOW)
    state = get_state(app)
    current = state.feed.tick_at(PINNED_NOW)
    before = state.hub.rendered.cache_info().misses
    for _ in range(5):
        replay = pushed(state, Subscription(("ETH",)), after=current - 999)
        assert len([next(replay) for _ in range(999)]) == 999
    assert state.hub.rendered.cache_info().misses - before == 999  # not 5 x 999


def test_every_refusal_of_an_event_stream_client_is_a_200_and_of_others_its_status(
    make_app: AppFactory,
) -> None:
    client = make_app(API_KEYS="k" * 20, MAX_STREAMS_PER_CLIENT="1").test_client()
    refusals = {
        "/v1/prices/stream?symbols=NOPE": ({}, 404),
        "/v1/prices/stream?symbols=b@d": ({}, 400),
        "/v1/prices/stream": ({"X-API-Key": "x" * 20}, 401),
    }
    for url, (headers, status) in refusals.items():
        plain = client.get(url, headers=headers)
        assert plain.status_code == status, url
        asked = client.get(url, headers={**headers, **EVENT_STREAM})
        assert asked.status_code == 200, url
        stream, events = events_of(asked.get_data())
        error = json.loads(events[0].data)  # type: ignore[attr-defined]
        assert error["status"] == status and "retry_after" not in error
        assert stream.retry_ms is not None and stream.retry_ms >= 30_000  # not soon again


def test_the_body_is_framed_as_gunicorn_frames_a_body_without_a_length() -> None:
    assert body_framing({"REQUEST_METHOD": "GET", "SERVER_PROTOCOL": "HTTP/1.1"}) is True
    assert body_framing({"REQUEST_METHOD": "GET", "SERVER_PROTOCOL": "HTTP/1.0"}) is False
    assert body_framing({"REQUEST_METHOD": "HEAD", "SERVER_PROTOCOL": "HTTP/1.1"}) is None
    assert body_framing({"REQUEST_METHOD": "GET", "SERVER_PROTOCOL": "HTTP/2"}) is None
