"""crypto-poll as a user runs it, against the real service under gunicorn and against
servers that misbehave."""

from __future__ import annotations

import itertools
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import (
    HOST,
    PollRun,
    ServiceFactory,
    free_port,
    server_side,
    wait_until,
)
from tests.scripted_server import Answer, ScriptedServer, quote_body, silent_server

JSON = {"Content-Type": "application/json"}
POLL = str(Path(sys.executable).parent / "crypto-poll")
# Each transport's route, and the requests four prices cost on it: a poll each (a long-poll
# too: the server holds it until the tick turns), or one stream or WebSocket for them all.
TRANSPORTS = {
    "poll": ("/crypto-price", 4),
    "long-poll": ("/crypto-price", 4),
    "sse": ("/v1/prices/stream", 1),
    "websocket": ("/v1/prices/ws", 1),
}


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


SEED_APP = Path(__file__).parents[1] / "seed_app.py"
SEED_LINE = re.compile(
    r"Price: \$(?P<price>[0-9]+\.[0-9]{2}) \| Time: [0-9]+\.[0-9]{2} \| change: "
    r"(?P<change>n/a|(?P<delta>[+-][0-9]+\.[0-9]{2}) \([+-][0-9.]+%\))"
)


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def seed_requests(log: Path) -> int:
    return log.read_text().count('"GET /crypto-price HTTP/1.1" 200')


def test_against_the_seed_server_each_poll_is_a_seed_line_with_the_change(
    tmp_path: Path,
) -> None:
    port = free_port()
    log_path = tmp_path / "seed.log"
    log = log_path.open("w")
    seed = subprocess.Popen(
        [sys.executable, str(SEED_APP), str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://{HOST}:{port}"
    try:
        wait_until(lambda: answers(f"{url}/crypto-price"), 30, "the seed server")
        served_before = seed_requests(log_path)
        started = time.monotonic()
        result = poll("--url", url, "--count", "4", "--interval", "0.5", "--log-format", "json")
        elapsed = time.monotonic() - started
        wait_until(
            lambda: seed_requests(log_path) == served_before + 4,
            10,
            "the seed server to log four more requests",
        )
    finally:
        seed.terminate()
        seed.wait(timeout=10)
        log.close()
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 4, result.stdout
    parsed = [SEED_LINE.fullmatch(line) for line in lines]
    assert all(parsed), lines
    prices = [float(match["price"]) for match in parsed if match]
    assert parsed[0] and parsed[0]["change"] == "n/a"
    for before, after, match in zip(prices, prices[1:], parsed[1:], strict=False):
        assert match and float(match["delta"]) == round(after - before, 2)
    assert elapsed >= 1.5  # the fixed interval, three times
    stats = summary(result.stderr)
    assert (stats["polls"], stats["fresh"], stats["failures"], stats["skipped_ticks"]) == (
        4,
        4,
        0,
        0,
    )


def test_after_a_429_with_retry_after_no_poll_is_wasted_and_no_tick_skipped(
    start_service: ServiceFactory,
) -> None:
    service = start_service(PRICE_TICK_SECONDS="1", RATE_LIMIT="4 per 6 seconds")
    result = poll("--url", service.url, "--count", "8", "--interval", "0.5", "--log-format", "json")
    assert result.returncode == 0, result.stderr
    stats = summary(result.stderr)
    service.stop()  # the access log is complete
    seen = server_side(service.served(), 1.0)
    assert 1 <= seen["limited"] <= 2  # the path under test was taken; Retry-After honoured
    assert seen["wasted"] == 0 and seen["skipped_while_answering"] == 0, seen
    assert (stats["fresh"], stats["unchanged"], stats["retries"]) == (8, 0, seen["limited"])
    assert seen["fresh"] == 8
    assert stats["skipped_ticks"] == seen["skipped"]  # the ticks lost while refused, counted


def test_a_server_that_comes_up_late_is_waited_for_then_polled_every_tick(
    start_service: ServiceFactory,
) -> None:
    port = str(free_port())
    client = PollRun(
        "--url", f"http://{HOST}:{port}", "--count", "5", "--interval", "0.5",
        "--log-format", "json",
    )  # fmt: skip
    client.wait_for_log('"retrying"')  # it found nobody and is retrying
    time.sleep(2)
    service = start_service(PORT=port, PRICE_TICK_SECONDS="1")
    returncode, stdout, stderr = client.finish()
    assert returncode == 0, stderr
    assert stdout.startswith("Price: $")
    assert "connection failed" in stderr  # each retry is logged with its reason
    stats = summary(stderr)
    assert stats["polls"] == 5 and stats["retries"] >= 1 and stats["failures"] == 0
    service.stop()
    seen = server_side(service.served(), 1.0)
    assert seen == {
        "fresh": 5,
        "limited": 0,
        "wasted": 0,
        "skipped": 0,
        "skipped_while_answering": 0,
    }
    assert (stats["unchanged"], stats["skipped_ticks"]) == (0, 0)


def test_started_late_in_a_tick_every_price_after_the_first_is_polled_as_it_turns(
    start_service: ServiceFactory,
) -> None:
    # The default shape scaled by two (6 s ticks, a 4 s interval), so that the client's
    # own start-up time cannot move its first poll out of the tick's last third. The
    # interval alone would hold each next price back (2 s and more).
    service = start_service(PRICE_TICK_SECONDS="6")
    while not 3.9 <= time.time() % 6.0 < 4.0:
        time.sleep(0.01)
    result = poll("--url", service.url, "--count", "3", "--interval", "4", "--log-format", "json")
    assert result.returncode == 0, result.stderr
    service.stop()
    served = service.served()
    assert len(served) == 3 and {s.status for s in served} == {200}
    # From the server's side: when it got each poll, past its tick's start.
    into_tick = [round(s.started_at % 6.0, 2) for s in served]
    assert into_tick[0] >= 3.9, into_tick  # the first, late in its tick
    assert all(seconds < 0.5 for seconds in into_tick[1:]), into_tick
    assert summary(result.stderr)["skipped_ticks"] == 0


def test_a_client_polling_slower_than_the_ticks_counts_every_skipped_tick(
    start_service: ServiceFactory,
) -> None:
    service = start_service(PRICE_TICK_SECONDS="1")
    result = poll(
        "--url", service.url, "--count", "4", "--interval", "2.5", "--no-align",
        "--log-format", "json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    stats = summary(result.stderr)
    service.stop()
    seen = server_side(service.served(), 1.0)
    assert seen["fresh"] == 4 and seen["skipped"] >= 3  # at least one a poll
    assert stats["skipped_ticks"] == seen["skipped"]
    assert stats["price_changes"] == 3  # each poll after the first sees a new price


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
        "field 'price' is missing or not a finite number",
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


@pytest.mark.parametrize("transport", list(TRANSPORTS))
def test_sigint_while_waiting_for_the_next_price_stops_within_a_second(
    start_service: ServiceFactory, transport: str
) -> None:
    # Ticks far apart: the client is waiting (a sleep, a held long-poll, a quiet stream).
    service = start_service(PRICE_TICK_SECONDS="60")
    client = PollRun("--url", service.url, "--transport", transport, "--log-format", "json")
    client.wait_for_output(1)
    time.sleep(0.3)  # past the first answer, into the wait for the next
    sent = time.monotonic()
    client.send_signal(signal.SIGINT)
    returncode, _, stderr = client.finish(timeout=10)
    assert time.monotonic() - sent < 1.0
    assert returncode == 0 and "Traceback" not in stderr
    stats = summary(stderr)
    assert stats["polls"] >= 1 and stats["failures"] == 0  # (a tick may have turned meanwhile)


def test_sigterm_during_a_request_abandons_it_at_once() -> None:
    with silent_server() as server:
        client = PollRun("--url", server.url, "--timeout", "30", "--log-format", "json")
        wait_until(lambda: server.accepted >= 1, 30, "the client's first request")
        sent = time.monotonic()
        client.send_signal(signal.SIGTERM)
        returncode, _, stderr = client.finish(timeout=10)
        assert time.monotonic() - sent < 1.0
    assert returncode == 0
    stats = summary(stderr)
    # The request was sent (the server has it); the poll, abandoned, is not counted.
    assert (stats["requests"], stats["polls"]) == (server.accepted, 0) == (1, 0)


def test_client_metrics_count_what_the_server_answered() -> None:
    script = [
        Answer(503, {"error": "unavailable", "message": "m"}, JSON),
        Answer(200, quote_body(100.0, tick=1), JSON),
        Answer(200, quote_body(101.0, tick=4), JSON),  # ticks 2 and 3 never seen
    ]
    port = free_port()
    with ScriptedServer(script) as server:
        client = PollRun(
            "--url", server.url, "--interval", "0.1", "--no-align", "--metrics-port", str(port)
        )
        scraped: list[str] = []

        def scraped_fresh_polls(count: int) -> bool:
            try:
                text = requests.get(f"http://{HOST}:{port}/metrics", timeout=1).text
            except requests.RequestException:
                return False
            scraped.append(text)
            return f'crypto_poll_polls_total{{outcome="fresh"}} {count}.0' in text

        wait_until(lambda: scraped_fresh_polls(3), 30, "the client's metrics to show 3 polls")
        client.send_signal(signal.SIGINT)
        client.finish(timeout=10)
        served_503 = sum(1 for answered in server.answered if answered == 503)
    families = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(scraped[-1])
        for sample in family.samples
    }
    assert families[("crypto_poll_retries_total", (("reason", "http_503"),))] == served_503 == 1
    assert families[("crypto_poll_skipped_ticks_total", ())] == 2
    assert families[("crypto_poll_price", (("symbol", "BTC"),))] == 101.0


@pytest.mark.parametrize("transport", list(TRANSPORTS))
def test_every_transport_prints_the_same_lines_and_summary(
    start_service: ServiceFactory, transport: str
) -> None:
    service = start_service(PRICE_TICK_SECONDS="0.5")
    result = poll(
        "--url", service.url, "--transport", transport, "--count", "4", "--interval", "0.3",
        "--log-format", "json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 4 and lines[0].endswith("| BTC | change: n/a")
    assert all(" | BTC | change: " in line and "%)" in line for line in lines[1:])
    stats = summary(result.stderr)
    assert (stats["polls"], stats["fresh"], stats["unchanged"], stats["failures"]) == (4, 4, 0, 0)
    assert stats["skipped_ticks"] == 0 and stats["transport"] == transport
    # The requests it reports are those the service counted (a WebSocket's once it closed).
    route, expected = TRANSPORTS[transport]
    wait_until(
        lambda: service.metric("http_requests_total", route=route) == expected,
        10,
        f"the service to count {expected} request(s) to {route}",
    )
    assert stats["requests"] == expected


@pytest.mark.parametrize("transport", ["sse", "websocket"])
def test_a_stream_refused_with_429_waits_out_retry_after_then_opens(
    start_service: ServiceFactory, transport: str
) -> None:
    service = start_service(PRICE_TICK_SECONDS="0.5", RATE_LIMIT="2 per 6 seconds")
    for _ in range(2):  # the budget spent: the stream's first ask is refused
        assert requests.get(f"{service.url}/crypto-price", timeout=5).status_code == 200
    result = poll(
        "--url", service.url, "--transport", transport, "--count", "2", "--log-format", "json"
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    service.stop()  # the access log is complete
    route, _ = TRANSPORTS[transport]
    statuses = [served.status for served in service.served(route)]
    # One refusal, then the wait the server asked for: no second ask inside the window.
    assert statuses == [429, 200 if transport == "sse" else 101], statuses
    stats = summary(result.stderr)
    assert (stats["retries"], stats["requests"], stats["fresh"]) == (1, 2, 2)


@pytest.mark.parametrize("transport", ["long-poll", "sse"])
def test_across_a_server_restart_no_tick_is_lost(
    start_service: ServiceFactory, transport: str
) -> None:
    port = str(free_port())
    service = start_service(PORT=port, PRICE_TICK_SECONDS="0.5")
    client = PollRun(
        "--url", service.url, "--transport", transport, "--count", "14", "--output", "json",
        "--log-format", "json",
    )  # fmt: skip
    client.wait_for_output(4)
    assert service.stop() == 0
    client.wait_for_log('"retrying"')  # it noticed, and the ticks go on without it
    start_service(PORT=port, PRICE_TICK_SECONDS="0.5")
    returncode, stdout, stderr = client.finish(timeout=60)
    assert returncode == 0, stderr
    ticks = [json.loads(line)["tick"] for line in stdout.splitlines()]
    assert ticks == list(range(ticks[0], ticks[0] + 14)), ticks  # every one, in order
    stats = summary(stderr)
    assert stats["skipped_ticks"] == 0 and stats["retries"] >= 1


def test_a_websocket_client_counts_the_ticks_a_restart_cost_it(
    start_service: ServiceFactory,
) -> None:
    port = str(free_port())
    service = start_service(PORT=port, PRICE_TICK_SECONDS="0.5")
    client = PollRun(
        "--url", service.url, "--transport", "websocket", "--output", "json",
        "--log-format", "json",
    )  # fmt: skip
    client.wait_for_output(3)
    assert service.stop() == 0
    client.wait_for_log('"retrying"')
    before_restart = len(client.stdout)
    # A restart can fit between two ticks; make the outage outlast one: restart only once
    # the tick after the last one seen has passed too.
    last_seen = json.loads(client.stdout[-1])["tick"]
    wait_until(lambda: time.time() >= (last_seen + 2) * 0.5, 10, "a tick to pass unseen")
    start_service(PORT=port, PRICE_TICK_SECONDS="0.5")
    client.wait_for_output(before_restart + 3)  # three ticks from the new server
    client.send_signal(signal.SIGINT)
    returncode, stdout, stderr = client.finish(timeout=30)
    assert returncode == 0, stderr
    ticks = [json.loads(line)["tick"] for line in stdout.splitlines()]
    gaps = sum(b - a - 1 for a, b in itertools.pairwise(ticks))
    stats = summary(stderr)
    assert gaps >= 1, ticks  # the outage outlasted a tick: a WebSocket resumes at "now"
    assert stats["skipped_ticks"] == gaps and stats["reconnects"] >= 1
