"""Long-poll, Server-Sent Events and WebSocket against the real service under gunicorn
(the default gevent worker): every tick delivered, resumes without loss, limits, the
per-client cap, dropped readers, and a prompt, clean shutdown."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Any

import requests
import simple_websocket

from client.sse import Event, EventStream, split_lines
from tests.integration.conftest import (
    HOST,
    RedisServer,
    Service,
    ServiceFactory,
    wait_until,
)

KEY = "push-test-key-0123456789"


@contextmanager
def sse(url: str, **headers: str) -> Iterator[tuple[requests.Response, Iterator[Event]]]:
    with requests.get(url, headers=headers, stream=True, timeout=(5, 30)) as response:
        stream = EventStream()
        yield response, stream.feed(split_lines(response.iter_content(chunk_size=None)))


def ticks_of(event: Event) -> set[int]:
    return {quote["tick"] for quote in json.loads(event.data)["prices"]}


def test_sse_delivers_every_tick_ends_by_itself_and_resumes_without_loss(
    start_service: ServiceFactory,
) -> None:
    service = start_service(PRICE_TICK_SECONDS="0.5", STREAM_LIFETIME_MINUTES="0.04")
    url = f"{service.url}/v1/prices/stream?symbols=BTC,eth"
    started = time.monotonic()
    with sse(url) as (response, events):
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["X-Accel-Buffering"] == "no"
        assert response.headers["X-RateLimit-Remaining"] == "119"  # opening it was a request
        first = list(events)  # until the stream's lifetime (2.4 s) ends it
    assert 2.0 < time.monotonic() - started < 5
    ids = [int(event.last_event_id) for event in first]
    assert ids == list(range(ids[0], ids[0] + len(ids))) and len(ids) >= 4, ids
    assert all(ticks_of(event) == {int(event.last_event_id)} for event in first)
    assert all([q["symbol"] for q in json.loads(e.data)["prices"]] == ["BTC", "ETH"] for e in first)
    time.sleep(1.2)  # away for two ticks or more
    with sse(url, **{"Last-Event-ID": str(ids[-1])}) as (_, events):
        replayed = next(events), next(events), next(events)
    resumed = [int(event.last_event_id) for event in replayed]
    assert resumed == [ids[-1] + 1, ids[-1] + 2, ids[-1] + 3]  # nothing lost
    # Each stream's access line is written when it ends, with its length and how it ended
    # (the second: once the server's next write finds its client gone).
    wait_until(lambda: service.metric("stream_ends_total", reason="gone") == 1, 5, "gone")
    service.stop()
    lines = [
        json.loads(line) for line in service.logs().splitlines() if '"event":"request"' in line
    ]
    streams = [line for line in lines if line["route"] == "/v1/prices/stream"]
    assert [(line["status"], line["ended"]) for line in streams] == [
        (200, "lifetime"),
        (200, "gone"),
    ]
    assert 2000 < streams[0]["duration_ms"] < 5000, streams[0]


def test_sse_sends_its_retry_hint_and_heartbeats(start_service: ServiceFactory) -> None:
    service = start_service(PRICE_TICK_SECONDS="60", STREAM_HEARTBEAT_SECONDS="0.5")
    seen: list[str] = []
    with requests.get(f"{service.url}/v1/prices/stream", stream=True, timeout=10) as response:
        ends = time.monotonic() + 3
        for line in split_lines(response.iter_content(chunk_size=None)):
            seen.append(line)
            if time.monotonic() > ends:
                break
    assert seen[0].startswith("retry: ") and 2000 <= int(seen[0][7:]) <= 4000
    assert seen[2].startswith("id: ") and seen[3].startswith("data: ")
    # 3 s of a 60 s tick (one may turn meanwhile): comments keep the stream open.
    assert seen.count(": heartbeat") >= 3, seen


def test_websocket_delivers_every_tick_as_a_json_frame(start_service: ServiceFactory) -> None:
    service = start_service(PRICE_TICK_SECONDS="0.5")
    ws = simple_websocket.Client.connect(f"ws://{HOST}:{service.port}/v1/prices/ws?symbols=SOL")
    try:
        frames = [json.loads(ws.receive(timeout=5)) for _ in range(4)]
    finally:
        ws.close()
    ticks = [frame["prices"][0]["tick"] for frame in frames]
    assert ticks == list(range(ticks[0], ticks[0] + 4))
    assert all(frame["prices"][0]["symbol"] == "SOL" for frame in frames)
    wait_until(lambda: service.metric("streams_open", transport="websocket") == 0, 10, "close")
    assert service.metric("stream_events_sent_total", transport="websocket") >= 4
    # One fan-out per tick (the first frame came from the cache), and why it ended.
    assert service.metric("stream_fanout_seconds_count") >= 3
    assert service.metric("stream_ends_total", transport="websocket", reason="gone") == 1
    # The session is a request (status 101), and its length is not request latency.
    assert service.metric("http_requests_total", route="/v1/prices/ws", status="101") == 1
    assert service.metric("http_request_duration_seconds_count", route="/v1/prices/ws") == 0


def test_a_websocket_client_that_stops_reading_and_answering_is_dropped(
    start_service: ServiceFactory,
) -> None:
    service = start_service(PRICE_TICK_SECONDS="0.5", STREAM_HEARTBEAT_SECONDS="0.5")
    with socket.create_connection((HOST, service.port), timeout=5) as raw:
        raw.sendall(
            b"GET /v1/prices/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        assert raw.recv(12) == b"HTTP/1.1 101"
        wait_until(lambda: service.metric("streams_open", transport="websocket") == 1, 10, "open")
        # Never read again, never answer a ping: the server gives the connection up.
        wait_until(
            lambda: service.metric("streams_open", transport="websocket") == 0,
            15,
            "the silent client to be dropped",
        )


def test_opening_a_stream_is_one_request_against_the_budget(
    start_service: ServiceFactory,
) -> None:
    service = start_service(RATE_LIMIT="2/minute", API_KEYS=KEY, STREAM_LIFETIME_MINUTES="0.01")
    assert requests.get(f"{service.url}/crypto-price", timeout=5).status_code == 200
    with sse(f"{service.url}/v1/prices/stream") as (response, _):
        assert response.status_code == 200
    refused = requests.get(f"{service.url}/v1/prices/stream", timeout=5)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["error"] == "rate_limited"
    handshake = requests.get(
        f"{service.url}/v1/prices/ws",
        headers={
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13",
        },
        timeout=5,
    )
    assert handshake.status_code == 429  # refused before any upgrade
    unknown = requests.get(
        f"{service.url}/v1/prices/stream", headers={"X-API-Key": "k" * 20}, timeout=5
    )
    assert unknown.status_code == 401
    bad = requests.get(f"{service.url}/v1/prices/stream?symbols=NOPE", timeout=5)
    assert bad.status_code in (404, 429)  # validated like /v1/prices (or already limited)


def test_a_websocket_asking_for_an_unknown_symbol_is_refused_before_the_upgrade(
    start_service: ServiceFactory,
) -> None:
    service = start_service()
    handshake = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    refused = requests.get(f"{service.url}/v1/prices/ws?symbols=NOPE", headers=handshake, timeout=5)
    assert refused.status_code == 404 and refused.json()["error"] == "unknown_symbol"
    assert service.metric("streams_open", transport="websocket") == 0


def test_streams_per_client_are_capped(start_service: ServiceFactory) -> None:
    service = start_service(MAX_STREAMS_PER_CLIENT="2", PRICE_TICK_SECONDS="0.5")
    url = f"{service.url}/v1/prices/stream"
    with sse(url) as (first, _), sse(url) as (second, _):
        assert (first.status_code, second.status_code) == (200, 200)
        third = requests.get(url, timeout=5)
        assert third.status_code == 429 and third.json()["error"] == "too_many_streams"
        # A place frees when the client closes a stream, and the server notices that within
        # a heartbeat (15 s): not within the limiter's second. Nor is it a rate limit.
        assert third.headers["Retry-After"] == "15"
        assert (
            service.metric(
                "connections_refused_total", route="/v1/prices/stream", reason="too_many_streams"
            )
            == 1
        )
        assert service.metric("http_requests_rate_limited_total") == 0
    # Closed by the client: the server notices at its next write and frees the places.
    wait_until(lambda: service.metric("streams_open", transport="sse") == 0, 10, "freed")
    with sse(url) as (again, _):
        assert again.status_code == 200


def test_the_stream_cap_holds_across_workers_sharing_redis(
    start_service: ServiceFactory, redis_storage: RedisServer
) -> None:
    """Two workers, one Redis: the client's places are counted once for both. Each open
    is steered to a chosen worker by pausing the other (SIGSTOP) while it connects: one
    stream on each worker, then a third on each is refused, and a place given back is
    free on either."""
    service = start_service(
        WORKERS="2",
        RATE_LIMIT_STORAGE_URI=redis_storage.uri,
        MAX_STREAMS_PER_CLIENT="2",
        PRICE_TICK_SECONDS="0.5",
    )
    url = f"{service.url}/v1/prices/stream"
    one, other = sorted(service.worker_pids())

    def on(worker: int) -> AbstractContextManager[None]:
        return service.paused({other if worker == one else one})

    def status_of_a_stream_on(worker: int) -> int:
        with on(worker), requests.get(url, stream=True, timeout=(5, 30)) as response:
            return response.status_code

    with ExitStack() as streams:
        with on(one):
            first, _ = streams.enter_context(sse(url))
        with on(other):
            second, _ = streams.enter_context(sse(url))
        assert (first.status_code, second.status_code) == (200, 200)
        # Per process, each worker would still have a place; shared, neither has.
        assert status_of_a_stream_on(one) == 429
        assert status_of_a_stream_on(other) == 429
    wait_until(lambda: service.metric("streams_open", transport="sse") == 0, 10, "freed")
    assert status_of_a_stream_on(one) == 200


def test_a_long_poll_is_answered_at_the_tick_and_is_not_request_latency(
    start_service: ServiceFactory,
) -> None:
    service = start_service(PRICE_TICK_SECONDS="1")
    first = requests.get(f"{service.url}/v1/prices", timeout=5)
    # The long-poll must reach the service within the tick its tag names to be held (one
    # sent in the tick's last moments on a busy machine arrives in the next and is
    # answered at once, as any poll): ask again until half a tick is left.
    polls = 1
    while first.json()["prices"][0]["next_update_at"] - time.time() < 0.5:
        time.sleep(0.05)
        first = requests.get(f"{service.url}/v1/prices", timeout=5)
        polls += 1
    started = time.monotonic()
    held = requests.get(
        f"{service.url}/v1/prices",
        headers={"If-None-Match": first.headers["ETag"], "Prefer": "wait=10"},
        timeout=15,
    )
    assert held.status_code == 200 and time.monotonic() - started < 3  # a tick, not the 10 s
    assert held.headers["Preference-Applied"] == "wait=10"
    assert held.json()["prices"][0]["tick"] == first.json()["prices"][0]["tick"] + 1
    assert service.metric("http_requests_total", route="/v1/prices", status="200") == polls + 1
    assert service.metric("http_request_duration_seconds_count", route="/v1/prices") == polls


def hold_everything(service: Service) -> dict[str, Any]:
    """An SSE stream, a WebSocket and a long-poll, each waiting in a thread; what became
    of each, and when, is recorded."""
    ended: dict[str, Any] = {}

    def stream() -> None:
        with sse(f"{service.url}/v1/prices/stream") as (_, events):
            ended["sse_events"] = len(list(events))
        ended["sse"] = time.monotonic()

    def websocket() -> None:
        ws = simple_websocket.Client.connect(f"ws://{HOST}:{service.port}/v1/prices/ws")
        try:
            while True:
                ws.receive(timeout=60)
        except simple_websocket.ConnectionClosed:
            ended["websocket_code"] = ws.close_reason
        ended["websocket"] = time.monotonic()

    def long_poll() -> None:
        tag = requests.get(f"{service.url}/crypto-price", timeout=5).headers["ETag"]
        answer = requests.get(
            f"{service.url}/crypto-price",
            headers={"If-None-Match": tag, "Prefer": "wait=60"},
            timeout=70,
        )
        ended["long_poll_status"] = answer.status_code
        ended["long_poll"] = time.monotonic()

    for target in (stream, websocket, long_poll):
        threading.Thread(target=target, daemon=True).start()
    return ended


def test_sigterm_ends_streams_and_long_polls_promptly_and_exits_zero(
    start_service: ServiceFactory,
) -> None:
    service = start_service(PRICE_TICK_SECONDS="60", GRACEFUL_TIMEOUT="20")
    ended = hold_everything(service)
    wait_until(
        lambda: service.metric("streams_open") == 2 and service.metric("long_polls_waiting") == 1,
        15,
        "a stream, a WebSocket and a long-poll to be open",
    )
    keepalive = requests.Session()
    assert keepalive.get(f"{service.url}/readyz", timeout=5).status_code == 200
    sent = time.monotonic()
    service.process.send_signal(signal.SIGTERM)
    wait_until(lambda: {"sse", "websocket", "long_poll"} <= set(ended), 5, "every client")
    # The clients are let go at once; the worker then exits once idle keep-alive
    # connections have run out their KEEPALIVE (5 s), well inside GRACEFUL_TIMEOUT.
    assert all(ended[name] - sent < 4 for name in ("sse", "websocket", "long_poll")), ended
    assert service.process.wait(timeout=20) == 0
    assert time.monotonic() - sent < 10
    assert ended["sse_events"] == 1  # the current tick, then a clean end
    assert ended["long_poll_status"] == 503  # answered, not cut: "retry (elsewhere)"
    assert "Traceback" not in service.logs()


def test_live_events_written_by_the_fan_out_keep_the_bodys_framing(
    start_service: ServiceFactory,
) -> None:
    """The fan-out writes live ticks to the socket itself: as chunks of HTTP/1.1's chunked
    body (the client above parses them), and bare for HTTP/1.0, whose body ends with the
    connection."""
    service = start_service(PRICE_TICK_SECONDS="0.3")
    with socket.create_connection((HOST, service.port), timeout=10) as raw:
        raw.sendall(b"GET /v1/prices/stream?symbols=BTC HTTP/1.0\r\nHost: x\r\n\r\n")
        received = b""
        while received.count(b"id: ") < 6:
            received += raw.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    assert b"HTTP/1.0 200" in head and b"chunked" not in head.lower()
    events = list(EventStream().feed(split_lines([body])))
    ticks = [int(event.last_event_id) for event in events]
    assert len(ticks) >= 5 and ticks == list(range(ticks[0], ticks[0] + len(ticks)))
    assert all(
        json.loads(event.data)["prices"][0]["tick"] == t
        for event, t in zip(events, ticks, strict=True)
    )


def test_the_events_the_server_counts_are_those_its_clients_got(
    start_service: ServiceFactory,
) -> None:
    # Streams that end by themselves (a 3 s lifetime), read to their end: nothing in flight.
    service = start_service(PRICE_TICK_SECONDS="0.3", STREAM_LIFETIME_MINUTES="0.05")
    with requests.get(f"{service.url}/v1/prices/stream", stream=True, timeout=10) as response:
        lines = list(split_lines(response.iter_content(chunk_size=None)))
    sse_events = sum(line.startswith("id: ") for line in lines)
    ws = simple_websocket.Client.connect(f"ws://{HOST}:{service.port}/v1/prices/ws")
    frames = 0
    try:
        while True:
            ws.receive(timeout=10)
            frames += 1
    except simple_websocket.ConnectionClosed:
        pass
    wait_until(lambda: service.metric("streams_open") == 0, 10, "the streams to end")
    assert sse_events >= 8 and frames >= 8  # most written by the fan-out itself
    assert service.metric("stream_events_sent_total", transport="sse") == sse_events
    assert service.metric("stream_events_sent_total", transport="websocket") == frames
