"""The polling loop: one poll per scheduled time, each with its retries; it never crashes,
and it keeps the counts the summary reports."""

from __future__ import annotations

import random
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from client.api import BadPayload, Fetched, Fetcher, PollError, Quote, RetryableError
from client.retry import Interrupted, RetryEvent, RetryPolicy, fetch_with_retries
from client.schedule import next_poll_at


@dataclass
class Stats:
    polls: int = 0
    fresh: int = 0
    unchanged: int = 0
    failures: int = 0
    bad_payloads: int = 0  # counted in failures too
    requests: int = 0
    retries: int = 0
    price_changes: int = 0  # new prices seen after the first quote of each symbol
    skipped_ticks: int = 0  # ticks that passed unseen between two fresh quotes
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
            "skipped_ticks": self.skipped_ticks,
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
    # poll: scheduled requests. long-poll, sse, websocket: the server paces the answers,
    # so the next one is asked for as soon as one arrives (failures still back off).
    transport: str = "poll"


class Listener:
    """What the loop reports; the CLI prints and counts, tests record."""

    def on_poll(self, outcome: str) -> None: ...  # fresh, not_modified or failed
    def on_quote(self, quote: Quote, previous: Quote | None) -> None: ...
    def on_retry(self, event: RetryEvent) -> None: ...
    def on_failure(self, poll: int, error: PollError, attempts: int) -> None: ...
    def on_request(self, seconds: float) -> None: ...
    def on_change_delay(self, seconds: float) -> None: ...
    def on_skipped_ticks(self, ticks: int) -> None: ...


class Poller:
    def __init__(
        self,
        client: Fetcher,
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
        self._last: dict[str | None, Quote] = {}
        self._next_tick_at: float | None = None  # local time the next price is due
        self._tick_seconds: float | None = None  # how long the server's ticks last
        self._due: float | None = None  # server time the next price is due, as last told
        self._new_tick = False  # the last poll brought a tick the one before did not
        self._not_before = 0.0
        self._offset: float | None = None  # server clock minus local clock, when known
        self._failures_in_a_row = 0

    def run(self) -> Stats:
        options = self.options
        while not self.stop.is_set():
            if not self._poll_once():
                break  # interrupted by stop: this poll is not counted
            if options.count and self.stats.polls >= options.count:
                break
            if options.transport != "poll" and not self._failures_in_a_row:
                at = max(self._clock(), self._not_before)
                if self.stop.wait(max(0.0, at - self._clock())):
                    break
                continue
            at = next_poll_at(
                last_end=self._clock(),  # after the poll's retries and their waits
                interval=options.interval,
                consecutive_failures=self._failures_in_a_row,
                not_before=self._not_before,
                next_tick_at=self._next_tick_at,
                align=options.align,
                spread=options.spread,
                rng=self._rng,
                tick_seconds=self._tick_seconds,
                new_tick=self._new_tick,
            )
            if self.stop.wait(max(0.0, at - self._clock())):
                break
        return self.stats

    def _poll_once(self) -> bool:
        # Requests as the server counts them (a stream opened is one, whatever it carries),
        # from the transport itself: an interrupted poll's request was sent too.
        sent_before = self.client.requests_sent
        try:
            return self._poll_with_retries()
        finally:
            self.stats.requests += self.client.requests_sent - sent_before

    def _poll_with_retries(self) -> bool:
        stats = self.stats
        try:
            fetched, _ = fetch_with_retries(
                self.client, self.options.policy, self.stop, self._on_retry, self._rng
            )
        except Interrupted:
            return False
        except PollError as error:
            stats.polls += 1
            stats.failures += 1
            if isinstance(error, BadPayload):
                stats.bad_payloads += 1
            if isinstance(error, RetryableError) and error.retry_after:
                self._not_before = self._clock() + error.retry_after
            self._failures_in_a_row += 1
            self.listener.on_poll("failed")
            self.listener.on_failure(stats.polls, error, error.attempts)
            return True
        stats.polls += 1
        if self.options.transport == "poll":  # elsewhere the time is the server's pacing
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
        due = [
            q.next_update_at
            for q in fetched.quotes
            if q.next_update_at is not None and q.period is not None
        ]
        self._new_tick = bool(due) and (self._due is None or min(due) > self._due)
        if due:
            self._due = min(due)
            self._tick_seconds = min(q.period for q in fetched.quotes if q.period is not None)
            quote = fetched.quotes[0]
            # Server time -> local time, from the response's own timestamp, which was
            # taken at most half the round trip either side of its midpoint: wait that
            # much longer, so an early clock never asks before the tick has turned.
            # Pushed and long-polled answers are stamped when sent, after any wait.
            in_transit = fetched.latency / 2 if self.options.transport == "poll" else 0.0
            offset = quote.timestamp - (fetched.received_at - in_transit)
            self._next_tick_at = min(due) - offset + in_transit
            self._offset = offset
        elif fetched.max_age is not None and self._next_tick_at is None:
            # No tick hints: a max-age still says how long this answer stays current.
            self._not_before = fetched.received_at + fetched.max_age

    def _report(self, fetched: Fetched) -> None:
        skipped = 0
        for quote in fetched.quotes:
            previous = self._last.get(quote.symbol)
            if previous is not None and _is_newer(quote, previous):
                self.stats.price_changes += 1
                if quote.updated_at is not None and self._offset is not None:
                    delay = max(0.0, fetched.received_at - (quote.updated_at - self._offset))
                    self.stats.change_delays.append(delay)
                    self.listener.on_change_delay(delay)
                if quote.tick is not None and previous.tick is not None:
                    skipped = max(skipped, quote.tick - previous.tick - 1)
            self.listener.on_quote(quote, previous)
            self._last[quote.symbol] = quote
        if skipped > 0:
            # Ticks are the server's, shared by every symbol: counted once per poll.
            self.stats.skipped_ticks += skipped
            self.listener.on_skipped_ticks(skipped)


def _is_newer(quote: Quote, previous: Quote) -> bool:
    """A new price: a later tick when the server numbers them, else a different price."""
    if quote.tick is not None and previous.tick is not None:
        return quote.tick > previous.tick
    return quote.price != previous.price
