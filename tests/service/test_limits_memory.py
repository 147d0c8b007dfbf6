"""The memory:// counters: limits' counts, no thread per request, expired counters still
swept, a sweeper in each forked process; and the internals of limits this leans on."""

from __future__ import annotations

import gc
import os
import threading
import time
from importlib.metadata import version

import pytest
from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter

from service import limits_memory
from service.limits_memory import LIMITS_SWEEP, SweptMemoryStorage


class CountingTimer(threading.Timer):
    started = 0

    def start(self) -> None:
        CountingTimer.started += 1
        super().start()


@pytest.fixture
def timers(monkeypatch: pytest.MonkeyPatch) -> type[CountingTimer]:
    """Every ``threading.Timer`` limits' memory storage starts, counted."""
    CountingTimer.started = 0
    monkeypatch.setattr(threading, "Timer", CountingTimer)  # limits looks it up per call
    return CountingTimer


def test_the_internals_it_leans_on_are_there_in_the_tested_limits() -> None:
    # If this fails, limits changed how it sweeps: read service/limits_memory.py again.
    assert version("limits").startswith("5."), version("limits")
    storage = MemoryStorage()
    assert callable(getattr(storage, LIMITS_SWEEP))
    assert isinstance(storage.timer, threading.Timer)
    storage.timer.cancel()


def test_limits_own_storage_starts_a_timer_for_requests_spaced_out(
    timers: type[CountingTimer],
) -> None:
    # What this module is for: limits alone starts a thread for nearly every request
    # when they come more than its 10 ms timer apart.
    storage = MemoryStorage()
    for _ in range(10):
        storage.incr("k", 60)
        time.sleep(0.03)
    assert timers.started >= 10


def test_spaced_out_requests_start_no_timer(timers: type[CountingTimer]) -> None:
    storage = SweptMemoryStorage()
    started_by_construction = timers.started
    for _ in range(10):
        storage.incr("k", 60)
        time.sleep(0.03)
    assert timers.started == started_by_construction


def test_the_counts_are_limits_own() -> None:
    limiter = FixedWindowRateLimiter(SweptMemoryStorage())
    limit = parse("3/minute")
    assert [limiter.hit(limit, "client") for _ in range(5)] == [True, True, True, False, False]
    assert limiter.get_window_stats(limit, "client").remaining == 0
    assert limiter.hit(limit, "another")


def test_expired_counters_are_swept_without_being_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits_memory, "SWEEP_SECONDS", 0.05)
    storage = SweptMemoryStorage()
    storage.incr("short", 0.01)
    storage.incr("long", 60)
    deadline = time.monotonic() + 5
    while "short" in storage.storage and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "short" not in storage.storage and "short" not in storage.expirations
    assert storage.storage["long"] == 1


def test_one_sweeper_per_process_and_one_in_a_forked_child() -> None:
    storage = SweptMemoryStorage()
    storage.incr("k", 60)
    sweeper = storage.timer.thread  # type: ignore[attr-defined]
    assert sweeper is not None and sweeper.is_alive()
    for _ in range(20):
        storage.incr("k", 60)
    assert storage.timer.thread is sweeper  # type: ignore[attr-defined]
    pid = os.fork()
    if pid == 0:  # the child: its parent's thread is not running here, until it counts
        code = 0 if not sweeper.is_alive() else 1
        storage.incr("k", 60)
        storage.incr("k", 60)
        ours = storage.timer.thread  # type: ignore[attr-defined]
        code |= 0 if ours is not sweeper and ours.is_alive() else 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_the_sweeper_ends_once_its_storage_is_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits_memory, "SWEEP_SECONDS", 0.02)
    storage = SweptMemoryStorage()
    storage.incr("k", 60)
    sweeper = storage.timer.thread  # type: ignore[attr-defined]
    del storage
    gc.collect()
    sweeper.join(timeout=5)
    assert not sweeper.is_alive()
