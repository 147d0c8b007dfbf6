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
import threading
import time
from collections.abc import Generator, Iterator
from typing import Any
from urllib.parse import urlsplit

import flask
from werkzeug.exceptions import HTTPException

from service import errors
from service.api import batch_prefix, requested_symbols
from service.errors import ApiError, ShuttingDown
from service.feed import HISTORY_MAX
from service.logs import get_logger
from service.request_facts import facts_of
from service.state import ServiceState, get_state
from service.stream_slots import Slot
from service.websocket import WebSocket

bp = flask.Blueprint("push", __name__)
log = get_logger(__name__)

SSE_RETRY_SECONDS = 2.0  # EventSource reconnects after this (times RETRY_JITTER)
RETRY_JITTER = (1.0, 2.0)  # per connection, so a restart's reconnects spread over seconds
REFUSED_RETRY_SECONDS = 30.0  # an error that says no Retry-After (a bad request, a bad key)
PUSH_WRITE_TIMEOUT_SECONDS = 10.0  # a client that takes no bytes for this long is dropped
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


@bp.before_request
def _take_a_slot() -> None:
    """After the limiter's hook (which identified the client): check a WebSocket's Origin,
    validate the symbols and take the connection's places, before any WebSocket upgrade,
    unless this worker is draining (a stream it ended at once would be reopened at once)."""
    state = get_state()
    if state.draining.is_set():
        raise ShuttingDown()
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
    """Whether an Accept header names text/event-stream (as EventSource's does); ``*/*``
    does not: such a client reads a status."""
    if not accept:
        return False
    for item in accept.split(","):
        media, *parameters = item.split(";")
        if media.strip().lower() != "text/event-stream":
            continue
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


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
    events = SseStream(state, symbols, after, slot, connection_socket(flask.request.environ))
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
    ws = WebSocket.accept(
        environ,
        ping_interval=state.settings.stream_heartbeat_seconds,
        send_timeout=PUSH_WRITE_TIMEOUT_SECONDS,
        ended=slot.ended,
    )
    facts = facts_of(environ)
    facts.upgraded = facts.held = True
    if not ws.open():
        ws.finish()
        return HandedOver()
    sent = state.metrics.stream_events.labels("websocket")
    try:
        for item in ticks(state, symbols, after=None, ended=slot.ended):
            if item is None:
                continue  # WebSocket pings keep the connection; no heartbeat frame needed
            if not ws.send_text(item[1]):
                break  # too slow, or gone
            sent.inc()
        else:
            ws.close(1001, "stream lifetime over or service shutting down")
    finally:
        ws.finish()
    if ws.too_slow:
        log.info("client too slow to take the response: dropped", transport="websocket")
    return HandedOver()


class SseStream:
    """The event stream as a WSGI iterable whose ``close`` (called by the server when the
    response ends, the client gone or not) releases the slot. While it lasts, every write
    to the connection's socket must finish within PUSH_WRITE_TIMEOUT_SECONDS (the worker
    drops the connection when one does not)."""

    def __init__(
        self,
        state: ServiceState,
        symbols: list[str],
        after: int | None,
        slot: Slot,
        sock: socket.socket | None,
    ):
        self._events = self._render(state, symbols, after, slot.ended)
        self._slot = slot
        self._sock = sock
        self._timeout_before = None if sock is None else sock.gettimeout()
        if sock is not None:
            sock.settimeout(PUSH_WRITE_TIMEOUT_SECONDS)

    def __iter__(self) -> Iterator[bytes]:
        return self._events

    def close(self) -> None:
        self._events.close()
        self._slot.release()
        if self._sock is not None:  # a kept-alive connection waits for its next request
            with contextlib.suppress(OSError):  # cut, or closed
                self._sock.settimeout(self._timeout_before)

    @staticmethod
    def _render(
        state: ServiceState, symbols: list[str], after: int | None, ended: threading.Event
    ) -> Generator[bytes, None, None]:
        yield f"retry: {retry_ms(SSE_RETRY_SECONDS)}\n\n".encode()
        events = state.metrics.stream_events.labels("sse")
        for item in ticks(state, symbols, after, ended):
            if item is None:
                yield b": heartbeat\n\n"
                continue
            tick, document = item
            yield f"id: {tick}\ndata: {document}\n\n".encode()
            events.inc()


def ticks(
    state: ServiceState, symbols: list[str], after: int | None, ended: threading.Event
) -> Iterator[tuple[int, str] | None]:
    """``(tick, document)`` for every tick after ``after`` (the current one when None; at
    most HISTORY_MAX back), then each new tick as it starts; ``None`` when a heartbeat's time
    passed without one. Ends after the stream lifetime, or once ``ended`` is set (the
    service drains, or the peer is gone), checked before every item: a replay sent to a
    slow reader ends on time too."""
    feed = state.feed
    heartbeat = state.settings.stream_heartbeat_seconds
    ends = time.monotonic() + state.settings.stream_lifetime_minutes * 60

    def over() -> bool:
        return ended.is_set() or time.monotonic() >= ends

    now = feed.now()
    current = feed.tick_at(now)
    first = current if after is None else max(after + 1, current - HISTORY_MAX + 1)
    for tick in range(first, current + 1):
        if over():
            return
        yield tick, document(state, symbols, tick, now)
    last, quiet_since = current, time.monotonic()
    while True:
        until_tick = (last + 1) * feed.tick_seconds - feed.now()
        until_heartbeat = quiet_since + heartbeat - time.monotonic()
        left = ends - time.monotonic()
        if left <= 0 or ended.wait(max(0.0, min(until_tick, until_heartbeat, left))):
            return
        now = feed.now()
        current = feed.tick_at(now)
        if current > last:
            for tick in range(last + 1, current + 1):  # a slow wake-up skips none
                if over():
                    return
                yield tick, document(state, symbols, tick, now)
            last, quiet_since = current, time.monotonic()
        elif time.monotonic() - quiet_since >= heartbeat:
            yield None
            quiet_since = time.monotonic()


def document(state: ServiceState, symbols: list[str], tick: int, now: float) -> str:
    """The /v1/prices document of ``tick``, stamped ``now``."""
    quotes = tuple(state.feed.at_tick(symbol, tick, now) for symbol in symbols)
    return f"{batch_prefix(quotes)}{now!r}}}"


def last_event_id(raw: str | None) -> int | None:
    """The tick a reconnecting EventSource saw last, or None if absent or not a tick."""
    if raw is None or not (raw.isascii() and raw.isdigit() and len(raw) <= 15):
        return None
    return int(raw)
