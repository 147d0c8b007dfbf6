"""Operational endpoints: liveness, readiness, metrics and the OpenAPI document.

None of them is rate limited: probes and scrapes must never be refused.
"""

from __future__ import annotations

import flask

from service.errors import ApiError
from service.openapi import openapi_document
from service.state import get_state

bp = flask.Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> flask.Response:
    return flask.jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> flask.Response:
    if get_state().draining.is_set():
        raise ApiError(503, "draining", "Shutting down: finishing the requests in flight.")
    return flask.jsonify(status="ready")


@bp.get("/metrics")
def metrics() -> flask.Response:
    state = get_state()
    # Bring the price gauges to the current tick even if no one polled since it began.
    now = state.feed.now()
    for symbol in state.feed.symbols:
        state.feed.quote(symbol, now)
    body, content_type = state.metrics.exposition()
    response = flask.Response(body, content_type=content_type)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/openapi.json")
def openapi() -> flask.Response:
    state = get_state()
    return flask.jsonify(openapi_document(state.settings))
