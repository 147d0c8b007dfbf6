"""Reliability and security, each proven by doing the bad thing for real against gunicorn:
fuzzing, bad input, spoofing, cardinality, worker death and recycling, Redis outage,
graceful shutdown."""

from __future__ import annotations

import itertools
import os
import random
import signal
import socket
import string
import subprocess
import sys
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import (
    HOST,
    PollRun,
    RedisServer,
    Service,
    ServiceFactory,
    free_port,
    redis_answers,
    require_binary,
    server_side,
    wait_until,
)

KEY = "reliability-key-0123456789"


def raw_request(port: int, data: bytes) -> bytes:
    with socket.create_connection((HOST, port), timeout=10) as connection:
        connection.sendall(data)
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def assert_json_error(response: requests.Response, status: int) -> None:
    assert response.status_code == status, (response.status_code, response.text[:200])
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) >= {"error", "message"}
    assert "Traceback" not in response.text and "<html" not in response.text.lower()


def series_count(service: Service) -> int:
    text = requests.get(f"{service.url}/metrics", timeout=10).text
    return sum(len(family.samples) for family in text_string_to_metric_families(text))


def run_schemathesis(
    service: Service,
    *options: str,
    config: Path | None = None,
    mismatched: frozenset[str] = frozenset(),
) -> str:
    """``schemathesis run`` of the service's own document; its report when it found nothing."""
    schemathesis = Path(sys.executable).parent / "schemathesis"
    result = subprocess.run(
        [
            str(schemathesis),
            *(["--config-file", str(config)] if config else []),
            "run",
            f"{service.url}/openapi.json",
            "--checks",
            "all",
            "--seed",
            "1",
            "--no-color",
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:]
    if mismatched:
        warned = result.stdout.split("Schema validation mismatch:", 1)[1].split("💡", 1)[0]
        operations = {line.strip("- ").strip() for line in warned.splitlines()[1:]} - {""}
        assert operations == mismatched, warned
        assert "1 warning in" in result.stdout and "failed" not in result.stdout.lower()
    else:
        assert "No issues found" in result.stdout
    return result.stdout


# A range whose ends are out of order (invalid_range), or that spans more candles than one
# answer holds (range_too_long), is a documented 400 that no schema of two independent
# parameters can express. Schemathesis draws from and to independently, so there a 400 is
# an answer to valid data, and most of its pairs get one (its "validation mismatch"
# warning, expected for these two and no other operation).
# The key endpoints need a key to do anything but refuse: they are sent the test's.
RANGES_CONFIG = f"""
[[operations]]
include-path-regex = "/(history|candles)$"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx",
]

[[operations]]
include-path-regex = "/v1/(tokens|usage)$"
headers = {{ "X-API-Key" = "{KEY}" }}
"""


def test_schemathesis_finds_no_5xx_and_no_response_off_the_contract(
    start_service: ServiceFactory, tmp_path: Path
) -> None:
    service = start_service(RATE_LIMIT="1000000/minute", API_KEYS=f"{KEY}=1000000/minute")
    config = tmp_path / "schemathesis.toml"
    config.write_text(RANGES_CONFIG)
    run_schemathesis(
        service,
        "--max-examples",
        "60",
        # The streams: the test below, and test_push.py (schemathesis cannot speak WebSocket).
        "--exclude-path",
        "/v1/prices/stream",
        "--exclude-path",
        "/v1/prices/ws",
        config=config,
        mismatched=frozenset(
            {"GET /v1/prices/{symbol}/candles", "GET /v1/prices/{symbol}/history"}
        ),
    )


@pytest.mark.parametrize("event_source", [False, True], ids=["any-client", "EventSource"])
def test_schemathesis_checks_every_event_of_the_stream_against_its_schema(
    start_service: ServiceFactory, tmp_path: Path, event_source: bool
) -> None:
    """Each event pushed (the first five of each stream) is checked against the document's
    itemSchema, its data against the JSON schema it names: ticks, and the error event that
    a refusal is to a client asking for text/event-stream."""
    config = tmp_path / "schemathesis.toml"
    config.write_text("max-stream-events = 5\n")
    service = start_service(
        RATE_LIMIT="1000000/minute", API_KEYS=f"{KEY}=1000000/minute", PRICE_TICK_SECONDS="0.1"
    )
    options = ["--max-examples", "20", "--include-path", "/v1/prices/stream"]
    if event_source:
        # A refusal to an EventSource is a 200 event stream (it would give up for good on
        # any other status), so the check that bad requests get a 4xx does not apply.
        options += ["-H", "Accept: text/event-stream"]
        options += ["--exclude-checks", "negative_data_rejection"]
    run_schemathesis(service, *options, config=config)
    statuses = Counter(served.status for served in service.served("/v1/prices/stream"))
    assert statuses[200] >= 10 and statuses[400] >= 1, statuses  # streams, and refusals


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-%d: 1\r\n" % i for i in range(120))
            + b"\r\n",
            431,
        ),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 9000 + b"\r\n\r\n", 431),
        (b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET / HTTP/9.9\r\nHost: x\r\n\r\n", 400),
    ],
    ids=[
        "request-line-too-long",
        "too-many-headers",
        "header-too-large",
        "bad-method",
        "bad-version",
    ],
)
def test_gunicorn_own_errors_are_json_too(
    start_service: ServiceFactory, request_bytes: bytes, status: int
) -> None:
    service = start_service()
    answer = raw_request(service.port, request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status), head
    assert b"Content-Type: application/json" in head
    assert b"<html" not in answer.lower()
    import json

    assert set(json.loads(body)) == {"error", "message"}


def test_bad_inputs_get_a_json_4xx_each_and_the_service_keeps_answering(
    start_service: ServiceFactory,
) -> None:
    service = start_service(RATE_LIMIT="1000000/minute")
    url = service.url
    cases: list[tuple[str, str, dict[str, str], int]] = [
        ("GET", "/crypto-price?symbol=NOPE", {}, 404),
        ("GET", "/crypto-price?symbol=%00%01", {}, 400),
        ("GET", "/crypto-price?symbol=" + "B" * 3000, {}, 400),
        ("GET", "/v1/prices?symbols=" + ",".join(["BTC"] * 300), {}, 400),
        ("GET", "/v1/prices?symbols=" + ",".join(f"S{i}" for i in range(40)), {}, 404),
        ("GET", "/v1/prices?x=" + "q" * 3900, {}, 200),
        ("GET", "/crypto-price%FF%FE", {}, 404),
        ("GET", "/%C0%AF%C0%AF/..%2F..%2Fetc%2Fpasswd", {}, 404),
        ("GET", "/v1/prices/BTC/history?limit=-5", {}, 400),
        ("GET", "/v1/prices/BTC/history?limit=1e3", {}, 400),
        ("GET", "/v1/prices/BTC/history?limit=99999999999999999999", {}, 400),
        ("POST", "/crypto-price", {}, 405),
        ("DELETE", "/v1/prices", {}, 405),
        ("PUT", "/metrics", {}, 405),
        ("GET", "/crypto-price", {"If-None-Match": '"*", W/, ,,"' + "x" * 7000}, 200),
        ("GET", "/crypto-price", {"If-None-Match": '"\x7f\x01"'}, 400),  # gunicorn refuses
        ("GET", "/crypto-price", {"X-API-Key": "k" * 6000}, 401),
    ]
    for method, path, headers, status in cases:
        response = requests.request(method, url + path, headers=headers, timeout=10)
        if status == 200:
            assert response.status_code == 200, path
            continue
        assert_json_error(response, status)
    long_id = requests.get(f"{url}/crypto-price", headers={"X-Request-ID": "r" * 5000}, timeout=10)
    assert long_id.status_code == 200
    assert (
        long_id.headers["X-Request-ID"] != "r" * 5000 and len(long_id.headers["X-Request-ID"]) == 32
    )
    assert requests.get(f"{url}/readyz", timeout=5).status_code == 200
    assert service.metric("http_requests_total", status="500") == 0


def test_forged_forwarded_for_buys_no_quota_and_a_trusted_hop_is_used(
    start_service: ServiceFactory,
) -> None:
    untrusted = start_service(RATE_LIMIT="5/minute")
    statuses = Counter(
        requests.get(
            f"{untrusted.url}/crypto-price",
            timeout=5,
            headers={"X-Forwarded-For": f"203.0.113.{i}"},
        ).status_code
        for i in range(20)
    )
    assert statuses == {200: 5, 429: 15}

    trusted = start_service(RATE_LIMIT="2/minute", TRUSTED_PROXIES="1")

    def through_proxy(client_claim: str, proxy_saw: str) -> int:
        # A client may send any X-Forwarded-For; the one trusted proxy appends what it saw.
        header = f"{client_claim}, {proxy_saw}" if client_claim else proxy_saw
        return requests.get(
            f"{trusted.url}/crypto-price", timeout=5, headers={"X-Forwarded-For": header}
        ).status_code

    assert [through_proxy("", "198.51.100.1") for _ in range(3)] == [200, 200, 429]
    # The same real client forging its claim is still the same client.
    assert through_proxy("10.9.9.9", "198.51.100.1") == 429
    assert through_proxy("", "198.51.100.2") == 200


def test_api_keys_never_reach_logs_or_metrics(start_service: ServiceFactory) -> None:
    service = start_service(API_KEYS=f"{KEY}=5/minute", RATE_LIMIT="1/minute")
    for _ in range(7):
        requests.get(f"{service.url}/crypto-price", headers={"X-API-Key": KEY}, timeout=5)
    wrong = KEY[:-1] + "X"
    assert (
        requests.get(
            f"{service.url}/crypto-price", headers={"X-API-Key": wrong}, timeout=5
        ).status_code
        == 401
    )
    metrics = requests.get(f"{service.url}/metrics", timeout=5).text
    service.stop()
    for text in (metrics, service.logs()):
        assert KEY not in text and wrong not in text
        assert KEY[:12] not in text


def test_random_paths_do_not_grow_the_metric_series(start_service: ServiceFactory) -> None:
    service = start_service(RATE_LIMIT="1000000/minute")
    session = requests.Session()
    methods = ["GET", "HEAD", "POST", "BREW", "PURGE"]
    for method in methods:  # the bounded series an unmatched path may touch, created once
        session.request(method, f"{service.url}/warm-up", timeout=5)
    series_count(service)  # and the scrape's own series
    before = series_count(service)
    rng = random.Random(5)
    for _ in range(1000):
        path = "/" + "".join(
            rng.choices(string.ascii_letters + string.digits + "/-_.", k=rng.randint(1, 60))
        )
        method = rng.choice(methods)
        session.request(method, service.url + path, timeout=5)
    assert series_count(service) == before


def test_a_killed_worker_is_replaced_and_the_totals_keep_counting(
    start_service: ServiceFactory, redis_storage: RedisServer
) -> None:
    service = start_service(
        WORKERS="3", RATE_LIMIT_STORAGE_URI=redis_storage.uri, RATE_LIMIT="1000000/minute"
    )
    original = service.worker_pids()
    assert len(original) == 3
    outcomes: Counter[str] = Counter()
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            try:
                status = requests.get(f"{service.url}/crypto-price", timeout=10).status_code
                outcomes[str(status)] += 1
            except requests.RequestException:
                outcomes["failed"] += 1

    threads = [threading.Thread(target=poll) for _ in range(4)]
    for thread in threads:
        thread.start()
    wait_until(lambda: outcomes["200"] >= 50, 30, "50 answered polls before the kill")
    before_kill = service.metric("http_requests_total", route="/crypto-price", status="200")
    victim = sorted(original)[0]
    os.kill(victim, signal.SIGKILL)
    service.wait_workers_replaced({victim})
    after_replacement = outcomes["200"]
    wait_until(lambda: outcomes["200"] >= after_replacement + 50, 30, "50 polls answered after it")
    stop.set()
    for thread in threads:
        thread.join()
    counted = service.metric("http_requests_total", route="/crypto-price", status="200")
    assert outcomes["failed"] <= 4  # at most the requests in flight on the killed worker
    assert counted >= before_kill  # the dead worker's counts were kept
    # Every 200 the clients saw was counted; a kill between counting and sending can add
    # at most the in-flight few.
    assert outcomes["200"] <= counted <= outcomes["200"] + outcomes["failed"]
    # 3 live workers, the history recorder and the archive.
    assert len(list(service.metrics_dir.glob("counter_*.db"))) <= 5


# gevent's worker polls its open connections once a second before it exits, so it
# recycles far more slowly than gthread: fewer recycles are asked of it.
@pytest.mark.parametrize(("worker_class", "least_recycles"), [("gthread", 100), ("gevent", 5)])
def test_recycled_workers_keep_the_metrics_directory_flat_and_counters_monotonic(
    start_service: ServiceFactory,
    redis_storage: RedisServer,
    worker_class: str,
    least_recycles: int,
) -> None:
    service = start_service(
        WORKER_CLASS=worker_class,
        WORKERS="2",
        THREADS="4",
        MAX_REQUESTS="20",
        MAX_REQUESTS_JITTER="5",
        RATE_LIMIT_STORAGE_URI=redis_storage.uri,
        RATE_LIMIT="1000000/minute",
    )
    totals: list[float] = []
    file_counts: list[int] = []
    failed_scrapes: list[str] = []
    stop = threading.Event()

    def scrape() -> None:
        while not stop.is_set():
            try:
                response = requests.get(f"{service.url}/metrics", timeout=10)
            except requests.ConnectionError:
                continue  # the worker holding this connection was being recycled
            if response.status_code != 200:
                failed_scrapes.append(response.text[:200])
                continue
            totals.append(
                sum(
                    s.value
                    for f in text_string_to_metric_families(response.text)
                    for s in f.samples
                    if s.name == "http_requests_total" and s.labels.get("route") == "/crypto-price"
                )
            )
            file_counts.append(len(list(service.metrics_dir.glob("*.db"))))
            stop.wait(0.05)

    scraper = threading.Thread(target=scrape)
    scraper.start()

    def get() -> str:
        try:
            return str(requests.get(f"{service.url}/crypto-price", timeout=10).status_code)
        except requests.ConnectionError:
            # gthread drops the connections still queued in a worker that is recycling
            # (gunicorn closes them unanswered); a client retries, as crypto-poll does.
            return "reset"

    outcomes: Counter[str] = Counter()
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(10):
            outcomes.update(pool.map(lambda _: get(), range(300)))
    stop.set()
    scraper.join()
    assert set(outcomes) <= {"200", "reset"}, outcomes
    assert outcomes["reset"] <= 15, outcomes  # 0.5 % of 3,000, over 100+ recycles
    assert failed_scrapes == [], failed_scrapes[:3]
    booted = service.logs().count("Booting worker with pid")
    assert booted >= least_recycles, f"only {booted} workers: too few recycles"
    assert all(b >= a for a, b in itertools.pairwise(totals)), "a counter went down"
    # Every 200 was counted; a reset may hide a request that was answered, never one more.
    counted = service.metric("http_requests_total", route="/crypto-price")
    assert outcomes["200"] <= counted <= outcomes["200"] + outcomes["reset"]
    # At most 5 files per process (2 live workers, 1 replacement booting, the archive) and
    # the history recorder's 2, however many of the 100+ workers came and went: without the
    # archive, 5 per worker.
    assert max(file_counts) <= 22, max(file_counts)
    assert len(list(service.metrics_dir.glob("*.db"))) <= 17


def test_redis_outage_fails_open_counts_errors_and_limits_return(
    start_service: ServiceFactory, tmp_path: Path
) -> None:
    binary = require_binary("redis-server")
    port = free_port()

    def start_redis() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: redis_answers(port), 10, "redis-server")
        return process

    redis_process = start_redis()
    service = start_service(
        WORKERS="2", RATE_LIMIT_STORAGE_URI=f"redis://{HOST}:{port}", RATE_LIMIT="30/minute"
    )
    closed = start_service(
        WORKERS="2",
        RATE_LIMIT_STORAGE_URI=f"redis://{HOST}:{port}",
        RATE_LIMIT="30/minute",
        RATE_LIMIT_FAIL_OPEN="false",
        API_KEYS=f"{KEY}=1000/minute",
    )
    try:

        def get() -> requests.Response:
            return requests.get(f"{service.url}/crypto-price", timeout=10)

        assert [get().status_code for _ in range(10)] == [200] * 10
        redis_process.terminate()
        redis_process.wait(timeout=10)
        during = [get() for _ in range(60)]  # twice the limit: nothing is counted now
        assert {r.status_code for r in during} == {200}
        assert (
            len({r.json()["price"] for r in during if r.json()["tick"] == during[0].json()["tick"]})
            == 1
        )
        assert service.metric("ratelimit_storage_errors_total") >= 60
        keyed = {"X-API-Key": KEY}  # its own budget in the shared Redis
        refused = requests.get(f"{closed.url}/crypto-price", headers=keyed, timeout=10)
        assert_json_error(refused, 503)
        assert refused.headers["Retry-After"] == "1"
        redis_process = start_redis()  # empty: the windows start again
        after = Counter(get().status_code for _ in range(40))
        assert after == {200: 30, 429: 10}
        assert (
            requests.get(f"{closed.url}/crypto-price", headers=keyed, timeout=10).status_code == 200
        )
    finally:
        redis_process.terminate()
        redis_process.wait(timeout=10)


def test_a_corrupted_counter_in_redis_is_a_counted_storage_error_not_a_500(
    start_service: ServiceFactory, redis_storage: RedisServer
) -> None:
    import redis

    service = start_service(
        WORKERS="2", RATE_LIMIT_STORAGE_URI=redis_storage.uri, RATE_LIMIT="30/minute"
    )
    assert requests.get(f"{service.url}/crypto-price", timeout=10).status_code == 200
    store = redis.Redis(host=HOST, port=redis_storage.port)
    keys: list[bytes] = store.keys("*")  # type: ignore[assignment]
    (key,) = keys
    store.set(key, "not-a-number", ex=60)  # INCRBY now fails inside the counting script
    statuses = Counter(
        requests.get(f"{service.url}/crypto-price", timeout=10).status_code for _ in range(5)
    )
    assert statuses == {200: 5}  # failed open
    assert service.metric("ratelimit_storage_errors_total") == 5
    assert service.metric("http_requests_total", status="500") == 0


def test_sigterm_with_slow_requests_in_flight_drains_them_all_and_exits_zero(
    start_service: ServiceFactory,
) -> None:
    service = start_service(FAULT_LATENCY_MS="2000", THREADS="8")
    keepalive = requests.Session()
    assert keepalive.get(f"{service.url}/readyz", timeout=5).status_code == 200
    with ThreadPoolExecutor(max_workers=5) as pool:
        slow = [
            pool.submit(requests.get, f"{service.url}/crypto-price", timeout=15) for _ in range(5)
        ]
        service.wait_in_flight(5)
        service.process.send_signal(signal.SIGTERM)
        readiness = service.wait_draining(keepalive)
        statuses = [future.result().status_code for future in slow]
    assert readiness == 503
    assert statuses == [200] * 5
    assert service.process.wait(timeout=20) == 0


def test_the_client_survives_two_server_restarts_and_counts_them(
    start_service: ServiceFactory,
) -> None:
    import json

    port = str(free_port())
    services = [start_service(PORT=port, PRICE_TICK_SECONDS="1")]
    client = PollRun(
        "--url", services[0].url, "--count", "12", "--interval", "0.5", "--log-format", "json"
    )
    for restart in range(1, 3):
        client.wait_for_output(3 * restart)  # it is polling this server
        assert services[-1].stop() == 0
        client.wait_for_log('"retrying"', count=restart)  # it noticed the server is gone
        services.append(start_service(PORT=port, PRICE_TICK_SECONDS="1"))
    returncode, stdout, stderr = client.finish(timeout=120)
    assert returncode == 0, stderr  # every poll rode out the restarts
    assert "Traceback" not in stderr
    lines = [json.loads(line) for line in stderr.splitlines()]
    summary = next(line for line in lines if line["event"] == "summary")
    retries = [line for line in lines if line["event"] == "retrying"]
    assert summary["polls"] == 12 and summary["failures"] == 0
    assert summary["retries"] == len(retries) >= 2
    assert len(stdout.splitlines()) == summary["fresh"]
    # From the servers' side: every poll they answered, none wasted, no tick skipped while
    # they were up; the ticks that passed while they were down are the client's count.
    services[-1].stop()
    per_service = [server_side(service.served(), 1.0) for service in services]
    assert sum(seen["fresh"] for seen in per_service) == summary["fresh"] == 12
    assert all(seen["wasted"] == 0 and seen["skipped"] == 0 for seen in per_service), per_service
    assert summary["unchanged"] == 0
    across = server_side([r for service in services for r in service.served()], 1.0)
    assert summary["skipped_ticks"] == across["skipped"]
