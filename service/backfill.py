"""``crypto-service backfill --days N``: history for a period before now, computed from
the price model as the recorder would have written it (for demos, tests and benchmarks;
ticks already stored are kept as they are)."""

from __future__ import annotations

import time
from collections.abc import Callable

from service.config import Settings
from service.history_store import HistoryStore
from service.metrics import HistoryMetrics
from service.recorder import TICKS_PER_WRITE, Recorder


def backfill(
    settings: Settings,
    store: HistoryStore,
    days: float,
    progress: Callable[[int, int], None] | None = None,
    clock: Callable[[], float] = time.time,
) -> int:
    """Write every tick of the last ``days`` days up to now; the ticks newly stored
    (one symbol's quote each). ``progress(done, total)`` after each transaction."""
    recorder = Recorder(settings, store, HistoryMetrics(), clock=clock)
    now = clock()
    first, last = recorder.tick_at(now - days * 86400), recorder.tick_at(now)
    total = last - first + 1
    stored = 0
    for start in range(first, last + 1, TICKS_PER_WRITE):
        end = min(last, start + TICKS_PER_WRITE - 1)
        stored += store.record([q for tick in range(start, end + 1) for q in recorder.quotes(tick)])
        if progress is not None:
            progress(end - first + 1, total)
    return stored
