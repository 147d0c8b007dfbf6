"""Rate limiting through the test client with the embedded memory:// storage."""

from __future__ import annotations

import socket

import flask
import pytest

from service.limiting import StorageUnavailable
from service.state import get_state
from tests.conftest import AppFactory

KEY = "test-key-0123456789abcdef"
OTHER_KEY = "other-key-0123456789abcdef"


def _statuses(client: flask.testing.FlaskClient, n: int, **kwargs: object) -> list[int]:
    return [client.get("/crypto-price", **kwargs).status_code for _ in range(n)]


def test_limit_admits_exactly_n_then_429_with_json_and_headers(make_app: AppFactory) -> None:
    client = make_app(RATE_LIMIT="3/minute").test_client()
    first = client.get("/crypto-price")
    assert first.headers["X-RateLimit-Limit"] == "3"
    assert first.headers["X-RateLimit-Remaining"] == "2"
    assert first.headers["RateLimit-Policy"] == '"default";q=3;w=60'
    assert first.headers["RateLimit"].startswith('"default";r=2;t=')
    assert "Retry-After" not in first.headers
    assert _statuses(client, 4) == [200, 200, 429, 429]
    refused = client.get("/crypto-price")
    assert refused.status_code == 429
    body = refused.get_json()
    assert body["error"] == "rate_limited" and "3 per 1 minute" in body["message"]
    retry_after = int(refused.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert refused.headers["X-RateLimit-Remaining"] == "0"


def test_every_price_endpoint_shares_one_budget(make_app: AppFactory) -> None:
    client = make_app(RATE_LIMIT="3/minute").test_client()
    assert client.get("/crypto-price").status_code == 200
    assert client.get("/v1/prices").status_code == 200
    assert client.get("/v1/prices/BTC/history").status_code == 200
    assert client.get("/v1/prices?symbols=ETH").status_code == 429


def test_probes_metrics_and_documents_are_never_limited(make_app: AppFactory) -> None:
    client = make_app(RATE_LIMIT="1/minute").test_client()
    _statuses(client, 3)
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert all(client.get(path).status_code == 200 for _ in range(5)), path
    text = client.get("/metrics").get_data(as_text=True)
    assert (
        'http_requests_rate_limited_total{client_class="anonymous",route="/crypto-price"} 2.0'
        in text
    )


def test_forged_forwarded_for_changes_nothing_without_trusted_proxies(
    make_app: AppFactory,
) -> None:
    client = make_app(RATE_LIMIT="2/minute").test_client()
    statuses = [
        client.get("/crypto-price", headers={"X-Forwarded-For": f"10.0.0.{i}"}).status_code
        for i in range(5)
    ]
    assert statuses == [200, 200, 429, 429, 429]


def test_trusted_proxy_hop_identifies_the_client(make_app: AppFactory) -> None:
    client = make_app(RATE_LIMIT="1/minute", TRUSTED_PROXIES="1").test_client()
    # The one trusted proxy appends the address it saw; anything before it is the client's claim.
    assert (
        client.get("/crypto-price", headers={"X-Forwarded-For": "1.1.1.1, 2.2.2.2"}).status_code
        == 200
    )
    assert (
        client.get("/crypto-price", headers={"X-Forwarded-For": "9.9.9.9, 2.2.2.2"}).status_code
        == 429
    )
    assert client.get("/crypto-price", headers={"X-Forwarded-For": "3.3.3.3"}).status_code == 200


def test_api_keys_have_their_own_budgets_and_unknown_keys_get_401(
    make_app: AppFactory,
) -> None:
    client = make_app(RATE_LIMIT="1/minute", API_KEYS=f"{KEY}=3/minute,{OTHER_KEY}").test_client()
    assert _statuses(client, 4, headers={"X-API-Key": KEY}) == [200, 200, 200, 429]
    assert _statuses(client, 2, headers={"X-API-Key": OTHER_KEY}) == [200, 429]
    assert _statuses(client, 2) == [200, 429]  # the address's own budget is untouched
    keyed = client.get("/crypto-price", headers={"X-API-Key": KEY})
    assert keyed.headers["RateLimit-Policy"] == '"api-key";q=3;w=60'
    unknown = client.get("/crypto-price", headers={"X-API-Key": "not-a-key-at-all-000"})
    assert unknown.status_code == 401 and unknown.get_json()["error"] == "unauthorized"
    text = client.get("/metrics").get_data(as_text=True)
    assert KEY not in text and OTHER_KEY not in text
    assert (
        'http_requests_rate_limited_total{client_class="api_key",route="/crypto-price"} 3.0' in text
    )


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_unreachable_storage_fails_open_and_is_counted(make_app: AppFactory) -> None:
    client = make_app(RATE_LIMIT_STORAGE_URI=f"redis://127.0.0.1:{_closed_port()}").test_client()
    assert _statuses(client, 3) == [200, 200, 200]
    text = client.get("/metrics").get_data(as_text=True)
    assert "ratelimit_storage_errors_total 3.0" in text


def test_unreachable_storage_fails_closed_when_asked(make_app: AppFactory) -> None:
    client = make_app(
        RATE_LIMIT_STORAGE_URI=f"redis://127.0.0.1:{_closed_port()}", RATE_LIMIT_FAIL_OPEN="false"
    ).test_client()
    response = client.get("/crypto-price")
    assert response.status_code == 503
    assert response.get_json()["error"] == "unavailable"
    assert response.headers["Retry-After"] == "1"
    assert client.get("/healthz").status_code == 200


def test_stream_places_fail_open_with_an_unreachable_redis(make_app: AppFactory) -> None:
    app = make_app(RATE_LIMIT_STORAGE_URI=f"redis://127.0.0.1:{_closed_port()}")
    ledger = get_state(app).limiting.stream_ledger(60)
    assert ledger is not None
    give_back = ledger.claim("203.0.113.9", 1)
    assert give_back is not None  # opened, uncounted
    give_back()  # and nothing to give back
    text = app.test_client().get("/metrics").get_data(as_text=True)
    assert "ratelimit_storage_errors_total 1.0" in text


def test_stream_places_fail_closed_with_an_unreachable_redis_when_asked(
    make_app: AppFactory,
) -> None:
    app = make_app(
        RATE_LIMIT_STORAGE_URI=f"redis://127.0.0.1:{_closed_port()}", RATE_LIMIT_FAIL_OPEN="false"
    )
    ledger = get_state(app).limiting.stream_ledger(60)
    assert ledger is not None
    with pytest.raises(StorageUnavailable):
        ledger.claim("203.0.113.9", 1)


def test_stream_places_are_per_process_without_redis(make_app: AppFactory) -> None:
    assert get_state(make_app()).limiting.stream_ledger(60) is None


def test_counters_keep_flask_limiters_key_layout(make_app: AppFactory) -> None:
    # Same keys as the Flask-Limiter shared limit of earlier versions: a rolling upgrade
    # against one Redis keeps every client's count.
    app = make_app(RATE_LIMIT="5/minute")
    app.test_client().get("/crypto-price")
    storage = get_state(app).limiting.storage
    assert storage.get("LIMITER/crypto/127.0.0.1/api/5/1/minute") == 1


def _raise_timer_race(*_args: object, **_kwargs: object) -> int:
    # What limits' MemoryStorage raises when two threads restart its expiry timer at once
    # (Thread.start on a timer another thread already started).
    raise RuntimeError("threads can only be started once")


def test_any_exception_from_the_storage_fails_open_and_is_counted(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(RATE_LIMIT="1/minute")
    monkeypatch.setattr(get_state(app).limiting.storage, "incr", _raise_timer_race)
    client = app.test_client()
    assert _statuses(client, 3) == [200, 200, 200]
    text = client.get("/metrics").get_data(as_text=True)
    assert "ratelimit_storage_errors_total 3.0" in text
    assert 'status="500"' not in text


def test_any_exception_from_the_storage_fails_closed_when_asked(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(RATE_LIMIT_FAIL_OPEN="false")
    monkeypatch.setattr(get_state(app).limiting.storage, "incr", _raise_timer_race)
    response = app.test_client().get("/crypto-price")
    assert response.status_code == 503 and response.get_json()["error"] == "unavailable"
