"""The push transports as the polling loop sees them: ``fetch()`` returns the next price
document the server pushed, connecting (and reconnecting) as needed, and raises the same
errors as :class:`~client.api.PriceClient`, so the same retries, backoff and Retry-After
handling apply to connecting.

* :class:`SseClient` reads ``GET /v1/prices/stream`` and resumes with ``Last-Event-ID``:
  across a reconnect, even to a restarted server, no tick is lost.
* :class:`WebSocketClient` reads ``GET /v1/prices/ws``; a reconnect starts at the
  current tick (the ticks in between are counted as skipped).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator
from typing import Any, cast

import requests
import urllib3
import websocket

from client.api import (
    Fetched,
    PollError,
    RetryableError,
    connection_failed,
    identifying_headers,
    read_bounded,
    request_failed,
    root_cause,
    status_error,
    timed_out,
)
from client.payload import MAX_BODY_BYTES, BadPayload, media_type, parse_quotes
from client.sse import Event, EventStream, TooLarge, split_lines

# A stream that says nothing for this long (the server's heartbeat is 15 s) is dead.
SILENCE_SECONDS = 45.0
DEFAULT_RETRY_MS = 2000  # before reconnecting, when the server sent no retry hint
READ_BYTES = 65536  # what one read of a stream asks the socket for
# A WebSocket message larger than a poll's body may be (MAX_BODY_BYTES) is refused as it
# is read; the slack covers its frames' headers and a control frame read on the way.
WEBSOCKET_READ_BUDGET = MAX_BODY_BYTES + 4096


def arriving(response: requests.Response) -> Iterator[bytes]:
    """A streamed body as it arrives, whatever its framing. requests' ``iter_content``
    waits for the whole body unless it is chunked; an event stream delimited by the
    connection's end (HTTP/1.0, and many proxies) would never give its first event.
    urllib3's ``read1`` returns what one read of the socket gives (decoded, de-chunked)."""
    while chunk := response.raw.read1(READ_BYTES):
        yield chunk


class _PushClient:
    path = ""

    def __init__(
        self,
        url: str,
        symbols: list[str] | tuple[str, ...] = (),
        *,
        timeout: float = 5.0,
        api_key: str | None = None,
    ) -> None:
        self.base = url.rstrip("/")
        self.symbols = tuple(s.upper() for s in symbols)
        self.timeout = timeout
        self.headers = identifying_headers(api_key)
        self.in_flight = False  # true while waiting on the network (see the CLI's signals)
        self.connections = 0  # opened (accepted by the server)
        self.requests_sent = 0  # connections tried: the requests the server saw

    @property
    def reconnects(self) -> int:
        """Connections opened after the first."""
        return max(0, self.connections - 1)

    @property
    def query(self) -> str:
        return f"?symbols={','.join(self.symbols)}" if self.symbols else ""

    def fetch(self) -> Fetched:
        """The next document: a fresh quote set, never ``not_modified``."""
        started = time.monotonic()
        self.in_flight = True
        try:
            data = self._next_document()
        finally:
            self.in_flight = False
        quotes = parse_quotes(data.encode(), "application/json")
        if not self.symbols:
            quotes = quotes[:1]  # the server's default symbol (its first), as a poll gets
        return Fetched(quotes, False, None, None, time.monotonic() - started, time.time())

    def _next_document(self) -> str:
        raise NotImplementedError

    def close(self) -> None: ...

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class SseClient(_PushClient):
    path = "/v1/prices/stream"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stream = EventStream(strict=True)
        self._response: requests.Response | None = None
        self._events: Iterator[Event] | None = None

    def _connect(self) -> Iterator[Event]:
        # As EventSource asks: a server may then answer a refusal as an event stream (an
        # ``error`` event and a ``retry``) rather than a status.
        headers = {**self.headers, "Accept": "text/event-stream"}
        if self._stream.last_event_id:
            headers["Last-Event-ID"] = self._stream.last_event_id
        self.requests_sent += 1
        try:
            response = requests.get(
                self.base + self.path + self.query,
                headers=headers,
                stream=True,
                timeout=(self.timeout, SILENCE_SECONDS),
            )
        except requests.Timeout:
            raise timed_out(self.timeout) from None
        except requests.ConnectionError as exc:
            raise connection_failed(exc) from None
        except requests.RequestException as exc:
            raise request_failed(exc) from None
        if response.status_code != 200:
            with response:
                content = read_bounded(response)
            raise status_error(response.status_code, content, response.headers.get("Retry-After"))
        if media_type(response.headers.get("Content-Type")) != "text/event-stream":
            response.close()
            raise BadPayload("not an event stream")
        self.connections += 1
        self._response = response
        return self._stream.feed(split_lines(arriving(response), strict=True))

    def _next_document(self) -> str:
        while True:
            if self._events is None:
                self._events = self._connect()
            try:
                event = next(self._events)
            except StopIteration:
                # The stream ended (its lifetime, or the server going away): reconnect
                # after the server's retry hint, as EventSource does, and resume.
                self.close()
                retry = (self._stream.retry_ms or DEFAULT_RETRY_MS) / 1000
                raise RetryableError("the stream ended", "stream_end", None, retry) from None
            except TooLarge as exc:
                self.close()  # what follows cannot be trusted to be where an event starts
                raise BadPayload(str(exc)) from None
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                self.close()
                raise RetryableError(f"stream broken: {root_cause(exc)}", "connection") from None
            if event.event == "error":
                self.close()
                raise self._refusal(event.data) from None
            return event.data

    def _refusal(self, data: str) -> PollError:
        """A refusal sent as an event stream: its JSON error (with the status it stands
        for), to be retried after the stream's ``retry``, as EventSource would."""
        status = 503
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            said = json.loads(data).get("status")
            if isinstance(said, int) and 400 <= said <= 599:
                status = said
        retry = self._stream.retry_ms
        wait = None if retry is None else str(math.ceil(retry / 1000))
        return status_error(status, data.encode(), wait)

    def close(self) -> None:
        if self._response is not None:
            self._response.close()
        self._response, self._events = None, None


class MessageTooLarge(websocket.WebSocketException):
    pass


class BoundedWebSocket(websocket.WebSocket):
    """websocket-client's WebSocket, stopping a message larger than ``budget`` bytes as it
    is read: websocket-client has no size limit and would take a 300 MB frame whole.
    Every read of its frames goes through ``_recv`` (websocket-client 1.x, pinned in
    pyproject.toml; tests/client/test_streams.py fails loudly should that change)."""

    budget: int | None = None  # bytes the message being read may still take

    def _recv(self, bufsize: int) -> bytes:
        data: bytes = super()._recv(bufsize)  # type: ignore[no-untyped-call]
        if self.budget is not None:
            self.budget -= len(data)
            if self.budget < 0:
                raise MessageTooLarge(f"a WebSocket message larger than {MAX_BODY_BYTES} bytes")
        return data


class WebSocketClient(_PushClient):
    path = "/v1/prices/ws"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ws: BoundedWebSocket | None = None

    def _connect(self) -> BoundedWebSocket:
        url = ("ws" + self.base.removeprefix("http")) + self.path + self.query
        self.requests_sent += 1
        try:
            ws = websocket.create_connection(
                url,
                timeout=self.timeout,
                header=[f"{name}: {value}" for name, value in self.headers.items()],
                suppress_origin=True,  # not a page: it speaks for no origin
                class_=BoundedWebSocket,
            )
        except websocket.WebSocketBadStatusException as exc:
            # A refused handshake is an HTTP answer like a poll's: its status, its error
            # body and its Retry-After decide the retry.
            headers = exc.resp_headers or {}  # names in lower case
            raise status_error(exc.status_code, exc.resp_body, headers.get("retry-after")) from None
        except websocket.WebSocketTimeoutException:
            raise timed_out(self.timeout) from None
        except (websocket.WebSocketException, OSError) as exc:
            raise connection_failed(exc) from None
        ws.settimeout(SILENCE_SECONDS)
        self.connections += 1
        return cast(BoundedWebSocket, ws)

    def _next_document(self) -> str:
        if self._ws is None:
            self._ws = self._connect()
        self._ws.budget = WEBSOCKET_READ_BUDGET
        try:
            # Answers the server's pings as it reads; returns at a text, binary or close frame.
            opcode, data = self._ws.recv_data()
        except MessageTooLarge as exc:
            self.close()
            raise BadPayload(str(exc)) from None
        except websocket.WebSocketTimeoutException:
            self.close()
            raise RetryableError(f"silent for {SILENCE_SECONDS:g} s", "timeout") from None
        except (websocket.WebSocketException, OSError) as exc:
            self.close()
            raise RetryableError(f"stream broken: {root_cause(exc)}", "connection") from None
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            self.close()  # the server ended the session: connect again, with backoff
            raise RetryableError("the server closed the WebSocket", "stream_end")
        return data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)

    def close(self) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):  # it may be gone already
                self._ws.close(timeout=0.25)
        self._ws = None
