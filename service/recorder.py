"""The recorder: writes every tick's quotes to the history database, off the request
path (a process of its own beside the workers, started and restarted by gunicorn's
master; ``python -m service.recorder``).

It computes each tick from the price model, as the workers do, so what it stores is what
was served. A database that is down or slow costs the workers nothing; the recorder
keeps the ticks it could not write and writes them, oldest first, once it can. At start it
resumes after the newest tick stored when that tick is one this model serves (its prices
are the model's): a restart leaves no gap. When the settings changed (another seed, base
prices or tick length), the stored ticks were served by the old settings and cannot be
recomputed: the new history starts at the current tick.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections.abc import Callable

from service.config import ConfigError, Settings
from service.database import SchemaBehind, check_schema, create_engine
from service.feed import PriceFeed
from service.history_store import HistoryStore, Tick
from service.logs import configure_logging, get_logger
from service.metrics import HistoryMetrics
from service.prices import PriceModel

TICKS_PER_WRITE = 500  # ticks of every symbol written in one transaction when catching up
RETRY_SECONDS = (1, 2, 5, 10)  # after a failed write, by consecutive failures: 10 s at most, so
# that the ticks missed are written within 10 s of the database taking writes again
ERROR_LOG_SECONDS = 30.0  # at most one error line this often (the count is in the metrics)
PRUNE_EVERY_SECONDS = 600.0
PARENT_CHECK_SECONDS = 1.0  # how soon the recorder notices that its master is gone


class ServedTicks:
    """What the workers' feeds serve at each tick, as history rows."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.feed = PriceFeed(
            PriceModel(settings.price_seed, settings.symbols),
            list(settings.symbols),
            settings.price_tick_seconds,
            clock=clock,
        )
        self.tick_seconds = settings.price_tick_seconds
        self.tick_ms = round(self.tick_seconds * 1000)

    def tick_at(self, now: float) -> int:
        return self.feed.tick_at(now)

    def start_ms(self, tick: int) -> int:
        return round(tick * self.tick_seconds * 1000)

    def quotes(self, tick: int) -> list[Tick]:
        """The tick's quotes of every symbol."""
        now = self.clock()
        served = (self.feed.at_tick(symbol, tick, now) for symbol in self.feed.symbols)
        return [Tick(q.symbol, self.start_ms(tick), self.tick_ms, q.price) for q in served]

    def between(self, first: int, last: int) -> list[Tick]:
        """The quotes of the ticks from ``first`` to ``last``, oldest first."""
        return [quote for tick in range(first, last + 1) for quote in self.quotes(tick)]


class Recorder:
    """What to write next, and writing it."""

    def __init__(
        self,
        settings: Settings,
        store: HistoryStore,
        metrics: HistoryMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.served = ServedTicks(settings, clock)
        self.next_tick: int | None = None  # the oldest tick not yet written
        self.failures = 0
        self._logged_error_at = -math.inf
        self._pruned_at = -math.inf
        self.log = get_logger("service.recorder")

    def resume_point(self, now: float) -> int:
        """The first tick to write: after the newest stored, when it is this model's and
        within the retention; else the current one."""
        current = self.served.tick_at(now)
        stored = self.store.latest()
        if set(stored) != set(self.settings.symbols):
            return current
        starts = {tick.start_ms for tick in stored.values()}
        if len(starts) != 1 or any(tick.tick_ms != self.served.tick_ms for tick in stored.values()):
            return current
        (start_ms,) = starts
        tick = round(start_ms / self.served.tick_ms)
        ours = {quote.symbol: quote.price for quote in self.served.quotes(tick)}
        same_model = all(ours[symbol] == stored[symbol].price for symbol in ours)
        oldest = self.served.tick_at(now - self.settings.history_retention_seconds)
        if not same_model or self.served.start_ms(tick) != start_ms or tick < oldest:
            return current
        return min(tick + 1, current)

    def write_due(self) -> int:
        """Write the ticks due (up to the current one), a transaction per
        TICKS_PER_WRITE; the ticks written. Raises on a database error, keeping what is
        due for the next call."""
        now = self.clock()
        if self.next_tick is None:
            filled = self.store.fill_statistics()
            if filled:
                self.log.info("statistics filled in", minutes=filled)
            self.next_tick = self.resume_point(now)
            self.log.info("recording", from_tick=self.next_tick)
        current = self.served.tick_at(now)
        written = 0
        while self.next_tick <= current:
            last = min(current, self.next_tick + TICKS_PER_WRITE - 1)
            rows = self.served.between(self.next_tick, last)
            written += self.store.record(rows)
            self.metrics.count_written(len(rows))
            self.next_tick = last + 1
            self.metrics.set_recorded_through(
                (self.served.start_ms(last) + self.served.tick_ms) / 1000
            )
        return written

    def prune_if_due(self) -> None:
        now = self.clock()
        if now - self._pruned_at >= PRUNE_EVERY_SECONDS:
            self.store.prune(round((now - self.settings.history_retention_seconds) * 1000))
            self._pruned_at = now

    def step(self) -> float:
        """Write what is due; the seconds to wait before the next step."""
        try:
            self.write_due()
            self.prune_if_due()
        except Exception as error:  # the database's: counted, logged now and then, retried
            self.failures += 1
            self.metrics.count_write_error()
            now = self.clock()
            if now - self._logged_error_at >= ERROR_LOG_SECONDS:
                self._logged_error_at = now
                self.log.error(
                    "history write failed; will retry",
                    error=f"{type(error).__name__}: {str(error).splitlines()[0][:300]}",
                    failures=self.failures,
                    pending_from_tick=self.next_tick,
                )
            return RETRY_SECONDS[min(self.failures, len(RETRY_SECONDS)) - 1]
        if self.failures:
            self.log.info("history writes resumed", after_failures=self.failures)
            self.failures = 0
        # Just after the next tick starts.
        now = self.clock()
        return (self.served.tick_at(now) + 1) * self.served.tick_seconds - now + 0.01

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            stop.wait(self.step())


def stop_when_orphaned(stop: threading.Event, parent: int) -> threading.Thread:
    """Set ``stop`` once ``parent`` (gunicorn's master) is gone, however it went: a
    master killed outright cannot stop its recorder, and two recorders of one replica
    would be one too many once it is started again."""

    def watch() -> None:
        while not stop.wait(PARENT_CHECK_SECONDS):
            if os.getppid() != parent:
                get_logger("service.recorder").warning("master gone; stopping", master=parent)
                stop.set()

    watcher = threading.Thread(target=watch, name="parent-watch", daemon=True)
    watcher.start()
    return watcher


def main() -> int:
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        print(f"crypto-service recorder: configuration error: {exc}", flush=True)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    log = get_logger("service.recorder")
    engine = create_engine(settings.database_url)
    store = HistoryStore(engine)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop_when_orphaned(stop, os.getppid())
    while not stop.is_set():  # a schema behind is an operator's to fix; say so and wait
        try:
            check_schema(engine)
            break
        except SchemaBehind as problem:
            log.error(str(problem))
        except Exception as error:
            log.warning("history database unreachable", error=str(error).splitlines()[0][:300])
        stop.wait(10)
    recorder = Recorder(settings, store, HistoryMetrics(settings.metrics_dir))
    recorder.run(stop)
    engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
