"""Fault injection: only the price endpoints, as configured."""

from __future__ import annotations

from tests.conftest import AppFactory


def test_injected_faults_answer_json_500(make_app: AppFactory) -> None:
    client = make_app(FAULT_ERROR_RATE="1").test_client()
    response = client.get("/crypto-price")
    assert response.status_code == 500
    assert response.get_json()["error"] == "injected_fault"
    assert client.get("/healthz").status_code == 200  # only price endpoints are faulted
