"""Managed API keys on the real thing: two replicas of three gevent workers each, one Redis
for their limits and one PostgreSQL for their keys, changed by ``crypto-service keys`` as
an operator would, with no restart. Counted from the services' own access logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import websocket

from tests.databases import PostgresServer, postgres_binary
from tests.integration.conftest import HOST, RedisServer, Service, ServiceFactory, wait_until

COMMAND = str(Path(sys.executable).parent / "crypto-service")
SECRET = "integration-token-secret-0123456789abcdef"
PROPAGATION_SECONDS = 2.0  # the bound, from the command's return


def operator(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``crypto-service *args`` as an operator runs it (exit status checked)."""
    env = {"PATH": os.environ.get("PATH", ""), "DATABASE_URL": url, "LOG_LEVEL": "warning"}
    return subprocess.run(
        [COMMAND, *args], env=env, check=True, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def replicas(
    start_service: ServiceFactory, postgres: PostgresServer, redis_storage: RedisServer
) -> tuple[str, list[Service]]:
    """Two replicas of three workers, one Redis, one PostgreSQL (migrated first)."""
    url = postgres.new_database()
    operator(url, "db", "upgrade")
    env = {
        "WORKERS": "3",
        "RATE_LIMIT_STORAGE_URI": redis_storage.uri,
        "DATABASE_URL": url,
        "TOKEN_SECRET": SECRET,
        "RATE_LIMIT": "1000/minute",
    }
    return url, [start_service(**env), start_service(**env)]


def each_worker(services: list[Service]) -> Iterator[tuple[Service, int]]:
    """Every worker of every replica in turn, alone serving its replica meanwhile (the
    others stopped: what is sent waits for them, so the one left takes it)."""
    for service in services:
        workers = service.serving_workers()
        assert len(workers) == service.workers
        for pid in sorted(workers):
            with service.paused(workers - {pid}):
                yield service, pid


def status_of(service: Service, key: str) -> int:
    headers = {"X-API-Key": key, "Connection": "close"}
    return requests.get(f"{service.url}/v1/prices", headers=headers, timeout=10).status_code


def test_a_key_holds_in_every_worker_of_every_replica_within_2_s_and_stops_as_fast(
    replicas: tuple[str, list[Service]],
) -> None:
    url, services = replicas
    statuses = {
        pid: status_of(service, "cpk_not-yet-created") for service, pid in each_worker(services)
    }
    assert set(statuses.values()) == {401} and len(statuses) == 6
    key = operator(url, "keys", "create", "--name", "live").stdout.strip()
    created = time.monotonic()
    time.sleep(max(0.0, created + PROPAGATION_SECONDS - time.monotonic()))
    accepted = {pid: status_of(service, key) for service, pid in each_worker(services)}
    assert accepted == dict.fromkeys(statuses, 200)
    operator(url, "keys", "revoke", "live")
    revoked = time.monotonic()
    time.sleep(max(0.0, revoked + PROPAGATION_SECONDS - time.monotonic()))
    refused = {pid: status_of(service, key) for service, pid in each_worker(services)}
    assert refused == dict.fromkeys(statuses, 401)
    for service in services:  # no restart: the same workers all along
        assert service.worker_pids() >= set(accepted) & service.worker_pids()
        assert len(service.worker_pids()) == 3


def test_rotation_keeps_both_keys_for_the_grace_period_then_only_the_new_one(
    replicas: tuple[str, list[Service]],
) -> None:
    url, services = replicas
    old = operator(url, "keys", "create", "--name", "ci").stdout.strip()
    rotated = operator(url, "keys", "rotate", "ci", "--grace", "6s")
    new = rotated.stdout.strip()
    assert "(grace 6s)" in rotated.stderr
    ends = time.monotonic() + 6
    time.sleep(PROPAGATION_SECONDS)
    during = [(status_of(s, old), status_of(s, new)) for s in services]
    assert time.monotonic() < ends - 0.5, "the check took the whole grace period"
    assert during == [(200, 200), (200, 200)]
    time.sleep(max(0.0, ends - time.monotonic()) + 0.5)
    after = [(status_of(s, old), status_of(s, new)) for s in services]
    assert after == [(401, 200), (401, 200)]


def logged(services: list[Service], client: str) -> dict[str, int]:
    """What the replicas' access logs say of one client's requests."""
    counts = {"requests": 0, "rate_limited": 0, "streams": 0, "ok": 0}
    for service in services:
        for line in service.logs().splitlines():
            if '"event":"request"' not in line:
                continue
            entry = json.loads(line)
            if entry["client"] != client:
                continue
            counts["requests"] += 1
            counts["rate_limited"] += entry["status"] == 429
            counts["ok"] += entry["route"] == "/v1/prices" and entry["status"] == 200
            counts["streams"] += entry["route"] in ("/v1/prices/stream", "/v1/prices/ws") and (
                entry["status"] in (200, 101)
            )
    return counts


def opened_stream(service: Service, token: str) -> None:
    """An EventSource's stream by token: its first event read, then closed."""
    with requests.get(
        f"{service.url}/v1/prices/stream?symbols=BTC&token={token}",
        headers={"Accept": "text/event-stream"},
        stream=True,
        timeout=10,
    ) as answer:
        assert answer.status_code == 200
        for line in answer.iter_lines():
            if line.startswith(b"data: "):
                assert b'"prices"' in line
                return
    raise AssertionError("no event")


def opened_websocket(service: Service, token: str) -> None:
    socket = websocket.create_connection(
        f"ws://{HOST}:{service.port}/v1/prices/ws?symbols=BTC&token={token}", timeout=10
    )
    try:
        assert '"prices"' in socket.recv()
    finally:
        socket.close()


def test_a_keys_limit_holds_exactly_across_workers_and_its_counts_match_the_access_log(
    replicas: tuple[str, list[Service]],
) -> None:
    url, services = replicas
    created = operator(url, "keys", "create", "--name", "metered", "--limit", "20/minute")
    key = created.stdout.strip()
    fingerprint = json.loads(operator(url, "keys", "list", "--json").stdout)["fingerprint"]
    time.sleep(PROPAGATION_SECONDS)
    # A browser's way in: a token, then a stream and a WebSocket with it, on the other
    # replica (3 requests of the key).
    issued = requests.post(f"{services[0].url}/v1/tokens", headers={"X-API-Key": key}, timeout=10)
    assert issued.status_code == 201
    token = issued.json()["token"]
    opened_stream(services[1], token)
    opened_websocket(services[1], token)
    # Then 30 polls at once across both replicas' six workers: 17 within the limit.
    statuses: list[int] = []

    def poll(service: Service) -> None:
        statuses.append(status_of(service, key))

    threads = [threading.Thread(target=poll, args=(services[i % 2],)) for i in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(statuses) == [200] * 17 + [429] * 13
    # A stream's line is written when it ends (the server sees the client gone).
    wait_until(lambda: logged(services, fingerprint)["streams"] == 2, 30, "the streams' lines")
    before = logged(services, fingerprint)
    assert (before["requests"], before["rate_limited"], before["ok"]) == (33, 13, 17)
    time.sleep(2.5)  # every worker's batch written (FLUSH_SECONDS 1)
    usage = requests.get(f"{services[0].url}/v1/usage", headers={"X-API-Key": key}, timeout=10)
    assert usage.status_code == 200  # not limited itself
    assert (usage.json()["remaining"], usage.json()["limit"]) == (0, "20/minute")
    today = usage.json()["today"]
    counted = (today["requests"], today["rate_limited"], today["streams"])
    assert counted == (before["requests"], before["rate_limited"], before["streams"])
    time.sleep(2.5)
    listing = operator(url, "keys", "list", "--json").stdout.splitlines()
    (listed,) = [json.loads(line) for line in listing]
    after = logged(services, fingerprint)
    counted = (listed["requests_24h"], listed["rate_limited_24h"], listed["streams_24h"])
    assert counted == (after["requests"], after["rate_limited"], after["streams"])
    assert after["requests"] == before["requests"] + 1  # the usage request
    assert listed["last_used"] != "never"
    # Neither the database nor any log or metric holds the key or the token.
    dump = subprocess.run(
        [postgres_binary("pg_dump"), "--data-only", url],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert fingerprint in dump  # the dump is of the right database
    secrets = (key, key.removeprefix("cpk_"), token, token.rsplit("_", 1)[-1])
    scrapes = [requests.get(f"{service.url}/metrics", timeout=10).text for service in services]
    for text in (dump, *scrapes, *(service.logs() for service in services)):
        assert not any(secret in text for secret in secrets)
