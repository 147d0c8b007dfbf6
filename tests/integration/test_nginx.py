"""The service behind Debian's nginx, configured as the README recommends
(deploy/nginx/crypto-service.conf): events arrive tick by tick, not buffered; WebSockets
upgrade through it; long-polls wait through it; the client address comes through;
crypto-poll gets every tick through it, whatever its transport."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import simple_websocket

from client.sse import EventStream, split_lines
from tests.integration.conftest import (
    HOST,
    Service,
    ServiceFactory,
    nginx_in_front_of,
)


@pytest.fixture
def behind_nginx(start_service: ServiceFactory, tmp_path: Path) -> Iterator[tuple[Service, str]]:
    service = start_service(PRICE_TICK_SECONDS="0.5", TRUSTED_PROXIES="1")
    with nginx_in_front_of(service.port, tmp_path) as url:
        yield service, url


def test_events_pass_through_nginx_tick_by_tick(behind_nginx: tuple[Service, str]) -> None:
    _, url = behind_nginx
    arrivals: list[tuple[float, float]] = []  # (stamped by the service, received here)
    with requests.get(f"{url}/v1/prices/stream?symbols=BTC", stream=True, timeout=10) as reply:
        assert reply.status_code == 200
        for event in EventStream().feed(split_lines(reply.iter_content(chunk_size=None))):
            arrivals.append((json.loads(event.data)["timestamp"], time.time()))
            if len(arrivals) == 5:
                break
    # Unbuffered: each event arrives as it is sent, not when a buffer fills.
    assert all(received - stamped < 0.2 for stamped, received in arrivals), arrivals


def test_websocket_upgrades_and_long_polls_wait_through_nginx(
    behind_nginx: tuple[Service, str],
) -> None:
    _, url = behind_nginx
    ws = simple_websocket.Client.connect(url.replace("http://", "ws://") + "/v1/prices/ws")
    try:
        ticks = [json.loads(ws.receive(timeout=5))["prices"][0]["tick"] for _ in range(3)]
    finally:
        ws.close()
    assert ticks == list(range(ticks[0], ticks[0] + 3))
    first = requests.get(f"{url}/crypto-price", timeout=5)
    held = requests.get(
        f"{url}/crypto-price",
        headers={"If-None-Match": first.headers["ETag"], "Prefer": "wait=10"},
        timeout=15,
    )
    assert held.status_code == 200 and held.json()["tick"] == first.json()["tick"] + 1
    assert held.headers["Preference-Applied"] == "wait=10"


def test_the_client_address_comes_through_the_trusted_hop(
    behind_nginx: tuple[Service, str],
) -> None:
    service, url = behind_nginx
    # From another loopback address than nginx's own, with a forged claim on top.
    port = int(url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection(HOST, port, timeout=5, source_address=("127.0.0.3", 0))
    connection.request("GET", "/crypto-price", headers={"X-Forwarded-For": "203.0.113.9"})
    assert connection.getresponse().status == 200
    connection.close()
    service.stop()
    price_clients = {request.client for request in service.served()}
    assert price_clients == {"127.0.0.3"}  # what nginx saw, not the claim, not nginx itself


@pytest.mark.parametrize("transport", ["poll", "long-poll", "sse", "websocket"])
def test_crypto_poll_gets_every_tick_through_nginx(
    behind_nginx: tuple[Service, str], transport: str
) -> None:
    _, url = behind_nginx
    args = [
        "--url", url, "--transport", transport, "--count", "4", "--interval", "0.3",
        "--output", "json", "--log-format", "json",
    ]  # fmt: skip
    command = [str(Path(sys.executable).parent / "crypto-poll"), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    ticks = [json.loads(line)["tick"] for line in result.stdout.splitlines()]
    assert ticks == list(range(ticks[0], ticks[0] + 4)), ticks


def test_with_the_service_down_nginx_answers_event_streams_with_a_retry_and_others_in_json(
    behind_nginx: tuple[Service, str],
) -> None:
    service, url = behind_nginx
    assert service.stop() == 0
    plain = requests.get(f"{url}/v1/prices", timeout=5)
    assert plain.status_code == 502 and plain.json()["error"] == "upstream_unavailable"
    assert int(plain.headers["Retry-After"]) >= 1
    asked = requests.get(
        f"{url}/v1/prices/stream", headers={"Accept": "text/event-stream"}, timeout=5
    )
    assert asked.status_code == 200
    assert asked.headers["Content-Type"].startswith("text/event-stream")
    stream = EventStream()
    (event,) = list(stream.feed(split_lines([asked.content])))
    assert event.event == "error" and json.loads(event.data)["status"] == 502
    assert stream.retry_ms is not None and 2000 <= stream.retry_ms <= 5000


def test_a_streams_token_reaches_neither_nginxs_log_nor_the_services(
    start_service: ServiceFactory, tmp_path: Path
) -> None:
    key = "nginx-test-key-0123456789"
    service = start_service(PRICE_TICK_SECONDS="0.5", TRUSTED_PROXIES="1", API_KEYS=key)
    with nginx_in_front_of(service.port, tmp_path) as url:
        token = requests.post(f"{url}/v1/tokens", headers={"X-API-Key": key}, timeout=5).json()[
            "token"
        ]
        with requests.get(
            f"{url}/v1/prices/stream?symbols=BTC&token={token}", stream=True, timeout=10
        ) as reply:
            assert reply.status_code == 200
            next(EventStream().feed(split_lines(reply.iter_content(chunk_size=None))))
        assert requests.get(f"{url}/v1/prices/stream?token=forged", timeout=5).status_code == 401
    service.stop()
    logged = (tmp_path / "access.log").read_text()
    assert '"GET /v1/prices/stream HTTP/1.1" 200' in logged
    assert '"GET /v1/prices/stream HTTP/1.1" 401' in logged
    for text in (logged, service.logs()):
        assert token not in text and "forged" not in text and key not in text
