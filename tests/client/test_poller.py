"""The polling loop against a scripted loopback server: counts, 304s, failures, going on."""

from __future__ import annotations

from client.api import PollError, PriceClient, Quote
from client.poller import Listener, Poller, PollerOptions
from client.retry import RetryPolicy
from tests.scripted_server import Answer, ScriptedServer, quote_body

JSON = {"Content-Type": "application/json"}


class Recorder(Listener):
    def __init__(self) -> None:
        self.outcomes: list[str] = []
        self.quotes: list[tuple[float, float | None]] = []
        self.failures: list[str] = []

    def on_poll(self, outcome: str) -> None:
        self.outcomes.append(outcome)

    def on_quote(self, quote: Quote, previous: Quote | None) -> None:
        self.quotes.append((quote.price, previous.price if previous else None))

    def on_failure(self, poll: int, error: PollError, attempts: int) -> None:
        self.failures.append(f"{poll}:{attempts}:{error.reason}")


def test_poll_loop_counts_every_kind_of_outcome_and_never_stops_on_failure() -> None:
    script = [
        Answer(200, quote_body(100.0, tick=1), {**JSON, "ETag": '"a"'}),
        Answer(304, b"", {"ETag": '"a"'}),
        Answer(200, "garbage", {"Content-Type": "text/plain"}),
        Answer(503),
        Answer(200, quote_body(101.0, tick=2), {**JSON, "ETag": '"b"'}),
        Answer(404, {"error": "unknown_symbol", "message": "m"}, JSON),
        Answer(200, quote_body(99.0, tick=3), JSON),
    ]
    recorder = Recorder()
    options = PollerOptions(
        interval=0.05, count=6, align=False, policy=RetryPolicy(base=0.01, cap=0.02)
    )
    with ScriptedServer(script) as server:
        stats = Poller(PriceClient(server.url), options, recorder).run()
    assert recorder.outcomes == ["fresh", "not_modified", "failed", "fresh", "failed", "fresh"]
    assert recorder.quotes == [(100.0, None), (101.0, 100.0), (99.0, 101.0)]
    assert recorder.failures == [
        "3:1:not JSON (text/plain, 7 bytes)",
        "5:1:HTTP 404 unknown_symbol",
    ]
    summary = stats.summary()
    assert {
        k: summary[k]
        for k in (
            "polls",
            "fresh",
            "unchanged",
            "failures",
            "bad_payloads",
            "requests",
            "retries",
            "price_changes",
        )
    } == {
        "polls": 6,
        "fresh": 3,
        "unchanged": 1,
        "failures": 2,
        "bad_payloads": 1,
        "requests": 7,
        "retries": 1,
        "price_changes": 2,
    }
    assert summary["latency_p50_ms"] is not None


class TickRecorder(Listener):
    def __init__(self) -> None:
        self.skips: list[int] = []

    def on_skipped_ticks(self, ticks: int) -> None:
        self.skips.append(ticks)


def test_skipped_ticks_are_counted_once_per_poll_across_symbols() -> None:
    def batch(tick: int) -> dict[str, object]:
        quote = {k: v for k, v in quote_body(100.0 + tick, tick=tick).items() if k != "timestamp"}
        return {"prices": [quote, {**quote, "symbol": "ETH"}], "timestamp": 1.0}

    script = [Answer(200, batch(tick), JSON) for tick in (1, 2, 5, 6, 9)]
    recorder = TickRecorder()
    options = PollerOptions(interval=0.01, count=5, align=False)
    with ScriptedServer(script) as server:
        stats = Poller(PriceClient(server.url, ["BTC", "ETH"]), options, recorder).run()
    assert recorder.skips == [2, 2]  # 3-4 and 7-8, not once per symbol
    assert stats.skipped_ticks == 4 and stats.price_changes == 8


def test_without_tick_hints_a_changed_price_is_a_change_and_nothing_is_skipped() -> None:
    prices = [101.23, 101.23, 99.5, 100.0]
    script = [Answer(200, {"price": p, "timestamp": 1.0 + i}, JSON) for i, p in enumerate(prices)]
    options = PollerOptions(interval=0.01, count=4)  # aligned, but there is nothing to align on
    with ScriptedServer(script) as server:
        stats = Poller(PriceClient(server.url), options).run()
    assert (stats.fresh, stats.price_changes, stats.skipped_ticks) == (4, 2, 0)
