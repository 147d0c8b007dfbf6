"""Per-request bookkeeping as one WSGI middleware around the Flask application: request
IDs, security and rate-limit headers, metrics and the access log line.

A middleware rather than Flask hooks because it is on every request's path: Flask runs
each before/after/teardown hook through ``ensure_sync`` and the request proxies, which
cost more than the bookkeeping itself (``bench/NOTES.md``). Everything it needs comes in
one :class:`~service.request_facts.RequestFacts` record: the matched URL rule, which
:class:`RoutedFlask` writes when Flask matches the request, and the client and rate-limit
headers, which the limiter writes.
"""

from __future__ import annotations

import enum
import logging
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import flask
import structlog
from flask.ctx import RequestContext
from structlog.typing import FilteringBoundLogger

from service.identity import API_KEY
from service.metrics import CONNECTION_REFUSALS, Metrics
from service.request_facts import ENVIRON_KEY, RequestFacts, facts_of

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")


class RoutedRequestContext(RequestContext):
    """Flask's request context, noting the URL rule it matched in the request's facts:
    Flask drops its request object when the context ends, before the middleware records
    the request. ``match_request`` is Flask's documented hook for this."""

    def match_request(self) -> None:
        super().match_request()
        rule = self.request.url_rule
        if rule is not None:
            facts_of(self.request.environ).route = rule.rule


class RoutedFlask(flask.Flask):
    """A Flask application whose requests note their matched URL rule (see above)."""

    def request_context(self, environ: WSGIEnvironment) -> RequestContext:
        return RoutedRequestContext(self, environ)


class Instrumentation:
    """Wraps a WSGI application; every response gets ``X-Request-ID`` (the caller's when
    sane, else a new one) and ``X-Content-Type-Options: nosniff``, is counted and timed in
    ``metrics`` and logged as one line."""

    def __init__(
        self,
        app: WSGIApplication,
        metrics: Metrics,
        log: FilteringBoundLogger,
        count_key_use: Callable[[str, bool, bool], None] = lambda key, limited, stream: None,
    ) -> None:
        self._app = app
        self._metrics = metrics
        self._log = log
        # (key fingerprint, rate limited, stream opened) of each keyed request, counted
        # where its access line is written, so that the two agree.
        self._count_key_use = count_key_use

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        supplied = environ.get("HTTP_X_REQUEST_ID")
        # A sane ID from a proxy or client is kept so traces join up; anything else is replaced.
        if supplied is not None and REQUEST_ID.match(supplied):
            request_id = supplied
        else:
            # Unique, not secret: random's generator (reseeded in each forked worker)
            # instead of os.urandom, whose system call would give up the GIL.
            request_id = f"{random.getrandbits(128):032x}"
        status = ""
        facts = environ[ENVIRON_KEY] = RequestFacts()

        def start(status_line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            nonlocal status
            status = status_line
            headers.append(("X-Request-ID", request_id))
            headers.append(("X-Content-Type-Options", "nosniff"))
            headers.extend(facts.headers)
            return start_response(status_line, headers, exc_info)

        def finish(body: Body | None = None) -> None:
            # No status: the application raised past Flask's own handling, or a WebSocket
            # took the connection over (and answered 101 itself). A streamed body that
            # raised before its first part: the server answered 500 in its place.
            if body is Body.FAILED:
                code = 500
            elif status:
                code = int(status[:3])
            else:
                code = 101 if facts.upgraded else 500
            code = facts.stands_for or code
            self._record(environ, facts, code, started, request_id, body)

        tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
        self._metrics.in_flight.inc()
        streamed = False
        try:
            body = self._app(environ, start)
            if facts.streamed:
                streamed = True
                return RecordedWhenClosed(body, finish)
            return body
        finally:
            self._metrics.in_flight.dec()
            if not streamed:
                finish()
            structlog.contextvars.reset_contextvars(**tokens)

    def _record(
        self,
        environ: WSGIEnvironment,
        facts: RequestFacts,
        status: int,
        started: float,
        request_id: str,
        body: Body | None,
    ) -> None:
        seconds = time.perf_counter() - started
        route = facts.route
        method = environ.get("REQUEST_METHOD", "GET")
        rate_limited = facts.error == "rate_limited"
        self._metrics.observe_request(method, route, status, None if facts.held else seconds)
        if rate_limited and facts.client_class is not None:
            self._metrics.count_rate_limited(route, facts.client_class)
        elif facts.error in CONNECTION_REFUSALS:
            self._metrics.count_connection_refused(route, facts.error)
        if facts.client_class == API_KEY and facts.client is not None:
            opened = facts.upgraded or (facts.streamed and facts.stands_for is None)
            self._count_key_use(facts.client, rate_limited, opened)
        # WSGI strings carry the raw bytes as latin-1; the log wants the UTF-8 path.
        path = environ.get("PATH_INFO", "").encode("latin-1", "replace").decode("utf-8", "replace")
        self._log.log(
            logging.ERROR if status >= 500 else logging.INFO,
            "request",
            method=method,
            route=route,
            path=path[:256],
            status=status,
            duration_ms=round(seconds * 1000, 3),
            client=facts.client or environ.get("REMOTE_ADDR", "unknown"),
            rate_limited=rate_limited,
            request_id=request_id,
            **({} if body is None else {"body": body.value}),
            **({} if facts.stream_end is None else {"ended": facts.stream_end}),
        )


class Body(enum.Enum):
    """How a streamed body ended, as its access line says."""

    COMPLETE = "complete"  # to its end
    CUT = "cut"  # the client left, or a write failed or timed out, after the first part
    FAILED = "failed"  # raised before its first part: the server answered 500 instead


class RecordedWhenClosed:
    """A streamed body (``RequestFacts.streamed``) that the server iterates as the
    application's own, and that calls ``finish`` with how it ended once the server closes
    it (as werkzeug's ``ClosingIterator`` calls its callbacks), so that its access line
    and status are written when it ends, not when its headers go out."""

    __slots__ = ("_body", "_ended", "_finish", "_parts")

    def __init__(self, body: Iterable[bytes], finish: Callable[[Body], None]) -> None:
        self._body = body
        self._parts = iter(body)
        self._finish = finish
        self._ended: Body | None = None

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        try:
            part = next(self._parts)
        except StopIteration:
            self._ended = Body.COMPLETE
            raise
        except BaseException:
            self._ended = self._ended or Body.FAILED
            raise
        self._ended = self._ended or Body.CUT  # until it completes
        return part

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._finish(self._ended or Body.CUT)
