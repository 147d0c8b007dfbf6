"""The service under real gunicorn: consistency across workers, exact metrics and limits,
graceful shutdown, and start-up validation."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPConnection, HTTPResponse
from pathlib import Path
from typing import Any

import redis
import requests

from tests.integration.conftest import (
    HOST,
    RedisServer,
    Service,
    ServiceFactory,
    free_port,
    redis_reads,
    require_binary,
    wait_until,
)

SECRET_KEY = "integration-key-0123456789"


def fresh_get(url: str, **kwargs: object) -> requests.Response:
    """One request on its own connection, so gunicorn may hand it to any worker."""
    with requests.Session() as session:
        return session.get(url, timeout=10, **kwargs)  # type: ignore[arg-type]


def worker_pids_that_served(service: Service) -> set[str]:
    """The processes that counted something, but the history recorder (it counts too)."""
    counted = {p.stem.rsplit("_", 1)[-1] for p in service.metrics_dir.glob("counter_*.db")}
    return counted - {str(service.recorder_pid())}


def test_every_worker_serves_the_same_price_for_the_same_tick(
    start_service: ServiceFactory, redis_storage: RedisServer
) -> None:
    service = start_service(
        WORKERS="3",
        RATE_LIMIT_STORAGE_URI=redis_storage.uri,
        RATE_LIMIT="100000/minute",
        PRICE_TICK_SECONDS="0.2",
    )
    url = f"{service.url}/crypto-price?symbol=ETH"
    bodies: list[dict[str, Any]] = []
    deadline = time.monotonic() + 1.5  # several ticks, so boundaries are crossed too
    with ThreadPoolExecutor(max_workers=6) as pool:
        while time.monotonic() < deadline or len(bodies) < 30:
            bodies += [r.json() for r in pool.map(lambda _: fresh_get(url), range(12))]
    prices_by_tick: dict[int, set[float]] = defaultdict(set)
    for body in bodies:
        prices_by_tick[body["tick"]].add(body["price"])
    assert all(len(prices) == 1 for prices in prices_by_tick.values()), prices_by_tick
    assert len(prices_by_tick) >= 2, "the run should span several ticks"
    assert len(worker_pids_that_served(service)) >= 2, "only one worker answered"


def test_metrics_count_exactly_the_requests_made_across_workers(
    start_service: ServiceFactory, redis_storage: RedisServer
) -> None:
    service = start_service(
        WORKERS="3", RATE_LIMIT_STORAGE_URI=redis_storage.uri, RATE_LIMIT="100000/minute"
    )
    paths = ["/crypto-price"] * 40 + ["/v1/prices?symbols=BTC,SOL"] * 7 + ["/x"] * 5
    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = Counter(
            r.status_code for r in pool.map(lambda p: fresh_get(service.url + p), paths)
        )
    assert statuses == {200: 47, 404: 5}
    assert len(worker_pids_that_served(service)) >= 2
    count = service.metric
    assert count("http_requests_total", route="/crypto-price", status="200") == 40
    assert count("http_requests_total", route="/v1/prices", status="200") == 7
    assert count("http_requests_total", route="unmatched", status="404") == 5
    assert count("http_request_duration_seconds_count", route="/crypto-price") == 40
    assert count("polls_total", symbol="BTC", outcome="fresh") == 47
    assert count("polls_total", symbol="SOL", outcome="fresh") == 7
    assert count("http_requests_in_flight") == 1  # the scrape itself


def test_redis_limit_admits_exactly_n_across_three_workers(
    start_service: ServiceFactory, redis_storage: RedisServer
) -> None:
    service = start_service(
        WORKERS="3", RATE_LIMIT_STORAGE_URI=redis_storage.uri, RATE_LIMIT="10/minute"
    )
    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(lambda _: fresh_get(f"{service.url}/crypto-price"), range(30)))
    assert Counter(r.status_code for r in responses) == {200: 10, 429: 20}
    assert len(worker_pids_that_served(service)) >= 2
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json()["error"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) >= 1
    assert (
        service.metric(
            "http_requests_rate_limited_total", route="/crypto-price", client_class="anonymous"
        )
        == 20
    )


def test_defaults_alone_start_one_process_that_enforces_the_limit_exactly(
    start_service: ServiceFactory,
) -> None:
    service = start_service()  # only HOST, PORT and the metrics directory are set
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = Counter(
            r.status_code
            for r in pool.map(lambda _: fresh_get(f"{service.url}/crypto-price"), range(130))
        )
    assert statuses == {200: 120, 429: 10}


def test_logs_are_one_json_line_per_request_without_secrets(
    start_service: ServiceFactory,
) -> None:
    service = start_service(API_KEYS=SECRET_KEY)
    fresh_get(
        f"{service.url}/crypto-price", headers={"X-API-Key": SECRET_KEY, "X-Request-ID": "trace-1"}
    )
    fresh_get(f"{service.url}/crypto-price", headers={"X-API-Key": "wrong-key-0000000000"})
    service.stop()
    lines = [json.loads(line) for line in service.logs().splitlines()]  # every line is JSON
    requests_logged = [
        line for line in lines if line["event"] == "request" and line["route"] == "/crypto-price"
    ]
    assert [r["status"] for r in requests_logged] == [200, 401]
    first = requests_logged[0]
    assert first["request_id"] == "trace-1" and first["client"].startswith("key-")
    assert {"timestamp", "level", "method", "path", "duration_ms", "rate_limited"} <= set(first)
    assert first["timestamp"].endswith("Z")
    startup = [line for line in lines if line["event"] == "starting crypto-service"]
    assert len(startup) == 1 and startup[0]["workers"] == 1
    assert any(line.get("logger") == "gunicorn.error" for line in lines)
    assert SECRET_KEY not in service.logs()


def test_buffered_request_lines_reach_stdout_within_the_flush_interval(
    start_service: ServiceFactory,
) -> None:
    service = start_service(LOG_FLUSH_SECONDS="0.2")
    fresh_get(f"{service.url}/crypto-price", headers={"X-Request-ID": "flush-check"})
    sent = time.monotonic()
    wait_until(lambda: '"request_id":"flush-check"' in service.logs(), 5, "the request line")
    assert time.monotonic() - sent < 2  # the interval, not a full buffer, wrote it


def test_sigterm_turns_readiness_off_finishes_in_flight_requests_and_exits_zero(
    start_service: ServiceFactory,
) -> None:
    service = start_service(FAULT_LATENCY_MS="1500", THREADS="4")
    results: dict[str, object] = {}
    keepalive = requests.Session()
    assert keepalive.get(f"{service.url}/readyz", timeout=5).status_code == 200

    def slow_poll() -> None:
        results["slow"] = fresh_get(f"{service.url}/crypto-price").status_code

    poller = threading.Thread(target=slow_poll)
    poller.start()
    service.wait_in_flight(1)
    started = time.monotonic()
    service.process.send_signal(15)
    results["ready"] = service.wait_draining(keepalive)
    poller.join(timeout=15)
    code = service.process.wait(timeout=15)
    assert results["slow"] == 200
    assert results["ready"] == 503  # a kept-alive connection is answered "draining"
    assert code == 0
    assert time.monotonic() - started < 10


def run_service_expecting_failure(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = str(Path(sys.executable).parent / "crypto-service")
    return subprocess.run(
        [script],
        env={"PATH": "/usr/bin:/bin", "PORT": str(free_port()), **env},
        capture_output=True,
        text=True,
        timeout=20,
    )


def test_bad_configuration_stops_with_one_line_naming_the_variable() -> None:
    for env, variable in (
        ({"PORT": "not-a-port"}, "PORT"),
        ({"WORKERS": "3"}, "WORKERS"),
        ({"RATE_LIMIT": "whenever"}, "RATE_LIMIT"),
        ({"MAX_REQUESTS": "20", "RATE_LIMIT": "10/minute"}, "MAX_REQUESTS"),
    ):
        result = run_service_expecting_failure(env)
        assert result.returncode == 2
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(
            f"crypto-service: configuration error: {variable}:"
        )


def test_live_scrape_passes_promtool_check_metrics(
    start_service: ServiceFactory, redis_storage: RedisServer
) -> None:
    promtool = require_binary("promtool")
    service = start_service(
        WORKERS="2", RATE_LIMIT_STORAGE_URI=redis_storage.uri, RATE_LIMIT="3/minute"
    )
    first = fresh_get(f"{service.url}/crypto-price")
    fresh_get(f"{service.url}/crypto-price", headers={"If-None-Match": first.headers["ETag"]})
    for path in ("/v1/prices", "/v1/prices/BTC/history", "/nope"):
        fresh_get(service.url + path)
    scrape = fresh_get(f"{service.url}/metrics")
    assert scrape.headers["Content-Type"].startswith("text/plain")
    for family in ("http_requests_total", "http_requests_rate_limited_total", "polls_total"):
        assert f"\n{family}{{" in scrape.text
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=scrape.text,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == ""


def test_one_redis_round_trip_per_limited_request(
    start_service: ServiceFactory, redis_storage: RedisServer
) -> None:
    import redis

    service = start_service(
        WORKERS="2", RATE_LIMIT_STORAGE_URI=redis_storage.uri, RATE_LIMIT="1000/minute"
    )
    client = redis.Redis(host="127.0.0.1", port=redis_storage.port)
    client.config_resetstat()
    with ThreadPoolExecutor(max_workers=4) as pool:
        responses = list(pool.map(lambda _: fresh_get(f"{service.url}/crypto-price"), range(100)))
    assert {r.status_code for r in responses} == {200}
    remaining = sorted(int(r.headers["X-RateLimit-Remaining"]) for r in responses)
    assert remaining == list(range(900, 1000))  # exact counts in the headers all the same
    stats: dict[str, Any] = client.info("commandstats")  # type: ignore[assignment]
    # Successful calls: the first EVALSHA of each worker fails with NOSCRIPT and is resent
    # after SCRIPT LOAD (redis-py's Script), which Redis counts as a failed call.
    calls = {
        name.removeprefix("cmdstat_"): int(s["calls"]) - int(s.get("failed_calls", 0))
        for name, s in stats.items()
    }
    counting = calls.get("evalsha", 0) + calls.get("eval", 0)
    assert counting == 100
    # The window's end comes from the PTTL inside the same script (commandstats counts
    # a script's commands too), never from a round trip of its own.
    assert calls.get("pttl", 0) == counting and calls.get("ttl", 0) == 0
    assert calls.get("get", 0) == 0


def test_a_client_that_waits_exactly_retry_after_is_admitted_next_time(
    start_service: ServiceFactory, redis_storage: RedisServer
) -> None:
    """3 workers on one Redis: whichever worker refuses, and even after Redis lost its keys,
    the Retry-After (and the reset) a client is told is never earlier than the real end of
    its window."""
    service = start_service(
        WORKERS="3", RATE_LIMIT_STORAGE_URI=redis_storage.uri, RATE_LIMIT="2 per 2 seconds"
    )
    url = f"{service.url}/crypto-price"
    rng = random.Random(7)
    admitted_after_waiting = 0
    for cycle in range(20):
        if cycle % 5 == 4:
            redis_storage.flush()  # a Redis restart or flush in the middle of a window
        while (refused := fresh_get(url)).status_code == 200:
            time.sleep(rng.uniform(0.05, 0.6))  # land anywhere in the window
        assert refused.status_code == 429
        retry_after = int(refused.headers["Retry-After"])
        reset_at = int(refused.headers["X-RateLimit-Reset"])
        assert 1 <= retry_after <= 2
        time.sleep(retry_after)
        assert time.time() >= reset_at - 1  # the reset header agrees with Retry-After
        admitted = fresh_get(url)
        assert admitted.status_code == 200, (cycle, refused.headers, admitted.headers)
        admitted_after_waiting += 1
    assert admitted_after_waiting == 20


def burst(service: Service, path: str, connections: list[HTTPConnection]) -> list[HTTPResponse]:
    """One request on each of ``connections`` (kept alive, already accepted), all reaching
    the service at the same moment: the workers are paused (SIGSTOP) while the requests
    are written, so that on waking each finds its share of them waiting at once."""
    with service.paused(service.worker_pids()):
        for connection in connections:
            connection.request("GET", path)
    answers = []
    for connection in connections:
        answer = connection.getresponse()
        answer.read()
        answers.append(answer)
    return answers


def test_checks_of_requests_served_together_share_a_redis_round_trip(
    start_service: ServiceFactory, redis_storage: RedisServer
) -> None:
    """Under the gevent worker (the default), the limit checks of requests handled in the
    same turn of a worker's event loop go to Redis as one pipeline: far fewer reads on
    Redis's side than requests, and still one exact count per request."""
    service = start_service(
        WORKERS="2", RATE_LIMIT_STORAGE_URI=redis_storage.uri, RATE_LIMIT="1000/minute"
    )
    observer = redis.Redis(host=HOST, port=redis_storage.port)
    connections = [HTTPConnection(HOST, service.port, timeout=10) for _ in range(32)]
    for connection in connections:  # accepted one by one; the script loaded, Redis connected
        connection.request("GET", "/crypto-price")
        connection.getresponse().read()
    before = redis_reads(observer)
    answers = [answer for _ in range(10) for answer in burst(service, "/crypto-price", connections)]
    reads = redis_reads(observer) - before
    for connection in connections:
        connection.close()
    assert {a.status for a in answers} == {200}
    remaining = sorted(int(a.headers["X-RateLimit-Remaining"]) for a in answers)
    assert remaining == list(range(1000 - 32 - 320, 1000 - 32))
    assert reads <= 320 / 4, reads
