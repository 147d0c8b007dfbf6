"""Push transports beside polling: Server-Sent Events (``GET /v1/prices/stream``) and
WebSocket (``GET /v1/prices/ws``, :mod:`service.websocket`).

Both carry the ``/v1/prices`` document (all symbols, or a validated ``symbols=`` subset),
at once and then once per tick. On their own blueprint: the limiter counts opening one
as one request against the client's budget (same headers, 429, 401), and a hook of this
blueprint alone takes the connection's places (one of the worker's held connections, one
of the client's ``MAX_STREAMS_PER_CLIENT``), so the polling path pays for none of it.

An SSE event's ``id`` is its tick: a client reconnecting with ``Last-Event-ID`` first gets
the ticks it missed (at most ``HISTORY_MAX``), then the live ones, and loses none. A
stream ends by itself after ``STREAM_LIFETIME_MINUTES`` (EventSource reconnects after the
``retry`` hint and resumes), and at once when the service starts draining on SIGTERM.
Every write to a push connection must finish within ``PUSH_WRITE_TIMEOUT_SECONDS``, and
the lifetime is checked before each one, so a client that reads slowly or not at all
cannot keep its stream, its places or a draining worker past their time.

A browser's EventSource treats any answer but a 200 event stream as a failure it never
retries (WHATWG HTML, "fail the connection"). So a refused stream (rate limited, too many
streams, over capacity, shutting down, or any other error) asked for with ``Accept:
text/event-stream`` is answered 200 with the JSON error as an ``error`` event and a
``retry:`` of the wait, then ends: the browser comes back by itself. Clients that do not
ask for an event stream get the error's own status and ``Retry-After``.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import socket
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

import flask
from werkzeug.exceptions import HTTPException
from werkzeug.http import parse_accept_header, parse_options_header

from service import errors
from service.api import batch_prefix, requested_symbols
from service.errors import ApiError, ShuttingDown
from service.fanout import HEARTBEAT, REPLAY_YIELD_EVERY, Rendered, SocketWriter, Subscription
from service.feed import HISTORY_MAX, PriceFeed, parse_tick
from service.logs import get_logger
from service.request_facts import RequestFacts, facts_of
from service.state import ServiceState, get_state
from service.stream_slots import Slot
from service.websocket import WebSocket

bp = flask.Blueprint("push", __name__)
log = get_logger(__name__)

SSE_RETRY_SECONDS = 2.0  # EventSource reconnects after this (times RETRY_JITTER)
RETRY_JITTER = (1.0, 2.0)  # per connection, so a restart's reconnects spread over seconds
REFUSED_RETRY_SECONDS = 30.0  # an error that says no Retry-After (a bad request, a bad key)
PUSH_WRITE_TIMEOUT_SECONDS = 10.0  # a client that takes no bytes for this long is dropped
# What the kernel may hold unsent for one push connection (it doubles what is set). Left
# to itself it sizes a send buffer from the path's segment size: megabytes on loopback or
# a jumbo-frame network, so a client that never reads would take a whole 999-tick replay
# into the kernel and hang there for hours, never noticed. Bounded, such a client fills
# it within a few ticks and is dropped after the write timeout, and N connections' kernel
# memory has a bound. A reading client is never held up by it: a tick is a few hundred
# bytes, a replay's batch a few KiB.
PUSH_SEND_BUFFER_BYTES = 32 * 1024
# STREAM_HEARTBEAT_SECONDS: an SSE comment line when no tick came for that long, so that
# proxies keep the stream; the WebSocket ping interval (a client that does not answer a
# ping by the next one is dropped).


class ForbiddenOrigin(ApiError):
    def __init__(self, origin: str) -> None:
        super().__init__(
            403,
            "forbidden_origin",
            f"WebSockets from pages of {origin[:100]!r} are not allowed here (ALLOWED_ORIGINS).",
        )


def init_app(app: flask.Flask) -> None:
    app.register_blueprint(bp)


def retry_ms(seconds: float) -> int:
    """An SSE ``retry`` of at least ``seconds``, jittered for this connection."""
    return math.ceil(seconds * 1000 * random.uniform(*RETRY_JITTER))


def connection_socket(environ: dict[str, Any]) -> socket.socket | None:
    """The client connection's socket, which gunicorn hands over (None elsewhere)."""
    sock: socket.socket | None = environ.get("gunicorn.socket")
    return sock


def bound_send_buffer(sock: socket.socket | None) -> socket.socket | None:
    """``sock`` with its kernel send buffer bounded to ``PUSH_SEND_BUFFER_BYTES`` (a push
    connection's: see there)."""
    if sock is not None:
        with contextlib.suppress(OSError):  # cut already: its first write will say so
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, PUSH_SEND_BUFFER_BYTES)
    return sock


def body_framing(environ: dict[str, Any]) -> bool | None:
    """How gunicorn frames a streamed body without a length, so that the fan-out can write
    to the socket the same way: chunked for HTTP/1.1 (RFC 9112: what a server streaming
    without a length must do), bare for HTTP/1.0 (the body ends with the connection);
    None when nothing is written (HEAD) or the protocol is another."""
    if environ.get("REQUEST_METHOD") != "GET":
        return None
    return {"HTTP/1.1": True, "HTTP/1.0": False}.get(environ.get("SERVER_PROTOCOL", ""))


@bp.before_request
def _take_a_slot() -> None:
    """After the limiter's hook (which identified the client): check a WebSocket's Origin,
    validate the symbols and take the connection's places, before any WebSocket upgrade,
    unless this worker is draining (a stream it ended at once would be reopened at once)."""
    state = get_state()
    if state.draining.is_set():
        raise ShuttingDown()
    # A connection that opens while a tick goes out waits for it: a reconnect storm then
    # delays the storm, not the ticks of the connections already open.
    state.hub.wait_for_fanout()
    environ = flask.request.environ
    websocket = flask.request.endpoint == "push.websocket"
    if websocket:
        _check_origin(state, environ)
    flask.g.push_symbols = requested_symbols(state)
    client = facts_of(environ).client or environ.get("REMOTE_ADDR") or "unknown"
    flask.g.push_slot = state.streams.take(
        client, "websocket" if websocket else "sse", connection_socket(environ)
    )


def _check_origin(state: ServiceState, environ: dict[str, Any]) -> None:
    """A browser says which page opens a WebSocket (Origin), and sends the user's cookies
    and address with it whatever the page's origin: only the service's own pages, and those
    of ``ALLOWED_ORIGINS``, may use a visitor's places. Clients that are not browsers send
    no Origin."""
    origin = environ.get("HTTP_ORIGIN")
    if origin is None:
        return
    allowed = state.settings.allowed_origins
    normalized = origin.strip().rstrip("/").lower()
    same = urlsplit(normalized).netloc == environ.get("HTTP_HOST", "").lower()
    if not (same or "*" in allowed or normalized in allowed):
        raise ForbiddenOrigin(origin)


@bp.teardown_request
def _release_an_unclaimed_slot(_exc: BaseException | None) -> None:
    # The SSE view hands its slot to the stream, which releases it when the stream ends;
    # any other way out of the request (an error, a WebSocket session over) releases here.
    slot: Slot | None = flask.g.pop("push_slot", None)
    if slot is not None:
        slot.release()


@bp.errorhandler(HTTPException)
def _refused(exc: HTTPException) -> flask.Response:
    return _as_event_stream_if_asked(errors.error_response(exc))


@bp.errorhandler(Exception)
def _failed(exc: Exception) -> flask.Response:
    return _as_event_stream_if_asked(errors.unexpected_error(exc))


def asks_for_event_stream(accept: str | None) -> bool:
    """Whether an Accept header names text/event-stream (as EventSource's does) with a
    quality above 0, as RFC 9110 writes it (werkzeug's parser: quoted commas, and an
    invalid q drops its item); ``*/*`` does not: such a client reads a status."""
    return any(
        quality > 0 and parse_options_header(media)[0].lower() == "text/event-stream"
        for media, quality in parse_accept_header(accept)
    )


def _as_event_stream_if_asked(response: flask.Response) -> flask.Response:
    request = flask.request
    if request.endpoint != "push.stream" or not asks_for_event_stream(
        request.headers.get("Accept")
    ):
        return response
    facts = facts_of(request.environ)
    # The limiter's Retry-After goes out with its other headers (RequestFacts.headers).
    wait = response.headers.get("Retry-After") or dict(facts.headers).get("Retry-After")
    seconds = float(wait) if wait and wait.isdigit() else REFUSED_RETRY_SECONDS
    error = json.loads(response.get_data())
    error["status"] = response.status_code
    if wait:
        error["retry_after"] = int(seconds)
    # What the refusal stands for, in the metrics and the log: a 429 is a 429.
    facts.stands_for = response.status_code
    body = f"retry: {retry_ms(seconds)}\nevent: error\ndata: {json.dumps(error)}\n\n"
    refusal = flask.Response(body, mimetype="text/event-stream")
    refusal.headers["Cache-Control"] = "no-store"
    if wait:
        refusal.headers["Retry-After"] = wait
    return refusal


@bp.get("/v1/prices/stream")
def stream() -> flask.Response:
    state = get_state()
    symbols: list[str] = flask.g.push_symbols
    after = last_event_id(
        flask.request.headers.get("Last-Event-ID") or flask.request.args.get("last_event_id")
    )
    slot: Slot = flask.g.pop("push_slot")
    environ = flask.request.environ
    facts = facts_of(environ)
    facts.held = facts.streamed = True  # a session: logged when it ends, not request latency
    events = SseStream(
        state,
        symbols,
        after,
        slot,
        bound_send_buffer(connection_socket(environ)),
        body_framing(environ),
        facts,
    )
    response = flask.Response(events, mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return response


class HandedOver(flask.Response):
    """What a WebSocket view returns: the connection is no longer HTTP. gunicorn's workers
    take a StopIteration from the application as "handled, close the connection"."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise StopIteration()


@bp.get("/v1/prices/ws", websocket=True)  # werkzeug matches upgrades to these only
def websocket() -> flask.Response:
    state = get_state()
    symbols: list[str] = flask.g.push_symbols
    slot: Slot = flask.g.push_slot
    environ = flask.request.environ
    subscription = Subscription(tuple(symbols), transport="websocket")  # joins in pushed()
    bound_send_buffer(connection_socket(environ))
    ws = WebSocket.accept(
        environ,
        ping_interval=state.settings.stream_heartbeat_seconds,
        send_timeout=PUSH_WRITE_TIMEOUT_SECONDS,
        ended=slot.ended,
        sending=subscription.writing,  # the fan-out's direct writes and the reader's
    )
    facts = facts_of(environ)
    facts.upgraded = facts.held = True
    try:
        if ws.open(
            on_gone=lambda: subscription.end("gone"),
            deflate=state.settings.websocket_deflate,
            wait_turn=state.hub.wait_for_fanout,
        ):
            _push_to(ws, state, subscription)
    finally:
        ws.finish()
        state.hub.unsubscribe(subscription)
    reason = "too_slow" if ws.too_slow else subscription.reason or _ended_by_itself(state)
    state.metrics.count_stream_end("websocket", reason)
    facts.stream_end = reason
    if ws.too_slow:
        log.info("client too slow to take the response: dropped", transport="websocket")
    return HandedOver()


def _push_to(ws: WebSocket, state: ServiceState, subscription: Subscription) -> None:
    sent = state.metrics.stream_events.labels("websocket")
    ends = time.monotonic() + state.settings.stream_lifetime_minutes * 60

    def frame(item: Rendered) -> bytes:
        return item.deflated if ws.deflate else item.frame

    for batch in batched(pushed(state, subscription, after=None, live=False)):
        # WebSocket pings keep the connection; no heartbeat frame needed
        frames = [frame(item) for item in batch if item is not HEARTBEAT]
        if frames and not ws.send_frame(b"".join(frames)):
            return  # too slow, or gone
        sent.inc(len(frames))
    write_live_directly(
        state,
        subscription,
        ends,
        lambda item: item is HEARTBEAT or ws.write_nowait(frame(item)),
        lambda items: ws.write_all(frame(item) for item in items if item is not HEARTBEAT),
        sent,
    )
    if subscription.reason == "slow_consumer":
        ws.close(1013, "too far behind: connect again")  # "try again later"
    elif subscription.reason != "gone":
        ws.close(1001, "stream lifetime over or service shutting down")


class SseStream:
    """The event stream as a WSGI iterable whose ``close`` (called by the server when the
    response ends, the client gone or not) releases the slot and the subscription. While
    it lasts, every write to the connection's socket must finish within
    PUSH_WRITE_TIMEOUT_SECONDS (the worker drops the connection when one does not)."""

    def __init__(
        self,
        state: ServiceState,
        symbols: list[str],
        after: int | None,
        slot: Slot,
        sock: socket.socket | None,
        chunked: bool | None = None,
        facts: RequestFacts | None = None,  # told why the stream ended, for its access line
    ):
        self._facts = facts
        self._chunked = chunked  # how the fan-out may write to sock itself (None: it may not)
        self._ends = time.monotonic() + state.settings.stream_lifetime_minutes * 60
        self._state = state
        self._hub = state.hub
        self._metrics = state.metrics
        self._subscription = Subscription(tuple(symbols), transport="sse")  # joins in pushed()
        self._finished = False
        self._too_slow = False  # a direct write timed out: the client stopped reading
        self._events = self._render(state, after)
        self._slot = slot
        self._sock = sock
        self._timeout_before = None if sock is None else sock.gettimeout()
        if sock is not None:
            sock.settimeout(PUSH_WRITE_TIMEOUT_SECONDS)

    def __iter__(self) -> Iterator[bytes]:
        return self._events

    def close(self) -> None:
        self._events.close()
        self._hub.unsubscribe(self._subscription)
        self._slot.release()
        ended_by = (
            "too_slow"
            if self._too_slow
            else self._subscription.reason
            or (_ended_by_itself(self._state) if self._finished else "gone")
        )
        self._metrics.count_stream_end("sse", ended_by)
        if self._facts is not None:
            self._facts.stream_end = ended_by
        if self._sock is not None:  # a kept-alive connection waits for its next request
            with contextlib.suppress(OSError):  # cut, or closed
                self._sock.settimeout(self._timeout_before)

    def _render(self, state: ServiceState, after: int | None) -> Generator[bytes, None, None]:
        # The first write goes through the server, which sends the headers with it.
        yield f"retry: {retry_ms(SSE_RETRY_SECONDS)}\n\n".encode()
        events = state.metrics.stream_events.labels("sse")
        if self._sock is None or self._chunked is None:
            for item in pushed(state, self._subscription, after):
                yield item.sse
                events.inc(item is not HEARTBEAT)
        else:
            try:
                self._written_directly(state, after, events)
            except TimeoutError:  # the worker drops the connection; counted as what it is
                self._too_slow = True
                raise
        self._finished = True

    def _written_directly(self, state: ServiceState, after: int | None, events: Any) -> None:
        """The replay in batches (one write per batch, not per tick: a reconnect asking for
        999 ticks back), then the live ticks, written to the socket by the fan-out itself;
        every write here, so that one timing out is known for what it is. The body stays
        what gunicorn began: HTTP/1.1 chunks, or bare bytes."""
        assert self._sock is not None
        writer, chunked = SocketWriter(self._sock), self._chunked

        def write_all(items: list[Rendered]) -> bool:
            data = b"".join(item.chunk if chunked else item.sse for item in items)
            writer.write_all([data] if data else [])
            return True  # or it raised

        for batch in batched(pushed(state, self._subscription, after, live=False)):
            write_all(batch)
            events.inc(sum(item is not HEARTBEAT for item in batch))
        write_live_directly(
            state,
            self._subscription,
            self._ends,
            lambda item: writer.write_nowait(item.chunk if chunked else item.sse),
            write_all,
            events,
        )


def write_live_directly(
    state: ServiceState,
    subscription: Subscription,
    ends: float,
    write_nowait: Callable[[Rendered], bool],
    write_all: Callable[[list[Rendered]], bool],
    events: Any,
) -> None:
    """A push connection's live ticks, written by the fan-out itself: one write per tick
    that does not wait (``write_nowait``), no wake-up of this connection. Its greenlet
    only finishes what the socket did not take at once, and what came meanwhile
    (``write_all``, which may wait within the write timeout; False: the connection is
    gone), and ends the connection at the end of its lifetime (monotonic ``ends``), at the
    drain, or when the subscription ends."""

    subscription.write_directly(write_nowait)  # the fan-out counts what it writes
    try:
        while True:
            subscription.wait(until=ends)
            if (
                subscription.reason is not None
                or state.draining.is_set()
                or time.monotonic() >= ends
            ):
                return
            with subscription.writing:
                items = [
                    item
                    for item in subscription.backlog()
                    if item is HEARTBEAT or item.tick > subscription.last
                ]
                if not write_all(items):
                    return
                for item in items:
                    if item is not HEARTBEAT:
                        subscription.last = item.tick
                        events.inc()
    finally:
        with subscription.writing:  # what was begun (a chunk, a frame) is finished first
            subscription.stop_writing_directly()
            if subscription.reason != "gone":
                write_all([])


def _ended_by_itself(state: ServiceState) -> str:
    """Why a connection whose subscription says nothing ended: the drain, or its time."""
    return "draining" if state.draining.is_set() else "lifetime"


def pushed(
    state: ServiceState, subscription: Subscription, after: int | None, live: bool = True
) -> Iterator[Rendered]:
    """What a push connection sends: every tick after ``after`` (the current one when
    None; at most HISTORY_MAX back) from the fan-out's cache of rendered ticks, then each
    tick as the fan-out publishes it, and heartbeats. The subscription joins the fan-out
    only once the replay is written, so that a long replay does not fill its queue
    meanwhile; the ticks published during the replay come from the cache: none is
    skipped, none sent twice. A replay yields to the event loop as it goes. Ends after
    the stream lifetime, when the worker drains, or once the subscription ends (a slow
    consumer, a client gone), checked before every item: a replay to a slow reader ends
    on time too. With ``live`` false it stops once caught up, joined to the fan-out (for a
    connection the fan-out then writes to directly)."""
    hub, key = state.hub, subscription.key
    ends = time.monotonic() + state.settings.stream_lifetime_minutes * 60

    def over() -> bool:
        return (
            subscription.reason is not None or state.draining.is_set() or time.monotonic() >= ends
        )

    current = hub.tick_at(state.feed.now())
    last = (current if after is None else max(after + 1, current - HISTORY_MAX + 1)) - 1

    def from_cache(until: int) -> Iterator[Rendered]:
        nonlocal last
        while last < until and not over():
            last += 1
            subscription.last = last
            yield hub.rendered(key, last)
            if last % REPLAY_YIELD_EVERY == 0:
                hub.wait_for_fanout()  # let the others run, the live ticks first

    yield from from_cache(current)
    hub.attach(subscription)
    yield from from_cache(hub.tick_at(state.feed.now()))
    while live and not over():
        for item in subscription.take():
            if over():
                return
            if item is HEARTBEAT:
                yield item
            elif item.tick > last:
                yield from from_cache(item.tick - 1)
                if over():
                    return
                last = subscription.last = item.tick
                yield item


def batched(items: Iterator[Rendered], size: int = REPLAY_YIELD_EVERY) -> Iterator[list[Rendered]]:
    """``items`` in lists of up to ``size``, each as soon as it is full or ``items`` ends
    (so only for items that come without waiting: a replay)."""
    batch: list[Rendered] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def document(feed: PriceFeed, symbols: Iterable[str], tick: int, now: float) -> str:
    """The /v1/prices document of ``tick``, stamped ``now`` (for a pushed tick: when the
    fan-out published it)."""
    quotes = tuple(feed.at_tick(symbol, tick, now) for symbol in symbols)
    return f"{batch_prefix(quotes)}{now!r}}}"


def last_event_id(raw: str | None) -> int | None:
    """The tick a reconnecting EventSource saw last, or None if absent or not a tick."""
    return None if raw is None else parse_tick(raw)
