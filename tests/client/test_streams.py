"""The push transports' clients against real sockets: a refused stream is an HTTP answer
like a poll's (status, error, Retry-After), the requests counted are the connections
opened, and whatever bytes a server sends, ``fetch()`` returns a document or raises a
PollError: nothing else, and no hang."""

from __future__ import annotations

import json
import struct
import time
import tracemalloc
from collections.abc import Iterator

import pytest
import websocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.api import FatalError, RetryableError
from client.payload import BadPayload, PollError
from client.streams import SseClient, WebSocketClient
from tests.scripted_server import (
    Answer,
    RawServer,
    ScriptedServer,
    quote_body,
    websocket_accept,
    websocket_frame,
)

CLIENTS = {"sse": SseClient, "websocket": WebSocketClient}
JSON = {"Content-Type": "application/json"}
DOCUMENT = json.dumps({"prices": [quote_body(101.5, tick=7)], "timestamp": 21.5}).encode()


@pytest.mark.parametrize("transport", list(CLIENTS))
def test_a_refused_stream_is_an_http_answer_with_its_error_and_retry_after(
    transport: str,
) -> None:
    refusal = Answer(429, {"error": "rate_limited", "message": "m"}, {**JSON, "Retry-After": "7"})
    with ScriptedServer([refusal]) as server, CLIENTS[transport](server.url, ["BTC"]) as client:
        with pytest.raises(RetryableError) as refused:
            client.fetch()
    assert (refused.value.reason, refused.value.retry_after) == ("HTTP 429 rate_limited", 7.0)
    assert client.requests_sent == 1 and client.reconnects == 0


@pytest.mark.parametrize("transport", list(CLIENTS))
def test_an_unknown_key_is_fatal(transport: str) -> None:
    refusal = Answer(401, {"error": "unknown_api_key", "message": "m"}, JSON)
    with ScriptedServer([refusal]) as server, CLIENTS[transport](server.url) as client:
        with pytest.raises(FatalError, match="HTTP 401 unknown_api_key"):
            client.fetch()


def test_websocket_documents_come_from_one_connection_until_it_ends() -> None:
    frames = b"".join(websocket_frame(DOCUMENT) for _ in range(3))
    with (
        RawServer(lambda head: websocket_accept(head) + frames) as server,
        WebSocketClient(server.url, ["BTC"]) as client,
    ):
        prices = [client.fetch().quotes[0].price for _ in range(3)]
        assert prices == [101.5] * 3
        assert (client.requests_sent, server.connections) == (1, 1)
        with pytest.raises(RetryableError):  # the server hung up: a retry connects again
            client.fetch()
        assert client.fetch().quotes[0].price == 101.5
        assert (client.requests_sent, client.reconnects, server.connections) == (2, 1, 2)


def test_sse_documents_come_from_one_stream_until_it_ends() -> None:
    events = b"".join(b"id: %d\ndata: %s\n\n" % (i, DOCUMENT) for i in range(3))
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
    with RawServer(lambda _: head + events) as server, SseClient(server.url, ["BTC"]) as client:
        prices = [client.fetch().quotes[0].price for _ in range(3)]
        assert prices == [101.5] * 3
        with pytest.raises(RetryableError, match="the stream ended"):
            client.fetch()
        assert (client.requests_sent, server.connections) == (1, 1)


@pytest.mark.parametrize(
    ("content_type", "read"),
    [
        (b"Text/Event-Stream; charset=UTF-8", True),  # as EventSource reads it
        (b"text/event-streams", False),
        (b"text/event-stream-and-more", False),
    ],
)
def test_an_event_stream_is_known_by_its_media_type(content_type: bytes, read: bool) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\n\r\n" % content_type
    event = b"id: 1\ndata: %s\n\n" % DOCUMENT
    with RawServer(lambda _: head + event) as server, SseClient(server.url, ["BTC"]) as client:
        if read:
            assert client.fetch().quotes[0].price == 101.5
        else:
            with pytest.raises(BadPayload, match="not an event stream"):
                client.fetch()


frames = st.one_of(
    st.binary(max_size=64),  # anything at all
    st.builds(  # well-formed frames of any kind, any payload
        websocket_frame,
        st.one_of(st.binary(max_size=300), st.just(DOCUMENT)),
        st.sampled_from([0x0, 0x1, 0x2, 0x3, 0x8, 0x9, 0xA, 0xF]),
        st.booleans(),
    ),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sent=st.lists(frames, max_size=4))
def test_any_bytes_after_the_websocket_handshake_are_a_document_or_a_poll_error(
    sent: list[bytes],
) -> None:
    with (
        RawServer(lambda head: websocket_accept(head) + b"".join(sent)) as server,
        WebSocketClient(server.url, ["BTC"], timeout=2) as client,
    ):
        for _ in range(len(sent) + 1):
            try:
                fetched = client.fetch()
            except (BadPayload, RetryableError):
                continue
            except PollError as error:  # anything else would be a bug in the mapping
                raise AssertionError(f"unexpected {type(error).__name__}: {error}") from error
            assert fetched.quotes and not fetched.not_modified
            if client.connections > 1:
                break  # reconnected: the server sends the same bytes again


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=400))
def test_any_bytes_in_an_event_stream_are_a_document_or_a_poll_error(body: bytes) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
    with (
        RawServer(lambda _: head + body) as server,
        SseClient(server.url, ["BTC"], timeout=2) as client,
    ):
        for _ in range(3):
            try:
                client.fetch()
            except (BadPayload, RetryableError):
                continue


EVENT_STREAM_1_0 = b"HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"


def test_a_close_delimited_event_stream_gives_each_event_as_it_arrives() -> None:
    # No length, not chunked: the body ends with the connection (HTTP/1.0, many proxies).
    sent: list[float] = []

    def trickle(_: bytes) -> Iterator[bytes]:
        yield EVENT_STREAM_1_0
        for tick in range(3):
            sent.append(time.monotonic())
            yield b"id: %d\ndata: %s\n\n" % (tick, DOCUMENT)
            time.sleep(1.0)

    with RawServer(trickle) as server, SseClient(server.url, ["BTC"]) as client:
        for _ in range(3):
            assert client.fetch().quotes[0].price == 101.5
            assert time.monotonic() - sent[-1] < 0.5  # as it came, not when the body ended
        assert len(sent) == 3


def endless(head: bytes, part: bytes, limit: int = 400 * 2**20) -> Iterator[bytes]:
    """``head``, then ``part`` over and over (until the client hangs up, or ``limit``)."""
    yield head
    for _ in range(limit // len(part)):
        yield part


def refused_within_bounds(client: SseClient | WebSocketClient, reason: str) -> None:
    """``client``'s next fetch is refused for ``reason`` within 5 s, holding under 16 MiB
    (the client's allocations, and the scripted server's, traced)."""
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(BadPayload, match=reason):
            client.fetch()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 5
    assert peak < 16 * 2**20, peak


def test_an_event_stream_line_that_never_ends_is_refused_in_bounded_memory() -> None:
    line = EVENT_STREAM_1_0 + b"data: "
    with (
        RawServer(lambda _: endless(line, b"x" * 65536)) as server,
        SseClient(server.url, ["BTC"]) as client,
    ):
        refused_within_bounds(client, "line longer than 1048576 bytes")


def test_an_event_stream_event_of_many_lines_past_the_bound_is_refused() -> None:
    lines = EVENT_STREAM_1_0 + b"data: x\n"
    with (
        RawServer(lambda _: endless(lines, b"data: " + b"x" * 1000 + b"\n")) as server,
        SseClient(server.url, ["BTC"]) as client,
        pytest.raises(BadPayload, match="an event larger than 1048576 bytes"),
    ):
        client.fetch()


def test_a_300_mb_websocket_frame_is_refused_as_it_is_read_in_bounded_memory() -> None:
    # The hook websocket-client's reads go through (see client/streams.py).
    assert "_recv" in vars(websocket.WebSocket), (
        "websocket-client changed: re-check BoundedWebSocket"
    )
    size = 300 * 10**6
    header = websocket_frame(b"", opcode=0x1)[:1] + bytes([127]) + struct.pack("!Q", size)
    with (
        RawServer(
            lambda head: endless(websocket_accept(head) + header, b"x" * 65536, size)
        ) as server,
        WebSocketClient(server.url, ["BTC"]) as client,
    ):
        refused_within_bounds(client, "WebSocket message larger than 1048576 bytes")
