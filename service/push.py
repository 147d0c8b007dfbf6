"""Push transports beside polling: Server-Sent Events (``GET /v1/prices/stream``) and
WebSocket (``GET /v1/prices/ws``, flask-sock).

Both carry the ``/v1/prices`` document (all symbols, or a validated ``symbols=`` subset),
at once and then once per tick. On their own blueprint: the limiter counts opening one
as one request against the client's budget (same headers, 429, 401), and a hook of this
blueprint alone caps the push connections a client holds open in this process
(``MAX_STREAMS_PER_CLIENT``), so the polling path pays for none of it.

An SSE event's ``id`` is its tick: a client reconnecting with ``Last-Event-ID`` first gets
the ticks it missed (at most ``HISTORY_MAX``), then the live ones, and loses none. A
stream ends by itself after ``STREAM_LIFETIME_MINUTES`` (EventSource reconnects after the
``retry`` hint and resumes), and at once when the service starts draining on SIGTERM.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from typing import Any, Protocol

import flask
from flask_sock import Sock

from service.api import batch_prefix, requested_symbols
from service.errors import ApiError, ShuttingDown
from service.feed import HISTORY_MAX
from service.metrics import Metrics
from service.request_facts import facts_of
from service.state import ServiceState, get_state

bp = flask.Blueprint("push", __name__)
sock = Sock()

SSE_RETRY_MS = 2000  # EventSource waits this long before reconnecting
WS_SEND_TIMEOUT_SECONDS = 10.0  # a client that stops reading is dropped after this
# STREAM_HEARTBEAT_SECONDS: an SSE comment line when no tick came for that long, so that
# proxies keep the stream; the WebSocket ping interval (a client that does not answer a
# ping by the next one is dropped).


class TooManyStreams(ApiError):
    def __init__(self, cap: int) -> None:
        super().__init__(
            429,
            "too_many_streams",
            f"At most {cap} push connections per client are open at once; close one first.",
        )

    def get_headers(self, *args: object, **kwargs: object) -> list[tuple[str, str]]:
        return [*super().get_headers(), ("Retry-After", "1")]


class StreamLedger(Protocol):
    def claim(self, client: str, cap: int) -> Callable[[], None] | None:
        """Take one of ``client``'s ``cap`` places; how to give it back, or None if full."""
        ...


class ProcessStreamLedger:
    """Places for open streams per client, counted in this process: when the limiter's
    storage is not Redis (with ``memory://`` this process is the only worker). With Redis,
    the limiter's SharedStreamLedger counts them across workers."""

    def __init__(self) -> None:
        self._open: Counter[str] = Counter()
        self._lock = threading.Lock()

    def claim(self, client: str, cap: int) -> Callable[[], None] | None:
        with self._lock:
            if self._open[client] >= cap:
                return None
            self._open[client] += 1
        return functools.partial(self._give_back, client)

    def _give_back(self, client: str) -> None:
        with self._lock:
            self._open[client] -= 1
            if self._open[client] <= 0:
                del self._open[client]


class StreamSlots:
    """The push connections each client holds open, capped, counted in ``ledger``."""

    def __init__(self, cap: int, metrics: Metrics, ledger: StreamLedger) -> None:
        self._cap = cap
        self._metrics = metrics
        self._ledger = ledger

    def take(self, client: str, transport: str) -> Slot:
        give_back = self._ledger.claim(client, self._cap)
        if give_back is None:
            raise TooManyStreams(self._cap)
        self._metrics.streams_open.labels(transport).inc()
        return Slot(functools.partial(self._give_back, give_back, transport))

    def _give_back(self, give_back: Callable[[], None], transport: str) -> None:
        give_back()
        self._metrics.streams_open.labels(transport).dec()


class Slot:
    """One open push connection's place; released once, however the connection ends."""

    def __init__(self, give_back: Callable[[], None]) -> None:
        self._give_back = give_back
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._give_back()


def init_app(app: flask.Flask, heartbeat_seconds: float) -> None:
    app.config["SOCK_SERVER_OPTIONS"] = {"ping_interval": heartbeat_seconds}
    app.register_blueprint(bp)


@bp.before_request
def _take_a_slot() -> None:
    """After the limiter's hook (which identified the client): validate the symbols and
    hold a push slot, before any WebSocket upgrade, unless this worker is draining (a
    stream it ended at once would be reopened at once)."""
    state = get_state()
    if state.draining.is_set():
        raise ShuttingDown()
    flask.g.push_symbols = requested_symbols(state)
    environ = flask.request.environ
    transport = "websocket" if flask.request.endpoint == "push.websocket" else "sse"
    client = facts_of(environ).client or environ.get("REMOTE_ADDR") or "unknown"
    flask.g.push_slot = state.streams.take(client, transport)


@bp.teardown_request
def _release_an_unclaimed_slot(_exc: BaseException | None) -> None:
    # The SSE view hands its slot to the stream, which releases it when the stream ends;
    # any other way out of the request (an error, a WebSocket session over) releases here.
    slot: Slot | None = flask.g.pop("push_slot", None)
    if slot is not None:
        slot.release()


@bp.get("/v1/prices/stream")
def stream() -> flask.Response:
    state = get_state()
    symbols: list[str] = flask.g.push_symbols
    after = last_event_id(flask.request.headers.get("Last-Event-ID"))
    slot: Slot = flask.g.pop("push_slot")
    events = SseStream(state, symbols, after, slot)
    response = flask.Response(events, mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return response


@sock.route("/v1/prices/ws", bp=bp)  # type: ignore[untyped-decorator]
def websocket(ws: Any) -> None:
    state = get_state()
    symbols: list[str] = flask.g.push_symbols
    facts = facts_of(flask.request.environ)
    facts.upgraded = facts.held = True
    # The reader thread only reads when select() says so (ping_interval is set), so a
    # timeout on the socket bounds our sends alone: a client that stops reading is dropped.
    ws.sock.settimeout(WS_SEND_TIMEOUT_SECONDS)
    for item in ticks(state, symbols, after=None):
        if item is None:
            continue  # WebSocket pings keep the connection; no heartbeat frame needed
        ws.send(item[1])
        state.metrics.stream_events.labels("websocket").inc()
    ws.close(reason=1001, message="stream lifetime over or service shutting down")


class SseStream:
    """The event stream as a WSGI iterable whose ``close`` (called by the server when the
    response ends, the client gone or not) releases the slot."""

    def __init__(self, state: ServiceState, symbols: list[str], after: int | None, slot: Slot):
        self._events = self._render(state, symbols, after)
        self._slot = slot

    def __iter__(self) -> Iterator[bytes]:
        return self._events

    def close(self) -> None:
        self._events.close()
        self._slot.release()

    @staticmethod
    def _render(
        state: ServiceState, symbols: list[str], after: int | None
    ) -> Generator[bytes, None, None]:
        yield f"retry: {SSE_RETRY_MS}\n\n".encode()
        events = state.metrics.stream_events.labels("sse")
        for item in ticks(state, symbols, after):
            if item is None:
                yield b": heartbeat\n\n"
                continue
            tick, document = item
            yield f"id: {tick}\ndata: {document}\n\n".encode()
            events.inc()


def ticks(
    state: ServiceState, symbols: list[str], after: int | None
) -> Iterator[tuple[int, str] | None]:
    """``(tick, document)`` for every tick after ``after`` (the current one when None; at
    most HISTORY_MAX back), then each new tick as it starts; ``None`` when a heartbeat's time
    passed without one. Ends after the stream lifetime, or when the service drains."""
    feed = state.feed
    heartbeat = state.settings.stream_heartbeat_seconds
    ends = time.monotonic() + state.settings.stream_lifetime_minutes * 60
    now = feed.now()
    current = feed.tick_at(now)
    first = current if after is None else max(after + 1, current - HISTORY_MAX + 1)
    for tick in range(first, current + 1):
        yield tick, document(state, symbols, tick, now)
    last, quiet_since = current, time.monotonic()
    while True:
        until_tick = (last + 1) * feed.tick_seconds - feed.now()
        until_heartbeat = quiet_since + heartbeat - time.monotonic()
        left = ends - time.monotonic()
        if left <= 0 or state.draining.wait(max(0.0, min(until_tick, until_heartbeat, left))):
            return
        now = feed.now()
        current = feed.tick_at(now)
        if current > last:
            for tick in range(last + 1, current + 1):  # a slow wake-up skips none
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
