"""JSON errors: the right status, a stable code, never HTML or a traceback."""

from __future__ import annotations

import flask

from tests.conftest import AppFactory


def test_wrong_method_is_a_json_405_with_allow(client: flask.testing.FlaskClient) -> None:
    response = client.post("/crypto-price", data="x")
    assert response.status_code == 405
    assert response.get_json()["error"] == "method_not_allowed"
    assert "GET" in response.headers["Allow"]


def test_unexpected_exceptions_are_a_bare_json_500(make_app: AppFactory) -> None:
    app = make_app()

    def explode() -> str:
        raise RuntimeError("secret internals")

    app.add_url_rule("/explode", view_func=explode)
    response = app.test_client().get("/explode")
    assert response.status_code == 500
    assert response.get_json() == {
        "error": "internal_server_error",
        "message": "Internal server error.",
    }
    assert "secret" not in response.get_data(as_text=True)
