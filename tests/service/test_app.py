"""create_app's URL map: a path that is not one of ours is a JSON 404, never a redirect
built from what the client sent (werkzeug's merge_slashes made a 308 to the Host header)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import flask
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.test import EnvironBuilder, run_wsgi_app

from service.app import create_app
from service.config import Settings

HOSTILE_HOST = "evil.example"


def answer(app: flask.Flask, path: str) -> tuple[int, Any, bytes]:
    """The app's answer to ``path`` exactly as sent (werkzeug's test client would read a
    path that starts with '//' as a host), with the first part of its body."""
    environ = EnvironBuilder(path="/", headers=[("Host", HOSTILE_HOST)]).get_environ()
    environ["PATH_INFO"] = path
    body, status, headers = run_wsgi_app(app, environ)
    try:  # the first part only: an event stream does not end
        return int(status.split()[0]), headers, next(iter(body), b"")
    finally:
        if hasattr(body, "close"):
            body.close()


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, recorded_history: Path) -> flask.Flask:
    history = tmp_path_factory.mktemp("app") / "history.sqlite3"
    shutil.copy(recorded_history, history)
    env = {"LOG_LEVEL": "critical", "RATE_LIMIT": "1000000/minute"}
    return create_app(Settings.from_env({**env, "DATABASE_URL": f"sqlite:///{history}"}))


def test_a_doubled_slash_is_a_json_404_with_no_redirect(app: flask.Flask) -> None:
    for path in ("/v1//prices", "/v1/prices//BTC/history", "/v1/prices/", "/crypto-price/"):
        status, headers, body = answer(app, path)
        assert status == 404, path
        assert headers["Content-Type"] == "application/json", path
        assert "Location" not in headers and flask.json.loads(body)["error"] == "not_found"


ROUTES = ["/crypto-price", "/v1/prices", "/v1/prices/BTC/history", "/healthz", "/readyz",
          "/metrics", "/openapi.json", "/v1/prices/stream", "/static/page.js",
          "/favicon.ico"]  # fmt: skip


@st.composite
def our_paths_with_slashes_doubled(draw: st.DrawFn) -> str:
    """One of our paths, with any of its slashes repeated, and perhaps one more at the end."""
    route = draw(st.sampled_from(ROUTES))
    parts = route.split("/")
    repeats = draw(st.lists(st.integers(1, 3), min_size=len(parts), max_size=len(parts)))
    path = "".join("/" * repeat + part for repeat, part in zip(repeats, parts[1:], strict=False))
    return path + draw(st.sampled_from(["", "/", "//"]))


SEGMENTS = st.sampled_from(
    ["", "v1", "prices", "BTC", "history", "stream", "ws", "crypto-price", "x", ".", "..", "%2F"]
)


@settings(max_examples=300, deadline=None)
@given(
    path=our_paths_with_slashes_doubled()
    | st.lists(SEGMENTS, min_size=1, max_size=6).map(lambda segments: "/" + "/".join(segments))
)
def test_no_path_is_answered_with_a_redirect_or_the_clients_host(
    app: flask.Flask, path: str
) -> None:
    status, headers, body = answer(app, path)
    assert not 300 <= status < 400 and "Location" not in headers, (path, status)
    assert HOSTILE_HOST.encode() not in body, path
    assert status < 500, (path, status)
