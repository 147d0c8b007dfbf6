"""The polling loop: one poll per scheduled time, each with its retries; it never crashes,
and it keeps the counts the summary reports."""

from __future__ import annotations

import random
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from client.api import BadPayload, Fetched, PollError, PriceClient, Quote, RetryableError
from client.retry import Interrupted, RetryEvent, RetryPolicy, fetch_with_retries
from client.schedule import TickGrid, next_poll_at


@dataclass
class Stats:
    polls: int = 0
    fresh: int = 0
    unchanged: int = 0
    failures: int = 0
    bad_payloads: int = 0  # counted in failures too
    requests: int = 0
    retries: int = 0
    price_changes: int = 0  # new ticks seen after the first quote of each symbol
    latencies: list[float] = field(default_factory=list)  # of successful requests, seconds
    change_delays: list[float] = field(default_factory=list)  # tick start -> seen, seconds

    def latency_quantiles(self) -> tuple[float, float] | None:
        if not self.latencies:
            return None
        if len(self.latencies) == 1:
            return self.latencies[0], self.latencies[0]
        cuts = statistics.quantiles(self.latencies, n=100, method="inclusive")
        return cuts[49], cuts[94]

    def summary(self) -> dict[str, object]:
        quantiles = self.latency_quantiles()
        delays = self.change_delays
        return {
            "polls": self.polls,
            "fresh": self.fresh,
            "unchanged": self.unchanged,
            "failures": self.failures,
            "bad_payloads": self.bad_payloads,
            "requests": self.requests,
            "retries": self.retries,
            "price_changes": self.price_changes,
            "latency_p50_ms": round(quantiles[0] * 1000, 2) if quantiles else None,
            "latency_p95_ms": round(quantiles[1] * 1000, 2) if quantiles else None,
            "mean_change_delay_s": round(statistics.fmean(delays), 3) if delays else None,
        }


@dataclass(frozen=True)
class PollerOptions:
    interval: float = 2.0
    count: int = 0  # 0: forever
    align: bool = True
    spread: float = 0.25
    policy: RetryPolicy = field(default_factory=RetryPolicy)


class Listener:
    """What the loop reports; the CLI prints and counts, tests record."""

    def on_poll(self, outcome: str) -> None: ...  # fresh, not_modified or failed
    def on_quote(self, quote: Quote, previous: Quote | None) -> None: ...
    def on_retry(self, event: RetryEvent) -> None: ...
    def on_failure(self, poll: int, error: PollError, attempts: int) -> None: ...
    def on_request(self, seconds: float) -> None: ...
    def on_change_delay(self, seconds: float) -> None: ...


class Poller:
    def __init__(
        self,
        client: PriceClient,
        options: PollerOptions,
        listener: Listener | None = None,
        stop: threading.Event | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.options = options
        self.listener = listener or Listener()
        self.stop = stop or threading.Event()
        self.stats = Stats()
        self._rng = rng or random.Random()
        self._clock = clock
        self._last: dict[str, Quote] = {}
        self._grid: TickGrid | None = None
        self._not_before = 0.0
        self._failures_in_a_row = 0

    def run(self) -> Stats:
        options = self.options
        while not self.stop.is_set():
            started = self._clock()
            if not self._poll_once():
                break  # interrupted by stop: this poll is not counted
            if options.count and self.stats.polls >= options.count:
                break
            at = next_poll_at(
                last_start=started,
                interval=options.interval,
                consecutive_failures=self._failures_in_a_row,
                not_before=self._not_before,
                grid=self._grid,
                align=options.align,
                spread=options.spread,
                rng=self._rng,
            )
            if self.stop.wait(max(0.0, at - self._clock())):
                break
        return self.stats

    def _poll_once(self) -> bool:
        stats = self.stats
        retries_before = stats.retries
        try:
            fetched, _ = fetch_with_retries(
                self.client, self.options.policy, self.stop, self._on_retry, self._rng
            )
        except Interrupted:
            return False
        except PollError as error:
            stats.polls += 1
            stats.requests += stats.retries - retries_before + 1
            stats.failures += 1
            if isinstance(error, BadPayload):
                stats.bad_payloads += 1
            if isinstance(error, RetryableError) and error.retry_after:
                self._not_before = self._clock() + error.retry_after
            self._failures_in_a_row += 1
            self.listener.on_poll("failed")
            self.listener.on_failure(stats.polls, error, stats.retries - retries_before + 1)
            return True
        stats.polls += 1
        stats.requests += stats.retries - retries_before + 1
        stats.latencies.append(fetched.latency)
        self.listener.on_request(fetched.latency)
        self._failures_in_a_row = 0
        self._learn_schedule(fetched)
        if fetched.not_modified:
            stats.unchanged += 1
            self.listener.on_poll("not_modified")
        else:
            stats.fresh += 1
            self.listener.on_poll("fresh")
            self._report(fetched)
        return True

    def _on_retry(self, event: RetryEvent) -> None:
        self.stats.retries += 1
        self.listener.on_retry(event)

    def _learn_schedule(self, fetched: Fetched) -> None:
        if fetched.quotes:
            quote = fetched.quotes[0]
            period = quote.next_update_at - quote.updated_at
            if period > 0:
                # Server time -> local time, from the response's own timestamp.
                offset = quote.timestamp - (fetched.received_at - fetched.latency / 2)
                self._grid = TickGrid(anchor=quote.updated_at - offset, period=period)
        elif fetched.max_age is not None and self._grid is None:
            self._not_before = fetched.received_at + fetched.max_age

    def _report(self, fetched: Fetched) -> None:
        for quote in fetched.quotes:
            previous = self._last.get(quote.symbol)
            if previous is not None and quote.tick > previous.tick:
                self.stats.price_changes += 1
                if self._grid is not None:
                    # The grid was just anchored at this tick's start, in local time.
                    delay = max(0.0, fetched.received_at - self._grid.anchor)
                    self.stats.change_delays.append(delay)
                    self.listener.on_change_delay(delay)
            self.listener.on_quote(quote, previous)
            self._last[quote.symbol] = quote
