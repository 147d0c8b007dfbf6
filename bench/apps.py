"""The baselines the service is measured against, served exactly like the service."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any

import flask


def raw_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The least a WSGI app can do for this endpoint: one JSON body, no framework."""
    body = json.dumps({"price": 100.0, "timestamp": time.time()}).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def create_flask_app() -> flask.Flask:
    """A bare Flask endpoint with the seed app's answer, and nothing else."""
    app = flask.Flask(__name__)

    @app.get("/crypto-price")
    def crypto_price() -> flask.Response:
        return flask.jsonify(price=100.0, timestamp=time.time())

    return app
