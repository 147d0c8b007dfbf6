"""``crypto-service backfill --days N``: history for a period before now, computed from
the price model as the recorder would have written it (for demos, tests and benchmarks;
ticks already stored are kept as they are)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from service.config import Settings
from service.history_store import Tick
from service.recorder import TICKS_PER_WRITE, ServedTicks


class Recording(Protocol):
    """Where a backfill writes: a HistoryStore, or anything that records like one."""

    def record(self, rows: Sequence[Tick]) -> int: ...


def backfill(
    settings: Settings,
    store: Recording,
    days: float,
    progress: Callable[[int, int], None] | None = None,
    clock: Callable[[], float] = time.time,
    processes: int = 1,
) -> int:
    """Write every tick of the last ``days`` days up to now; the ticks newly stored
    (one symbol's quote each). ``progress(done, total)`` after each transaction. With
    ``processes`` > 1 the prices are computed in that many processes (the model's work is
    most of a backfill's), and written here in order."""
    now = clock()
    served = ServedTicks(settings, clock=lambda: now)
    first, last = served.tick_at(now - days * 86400), served.tick_at(now)
    chunks = [
        (start, min(last, start + TICKS_PER_WRITE - 1))
        for start in range(first, last + 1, TICKS_PER_WRITE)
    ]
    stored = 0
    with contextlib.ExitStack() as stack:
        if processes > 1:
            pool = stack.enter_context(
                concurrent.futures.ProcessPoolExecutor(
                    processes, initializer=_start_worker, initargs=(settings, now)
                )
            )
            computed: Iterator[list[Tick]] = pool.map(_quotes_between, chunks)
        else:
            computed = (served.between(*span) for span in chunks)
        for (_, end), quotes in zip(chunks, computed, strict=True):
            stored += store.record(quotes)
            if progress is not None:
                progress(end - first + 1, last - first + 1)
    return stored


_served: ServedTicks | None = None  # a pool process's own, made once


def _start_worker(settings: Settings, now: float) -> None:
    global _served
    _served = ServedTicks(settings, clock=lambda: now)


def _quotes_between(span: tuple[int, int]) -> list[Tick]:
    assert _served is not None
    return _served.between(*span)
