"""The price history under gunicorn, as an operator runs it: the recorder beside the
workers stores what was served, and a restart with other settings leaves the history of
the ticks before it as it was (the same bytes), with the new ticks after it."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from service.config import Settings
from service.database import create_engine
from service.history_store import HistoryStore
from tests.databases import PostgresServer, postgres_server
from tests.integration.conftest import ServiceFactory, recorded_database, wait_until

TICK = 1.0


def polled_prices(url: str, seen: dict[int, float]) -> None:
    """Record what the service serves now: tick -> BTC price."""
    quote = requests.get(f"{url}/crypto-price?symbol=BTC", timeout=5).json()
    seen[quote["tick"]] = quote["price"]


def stored(url: str, first: float, last: float) -> dict[int, float]:
    body = requests.get(
        f"{url}/v1/prices/BTC/history?from={first}&to={last}&limit=1000", timeout=5
    ).json()
    return {point["tick"]: point["price"] for point in body["prices"]}


def test_a_restart_with_other_settings_keeps_the_history_that_was_served(
    start_service: ServiceFactory, tmp_path: Path
) -> None:
    # Ten minutes stored before the first start, so that some candles have closed.
    database = recorded_database(tmp_path, 600 / 86400, PRICE_TICK_SECONDS=str(TICK))
    before = start_service(
        DATABASE_URL=database, PRICE_TICK_SECONDS=str(TICK), RATE_LIMIT="1000/second"
    )
    served: dict[int, float] = {}
    start = math.floor(requests.get(f"{before.url}/crypto-price", timeout=5).json()["updated_at"])

    def five_ticks_stored() -> bool:
        polled_prices(before.url, served)
        return len(stored(before.url, start, start + 3600)) >= 5

    wait_until(five_ticks_stored, 20, "five ticks stored")
    end = start + 5 * TICK
    closed = start - start % 300  # candles that ended before the restart, and stay so
    queries = [
        f"/v1/prices/BTC/history?from={start - 300}&to={end}&limit=1000",
        f"/v1/prices/ETH/history?from={start - 300}&to={end}&limit=1000",
        f"/v1/prices/BTC/candles?interval=1m&from={closed - 300}&to={closed}",
        f"/v1/prices/SOL/candles?interval=5m&from={closed - 300}&to={closed}",
        f"/v1/stats?window=1h&to={closed}",
    ]
    answers = [requests.get(before.url + query, timeout=5).content for query in queries]
    sizes = [
        len(next(v for v in json.loads(a).values() if isinstance(v, list))) for a in answers[:4]
    ]
    assert sizes[0] == sizes[1] >= 300 and sizes[2] == 5 and sizes[3] == 1, sizes
    assert json.loads(answers[4])["symbols"]["XRP"]["ticks"] >= 300
    assert stored(before.url, start, end) == {t: p for t, p in served.items() if t < start + 5}
    assert before.stop() == 0

    after = start_service(
        DATABASE_URL=database,
        PRICE_TICK_SECONDS=str(TICK),
        RATE_LIMIT="1000/second",
        PRICE_SEED="another-seed",
        SYMBOLS="BTC:1000,ETH:75,SOL:20,XRP:10",
    )
    assert [requests.get(after.url + query, timeout=5).content for query in queries] == answers
    served_after: dict[int, float] = {}
    restarted = requests.get(f"{after.url}/crypto-price", timeout=5).json()["tick"]

    def three_new_ticks_stored() -> bool:
        polled_prices(after.url, served_after)
        return len([t for t in stored(after.url, restarted, restarted + 3600)]) >= 3

    wait_until(three_new_ticks_stored, 20, "three ticks stored after the restart")
    new = stored(after.url, restarted, restarted + 3600)
    assert all(new[tick] == price for tick, price in served_after.items() if tick in new)
    assert all(price > 200 for price in new.values())  # the new base price's, not the old
    everything = stored(after.url, start, restarted + 3600)
    assert {t: p for t, p in everything.items() if t < restarted} == stored(
        after.url, start, restarted
    )


def gone(pid: int) -> bool:
    """Exited: no such process, or a zombie that nobody reaps (an orphan here)."""
    try:
        return "\nState:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True


def test_the_recorder_stops_when_its_master_is_killed(start_service: ServiceFactory) -> None:
    service = start_service()
    recorder = service.recorder_pid()
    assert recorder is not None
    workers = service.worker_pids()
    os.kill(service.process.pid, signal.SIGKILL)
    service.process.wait(5)
    # A master killed outright cannot stop them: each notices by itself (the workers by
    # gunicorn's own check of their parent).
    wait_until(lambda: gone(recorder), 10, "the recorder to exit after its master")
    wait_until(lambda: all(map(gone, workers)), 10, "the workers to exit after their master")


RUN_SECONDS = float(os.environ.get("HISTORY_RUN_SECONDS", "60"))  # 300: the run


def migrated(url: str) -> str:
    """``crypto-service db upgrade`` of DATABASE_URL, as an operator (or init container)."""
    command = str(Path(sys.executable).parent / "crypto-service")
    env = {"PATH": os.environ.get("PATH", ""), "DATABASE_URL": url}
    subprocess.run([command, "db", "upgrade"], env=env, check=True, capture_output=True)
    return url


def stored_ticks(url: str, first_ms: int, end_ms: int) -> dict[str, list[int]]:
    """Each symbol's stored tick starts in [first_ms, end_ms), read from the database."""
    engine = create_engine(url)
    try:
        store = HistoryStore(engine)
        return {
            symbol: [t.start_ms for t in store.ticks(symbol, first_ms, end_ms, 10**6)]
            for symbol in Settings().symbols
        }
    finally:
        engine.dispose()


@pytest.mark.timeout(RUN_SECONDS + 240)  # the suite's bound is 300 s a test
def test_two_replicas_on_one_postgresql_store_each_tick_once_through_a_kill(
    start_service: ServiceFactory, postgres: PostgresServer
) -> None:
    env = {
        "DATABASE_URL": migrated(postgres.new_database()),
        "PRICE_TICK_SECONDS": "1",
        "RATE_LIMIT": "100000/minute",
    }
    killed, steady = start_service(**env), start_service(**env)
    started = time.time()
    time.sleep(RUN_SECONDS / 3)
    doomed = {killed.process.pid, *killed.children()}
    killed.process.kill()  # SIGKILL: no goodbye, a write maybe half done
    killed.process.wait(5)
    wait_until(lambda: all(map(gone, doomed)), 10, "the killed replica's processes to exit")
    time.sleep(5)
    restarted = start_service(**env)
    time.sleep(max(0.0, started + RUN_SECONDS - time.time()))
    ended = time.time()
    first_ms, end_ms = math.ceil(started) * 1000, math.floor(ended) * 1000

    def all_written() -> bool:
        return all(
            len(starts) == (end_ms - first_ms) // 1000
            for starts in stored_ticks(env["DATABASE_URL"], first_ms, end_ms).values()
        )

    wait_until(all_written, 15, "every tick of the run stored")
    for symbol, starts in stored_ticks(env["DATABASE_URL"], first_ms, end_ms).items():
        assert starts == list(range(first_ms, end_ms, 1000)), symbol  # once each, no gap
    # Both replicas answer the same bytes: the ticks, and the minutes' candles that closed.
    minute = math.floor(ended / 60) * 60
    for query in (
        f"/v1/prices/BTC/history?from={first_ms / 1000}&to={end_ms / 1000}&limit=1000",
        f"/v1/prices/ETH/history?from={first_ms / 1000}&to={end_ms / 1000}&limit=1000",
        f"/v1/prices/SOL/candles?interval=1m&from={minute - 600}&to={minute}",
        f"/v1/prices/BTC/candles?interval=1h&from={minute - 7200}&to={minute + 60}",
        f"/v1/stats?window=1h&to={minute}",
    ):
        one, other = (requests.get(s.url + query, timeout=5) for s in (restarted, steady))
        assert one.status_code == other.status_code == 200, query
        assert one.content == other.content, query
    # And the candles say what the stored ticks say.
    engine = create_engine(env["DATABASE_URL"])
    try:
        store = HistoryStore(engine)
        for symbol in ("BTC", "XRP"):
            ticks = store.ticks(symbol, first_ms - first_ms % 60_000, end_ms, 10**6)
            closed = end_ms - end_ms % 60_000  # the minutes that ended before the run did
            for candle in store.candles(symbol, 60, first_ms - first_ms % 60_000, closed):
                inside = [
                    t for t in ticks if candle.start_ms <= t.start_ms < candle.start_ms + 60_000
                ]
                prices = [t.price for t in inside]
                assert (candle.open, candle.close, candle.high, candle.low, candle.ticks) == (
                    prices[0],
                    prices[-1],
                    max(prices),
                    min(prices),
                    len(prices),
                ), (symbol, candle.start_ms)
    finally:
        engine.dispose()


OUTAGE_SECONDS = 30.0


class PriceLoad:
    """Pollers timing every price request, and an event stream noting each tick pushed."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stop = threading.Event()
        self.answers: list[tuple[float, int, float]] = []  # (sent at, status, seconds)
        self.pushed: list[int] = []
        self.threads = [
            threading.Thread(target=self.poll, args=("/v1/prices",)),
            threading.Thread(target=self.poll, args=("/crypto-price?symbol=ETH",)),
            threading.Thread(target=self.stream),
        ]

    def __enter__(self) -> PriceLoad:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)

    def poll(self, path: str) -> None:
        with requests.Session() as session:
            while not self.stop.is_set():
                sent = time.monotonic()
                status = session.get(self.url + path, timeout=10).status_code
                self.answers.append((time.time(), status, time.monotonic() - sent))
                self.stop.wait(0.1)

    def stream(self) -> None:
        with requests.get(f"{self.url}/v1/prices/stream", stream=True, timeout=10) as response:
            for line in response.iter_lines():
                if line.startswith(b"id: "):
                    self.pushed.append(int(line[4:]))
                if self.stop.is_set():
                    return

    def latencies(self, start: float, end: float) -> list[float]:
        return sorted(seconds for sent, _, seconds in self.answers if start <= sent < end)


def quantile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def test_postgresql_stopped_for_30_s_costs_the_price_requests_nothing_and_history_no_tick(
    start_service: ServiceFactory, tmp_path_factory: pytest.TempPathFactory
) -> None:
    servers = postgres_server(tmp_path_factory.mktemp("postgres"))  # its own: it is stopped
    server = next(servers)
    try:
        url = migrated(server.new_database())
        service = start_service(
            DATABASE_URL=url, PRICE_TICK_SECONDS="1", RATE_LIMIT="1000000/minute"
        )
        with PriceLoad(service.url) as load:
            time.sleep(15)
            down = time.time()
            server.stop()
            time.sleep(1)
            during_outage = requests.get(f"{service.url}/v1/prices/BTC/history", timeout=10)
            time.sleep(max(0.0, down + OUTAGE_SECONDS - time.time()))
            server.start()
            up = time.time()
            time.sleep(5)
        assert {status for _, status, _ in load.answers} == {200}  # every price request
        before, outage = load.latencies(up - 60, down), load.latencies(down, up)
        assert len(before) > 100 and len(outage) > 200
        # Unchanged: nothing a price request does waits for the database (a request that
        # did would take its connect timeout, seconds).
        assert quantile(outage, 0.5) <= 1.5 * quantile(before, 0.5) + 0.005, (before, outage)
        assert quantile(outage, 0.99) <= 2 * quantile(before, 0.99) + 0.05, (before, outage)
        assert load.pushed == list(range(load.pushed[0], load.pushed[-1] + 1))  # every tick
        assert during_outage.status_code == 503
        assert during_outage.json()["error"] == "history_unavailable"
        first_ms, end_ms = math.ceil(down - 10) * 1000, math.floor(up + 2) * 1000

        def caught_up() -> bool:
            return all(
                len(starts) == (end_ms - first_ms) // 1000
                for starts in stored_ticks(url, first_ms, end_ms).values()
            )

        wait_until(caught_up, 15, "the ticks missed during the outage written")
        for symbol, starts in stored_ticks(url, first_ms, end_ms).items():
            assert starts == list(range(first_ms, end_ms, 1000)), symbol  # no gap
        assert service.metric("crypto_history_write_errors_total") >= 3  # and counted
        logged = [line for line in service.logs().splitlines() if "history write failed" in line]
        assert 1 <= len(logged) <= 2  # at most one line in 30 s
    finally:
        servers.close()
