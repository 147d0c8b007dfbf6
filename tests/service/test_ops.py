"""The operational endpoints: probes, and what /metrics and /openapi.json answer."""

from __future__ import annotations

import flask

from service.state import get_state
from tests.conftest import AppFactory


def test_probes_answer_and_readiness_turns_503_when_draining(
    client: flask.testing.FlaskClient, make_app: AppFactory
) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/readyz").get_json() == {"status": "ready"}
    app = make_app()
    get_state(app).draining.set()
    draining = app.test_client().get("/readyz")
    assert draining.status_code == 503 and draining.get_json()["error"] == "draining"
    assert draining.headers["Content-Type"] == "application/json"
