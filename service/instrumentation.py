"""Per-request bookkeeping: request IDs, security headers, metrics and the access log line."""

from __future__ import annotations

import os
import re
import time

import flask
import structlog

from service.limiting import current_client
from service.logs import get_logger
from service.metrics import UNMATCHED_ROUTE
from service.state import get_state

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
log = get_logger("service.access")


def start_request() -> None:
    flask.g.started = time.perf_counter()
    supplied = flask.request.headers.get("X-Request-ID", "")
    # A sane ID from a proxy or client is kept so traces join up; anything else is replaced.
    flask.g.request_id = supplied if REQUEST_ID.match(supplied) else os.urandom(16).hex()
    structlog.contextvars.bind_contextvars(request_id=flask.g.request_id)
    get_state().metrics.in_flight.inc()


def finish_request(response: flask.Response) -> flask.Response:
    request = flask.request
    state = get_state()
    seconds = time.perf_counter() - flask.g.get("started", time.perf_counter())
    route = request.url_rule.rule if request.url_rule is not None else UNMATCHED_ROUTE
    status = response.status_code
    client = current_client()
    rate_limited = status == 429
    response.headers["X-Request-ID"] = flask.g.get("request_id") or os.urandom(16).hex()
    response.headers["X-Content-Type-Options"] = "nosniff"
    state.metrics.observe_request(request.method, route, status, seconds)
    if rate_limited:
        state.metrics.count_rate_limited(route, client.client_class)
    log.log(
        40 if status >= 500 else 20,
        "request",
        method=request.method,
        route=route,
        path=request.path[:256],
        status=status,
        duration_ms=round(seconds * 1000, 3),
        client=client.key,
        rate_limited=rate_limited,
    )
    return response


def end_request(_exc: BaseException | None) -> None:
    if "started" in flask.g:
        get_state().metrics.in_flight.dec()
    structlog.contextvars.clear_contextvars()


def init_app(app: flask.Flask) -> None:
    # Registered before everything else: first of the before_request hooks and, since
    # Flask runs after_request hooks in reverse, last of those.
    app.before_request(start_request)
    app.after_request(finish_request)
    app.teardown_request(end_request)
