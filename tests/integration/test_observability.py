"""The dashboard's queries answer from a real Prometheus scraping the real service under a
polling load of 200s, 304s and 429s, and the request-rate panel agrees with that load."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
import simple_websocket

from grafana import dashboard
from tests.grafana.test_dashboard import all_panels, committed
from tests.integration.conftest import (
    HOST,
    Prometheus,
    RedisServer,
    ServiceFactory,
    free_port,
    wait_until,
)

KEY = "observability-key-0123456789"
# crypto-poll's own key: tighter than one poll a tick, so it meets 429s it can wait out
# (Retry-After of at most 5 s, within its --max-wait): its retries panel has data.
POLL_KEY = "observability-poll-key-0123"
RATE_WINDOW = "15s"  # what Grafana's $__rate_interval becomes at a 1 s scrape interval
VARIABLES = {
    "$__rate_interval": RATE_WINDOW,
    "$namespace": ".*",
    "$job": "crypto-service",
    "$instance": ".*",
    "$symbol": ".*",
}
RULES = sorted((Path(__file__).parents[2] / "deploy" / "prometheus" / "rules").glob("*.yml"))


def substitute(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


FALLBACK = " or vector(0)"


class Load:
    """Pollers that produce 200s and 304s (API key, ETags) and 429s (anonymous, too fast);
    every completed request's time is kept to compare with what Prometheus saw."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stop = threading.Event()
        self.completed: list[float] = []
        self.statuses: dict[int, int] = {}
        self._lock = threading.Lock()

    def _record(self, status: int) -> None:
        with self._lock:
            self.completed.append(time.time())
            self.statuses[status] = self.statuses.get(status, 0) + 1

    def keyed_poller(self, symbols: str | None) -> None:
        session = requests.Session()
        session.headers["X-API-Key"] = KEY
        etag = None
        path = f"/v1/prices?symbols={symbols}" if symbols else "/crypto-price"
        while not self.stop.is_set():
            headers: dict[str, str] = {"If-None-Match": etag} if etag else {}
            response = session.get(self.url + path, headers=headers, timeout=5)
            etag = response.headers.get("ETag", etag)
            self._record(response.status_code)
            self.stop.wait(0.04)

    def anonymous_hammer(self) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            self._record(session.get(f"{self.url}/crypto-price", timeout=5).status_code)
            self.stop.wait(0.05)

    def long_poller(self, symbol: str) -> None:
        session = requests.Session()
        session.headers["X-API-Key"] = KEY
        etag = None
        while not self.stop.is_set():
            headers: dict[str, str] = {"If-None-Match": etag, "Prefer": "wait=5"} if etag else {}
            response = session.get(
                f"{self.url}/v1/prices?symbols={symbol}", headers=headers, timeout=15
            )
            etag = response.headers.get("ETag", etag)
            self._record(response.status_code)

    def stream_reader(self) -> None:
        with requests.get(
            f"{self.url}/v1/prices/stream",
            headers={"X-API-Key": KEY},
            stream=True,
            timeout=(5, 30),
        ) as response:
            for _ in response.iter_content(chunk_size=None):
                if self.stop.is_set():
                    return

    def websocket_reader(self) -> None:
        address = self.url.replace("http://", "ws://")
        ws = simple_websocket.Client.connect(f"{address}/v1/prices/ws", headers={"X-API-Key": KEY})
        while not self.stop.is_set():
            ws.receive(timeout=1)
        ws.close()

    def rate_between(self, start: float, end: float) -> float:
        with self._lock:
            return sum(1 for t in self.completed if start < t <= end) / (end - start)


def test_every_dashboard_query_answers_from_a_real_prometheus(
    start_service: ServiceFactory,
    redis_storage: RedisServer,
    start_prometheus: Callable[..., Prometheus],
) -> None:
    service = start_service(
        WORKERS="2",
        THREADS="8",
        RATE_LIMIT_STORAGE_URI=redis_storage.uri,
        RATE_LIMIT="120/minute",
        API_KEYS=f"{KEY}=100000/minute,{POLL_KEY}=3 per 5 seconds",
        # Not a whole second: Prometheus scrapes at a fixed phase of each second, and with a
        # 1 s tick every scrape could land in the few milliseconds after the tick turns, when
        # the long-polls have been answered and not yet asked again.
        PRICE_TICK_SECONDS="0.7",
        FAULT_ERROR_RATE="0.02",  # some 5xx, so the error panels have something to show
    )
    client_metrics = free_port()
    poll = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "crypto-poll"),
            "--url",
            service.url,
            "--interval",
            "0.5",
            "--metrics-port",
            str(client_metrics),
            "--api-key",
            POLL_KEY,
            "--quiet",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    prometheus = start_prometheus(
        {"crypto-service": [f"{HOST}:{service.port}"], "crypto-poll": [f"{HOST}:{client_metrics}"]},
        RULES,
    )
    load = Load(service.url)
    workers = [
        threading.Thread(target=load.keyed_poller, args=(None,)),
        threading.Thread(target=load.keyed_poller, args=(None,)),
        threading.Thread(target=load.keyed_poller, args=("BTC,ETH",)),
        threading.Thread(target=load.anonymous_hammer),
        *(threading.Thread(target=load.long_poller, args=(s,)) for s in ("SOL", "XRP", "ETH")),
        threading.Thread(target=load.stream_reader),
        threading.Thread(target=load.websocket_reader),
    ]
    try:
        for worker in workers:
            worker.start()
        wait_until(
            lambda: bool(prometheus.query('up{job="crypto-poll"} == 1', time.time())),
            30,
            "prometheus to scrape the client",
        )
        time.sleep(22)  # the load itself: a full rate window of it, and then some
        at = time.time() - 1

        def scraped_after_at() -> bool:
            # Both targets' newest scrape is past ``at``: the rate at ``at`` is complete.
            newest = prometheus.query("timestamp(up)", time.time())
            return len(newest) == 2 and all(float(s["value"][1]) > at for s in newest)

        wait_until(scraped_after_at, 15, "a scrape of both targets after the chosen instant")
    finally:
        load.stop.set()
        for worker in workers:
            worker.join()
        poll.send_signal(signal.SIGINT)
        poll.wait(timeout=10)

    assert {200, 304, 429} <= set(load.statuses), load.statuses
    answered: dict[str, list[dict[str, Any]]] = {}
    expressions: dict[str, str] = {}
    for row, panel in all_panels(committed()):
        if row == dashboard.KUBERNETES_ROW:
            continue
        for target in panel["targets"]:
            expr = substitute(target["expr"])
            assert "$" not in expr, expr
            result = prometheus.query(expr, at)
            values = [float(series["value"][1]) for series in result]
            assert any(math.isfinite(v) for v in values), f"{panel['title']}: no data for {expr}"
            answered[f"{panel['title']}/{target['refId']}"] = result
            expressions[f"{panel['title']}/{target['refId']}"] = expr
            if expr.endswith(FALLBACK):
                # The fallback always has data: the expression before it must have its own.
                own = prometheus.query(expr.removesuffix(FALLBACK), at)
                assert own, f"{panel['title']}: only the fallback answers {expr}"

    # The request-rate panel, summed over the routes the load used, against the load itself.
    request_rate = answered["Requests per second by route and status/A"]
    seen = sum(
        float(series["value"][1])
        for series in request_rate
        if series["metric"]["route"] in ("/crypto-price", "/v1/prices")
    )
    window = float(RATE_WINDOW.rstrip("s"))
    generated = load.rate_between(at - window, at)
    assert generated > 20
    assert abs(seen - generated) / generated < 0.15, (seen, generated)

    statuses = {series["metric"]["status"] for series in request_rate}
    assert {"200", "304", "429"} <= statuses
    limited = answered["Share of price requests refused with 429, by client class/A"]
    by_class = {s["metric"]["client_class"]: float(s["value"][1]) for s in limited}
    # Most anonymous requests (the hammer) are refused; of the keyed ones, only crypto-poll's.
    assert by_class["anonymous"] > by_class["api_key"] > 0
    share_304 = float(answered["Share of polls answered 304 Not Modified/A"][0]["value"][1])
    assert 0.3 < share_304 < 1
    # The load makes these non-zero; a broken query answering only its fallback would not.
    for title in (
        "5xx ratio/A",
        "Client retries per second/A",
        "Events pushed per second by transport/A",
    ):
        assert sum(float(s["value"][1]) for s in answered[title]) > 0, title
    # A gauge of an instant: seen waiting somewhere in the window the panel draws, since at
    # any one scrape all three long-polls may be between their answer and their next ask.
    waiting = prometheus.query_range(expressions["Long-polls waiting/A"], at - window, at)
    assert max(float(v) for s in waiting for _, v in s["values"]) > 0, waiting
    open_streams = {
        s["metric"]["transport"]: float(s["value"][1])
        for s in answered["Open streams by transport/A"]
    }
    assert open_streams == {"sse": 1.0, "websocket": 1.0}
    per_change = {
        s["metric"]["symbol"]: float(s["value"][1])
        for s in answered["Polls per price change, by symbol/A"]
    }
    assert per_change["BTC"] > per_change["SOL"] >= 0
    # The recording rules evaluate against the same data (their group runs every 30 s).
    wait_until(
        lambda: bool(prometheus.query("job_route_status:http_requests:rate5m", time.time())),
        45,
        "the recording rules to evaluate",
    )
