"""crypto-poll as a user runs it, against the real service under gunicorn and against
servers that misbehave."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.integration.conftest import HOST, PollRun, ServiceFactory, free_port, wait_until
from tests.scripted_server import Answer, ScriptedServer, quote_body, silent_server

POLL = str(Path(sys.executable).parent / "crypto-poll")


def poll(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([POLL, *args], capture_output=True, text=True, timeout=timeout)


def summary(stderr: str) -> dict[str, Any]:
    """The summary line, from --log-format json output."""
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    found = [line for line in lines if line["event"] == "summary"]
    assert len(found) == 1, stderr
    line: dict[str, Any] = found[0]
    return line


def test_text_output_keeps_the_seed_line_and_adds_symbol_and_change(
    start_service: ServiceFactory,
) -> None:
    service = start_service(PRICE_TICK_SECONDS="0.5")
    result = poll("--url", service.url, "--count", "4", "--interval", "0.3", "--log-format", "json")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 4
    assert (
        lines[0].startswith("Price: $")
        and " | Time: " in lines[0]
        and lines[0].endswith("| BTC | change: n/a")
    )
    assert all(" | change: " in line and "%)" in line for line in lines[1:])
    stats = summary(result.stderr)
    assert (stats["polls"], stats["fresh"], stats["failures"]) == (4, 4, 0)
    assert stats["price_changes"] == 3  # aligned: each poll after the first sees a new tick


def test_json_output_has_every_field_for_several_symbols(start_service: ServiceFactory) -> None:
    service = start_service(PRICE_TICK_SECONDS="0.5")
    result = poll(
        "--url",
        service.url,
        "--count",
        "2",
        "--interval",
        "0.3",
        "--symbol",
        "btc",
        "--symbol",
        "SOL",
        "--output",
        "json",
    )
    assert result.returncode == 0, result.stderr
    quotes = [json.loads(line) for line in result.stdout.splitlines()]
    assert [q["symbol"] for q in quotes] == ["BTC", "SOL", "BTC", "SOL"]
    assert all(
        set(q) == {"price", "symbol", "tick", "updated_at", "next_update_at", "timestamp"}
        for q in quotes
    )


def test_a_server_that_comes_up_three_seconds_late_is_waited_for(
    start_service: ServiceFactory,
) -> None:
    port = str(free_port())
    client = PollRun("--url", f"http://{HOST}:{port}", "--count", "1", "--log-format", "json")
    client.wait_for_log('"retrying"')  # it found nobody and is retrying
    time.sleep(3)
    start_service(PORT=port)
    returncode, stdout, stderr = client.finish()
    assert returncode == 0, stderr
    assert stdout.startswith("Price: $")
    stats = summary(stderr)
    assert stats["polls"] == 1 and stats["retries"] >= 1 and stats["failures"] == 0
    assert "connection failed" in stderr  # each retry is logged with its reason


def test_429_retry_after_is_honoured_rather_than_hammering(start_service: ServiceFactory) -> None:
    service = start_service(RATE_LIMIT="2 per 4 seconds")
    started = time.monotonic()
    result = poll(
        "--url",
        service.url,
        "--count",
        "4",
        "--interval",
        "0.1",
        "--no-align",
        "--log-format",
        "json",
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    stats = summary(result.stderr)
    assert stats["polls"] == 4 and stats["failures"] == 0
    limited = service.metric("http_requests_rate_limited_total", route="/crypto-price")
    assert limited == stats["retries"] and 1 <= limited <= 2  # one 429 per exhausted window
    assert elapsed >= 2.0  # it waited for the window to reset


def test_a_server_that_never_answers_neither_hangs_nor_retries_forever() -> None:
    with silent_server() as server:
        started = time.monotonic()
        result = poll(
            "--url",
            server.url,
            "--count",
            "1",
            "--timeout",
            "0.5",
            "--max-attempts",
            "3",
            "--log-format",
            "json",
            timeout=30,
        )
        elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert "timed out after 0.5 s" in result.stderr
    assert "Traceback" not in result.stderr
    stats = summary(result.stderr)
    assert (stats["polls"], stats["failures"], stats["requests"]) == (1, 1, 3)
    assert elapsed < 10


def test_malformed_payloads_are_one_error_line_each_and_polling_goes_on() -> None:
    script = [
        Answer(200, "<html>busy</html>", {"Content-Type": "text/html"}),
        Answer(200, {"price": "free", "timestamp": 1.0}, {"Content-Type": "application/json"}),
        Answer(200, quote_body(123.45), {"Content-Type": "application/json"}),
    ]
    with ScriptedServer(script) as server:
        result = poll(
            "--url", server.url, "--count", "3", "--interval", "0.1", "--log-format", "json"
        )
    assert result.returncode == 1  # two of the three polls failed
    errors = [json.loads(line) for line in result.stderr.splitlines() if '"poll failed"' in line]
    assert [e["reason"] for e in errors] == [
        "not JSON (text/html, 17 bytes)",
        "field 'price' is missing or not a float",
    ]
    assert "Traceback" not in result.stderr
    assert result.stdout.startswith("Price: $123.45")
    stats = summary(result.stderr)
    assert (stats["polls"], stats["failures"], stats["bad_payloads"], stats["fresh"]) == (
        3,
        2,
        2,
        1,
    )


def test_sigint_during_a_backoff_sleep_stops_within_a_second_with_a_summary() -> None:
    closed = f"http://{HOST}:{free_port()}"
    client = PollRun(
        "--url", closed, "--max-attempts", "100", "--max-wait", "300", "--log-format", "json"
    )
    client.wait_for_log('"retrying"', count=2)  # it is now sleeping before the third attempt
    sent = time.monotonic()
    client.send_signal(signal.SIGINT)
    returncode, _, stderr = client.finish(timeout=10)
    assert time.monotonic() - sent < 1.0
    assert returncode == 0
    stats = summary(stderr)
    assert stats["retries"] >= 2 and stats["polls"] == 0  # the interrupted poll is not counted
    assert "Traceback" not in stderr


def test_sigterm_during_a_request_abandons_it_at_once() -> None:
    with silent_server() as server:
        client = PollRun("--url", server.url, "--timeout", "30", "--log-format", "json")
        wait_until(lambda: server.accepted >= 1, 30, "the client's first request")
        sent = time.monotonic()
        client.send_signal(signal.SIGTERM)
        returncode, _, stderr = client.finish(timeout=10)
        assert time.monotonic() - sent < 1.0
    assert returncode == 0
    assert summary(stderr)["requests"] == 0


def test_client_metrics_are_served_when_asked(start_service: ServiceFactory) -> None:
    import requests

    service = start_service(PRICE_TICK_SECONDS="0.5")
    port = free_port()
    client = PollRun("--url", service.url, "--interval", "0.3", "--metrics-port", str(port))
    scraped: list[str] = []

    def two_fresh_polls_scraped() -> bool:
        try:
            text = requests.get(f"http://{HOST}:{port}/metrics", timeout=1).text
        except requests.RequestException:
            return False
        scraped.append(text)
        return 'crypto_poll_polls_total{outcome="fresh"} 2.0' in text

    wait_until(two_fresh_polls_scraped, 30, "the client's metrics to show two fresh polls")
    client.send_signal(signal.SIGINT)
    client.finish(timeout=10)
    assert "crypto_poll_retries_total" in scraped[-1] or "crypto_poll_retries" in scraped[-1]
    assert 'crypto_poll_price{symbol="BTC"}' in scraped[-1]
