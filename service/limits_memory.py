"""``memory://`` rate-limit counters with one expiry sweeper per process.

limits' ``MemoryStorage`` sweeps expired counters from a ``threading.Timer`` of 10 ms,
started again by the first counting call after the last one ran: at a few requests a
second, a new thread for nearly every request. Under gevent a thread is a greenlet and
``Thread.start`` waits until it has run, so the request's greenlet goes to the back of
the event loop's queue, behind every other runnable one: beside 5,000 WebSockets a poll
waited up to half a second there, by the server's own histogram (``bench/NOTES.md``).
Here one sweeper per process runs every ``SWEEP_SECONDS`` instead; the counts are
limits' own (a counter past its window reads as expired whether swept or not: sweeping
only gives the memory back).

This leans on two of limits' internals, in this module only, for the versions pinned in
pyproject.toml, and guarded by tests/service/test_limits_memory.py: the ``timer``
attribute whose ``is_alive()`` decides whether a new timer starts, and the sweep itself
(``MemoryStorage.__expire_events``).
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from limits.storage import MemoryStorage

SWEEP_SECONDS = 1.0
LIMITS_SWEEP = "_MemoryStorage__expire_events"  # limits' own sweep (name-mangled)


class _Sweeper:
    """Stands where limits keeps its timer: always alive, so that limits never starts
    another; the first time it is asked in a process, it starts that process's sweeper
    (a forked worker does not inherit its parent's threads), which ends once the storage
    is gone (it holds the storage weakly)."""

    def __init__(self, sweep: Callable[[], None]) -> None:
        self._sweep = weakref.WeakMethod(sweep)
        self._pid: int | None = None
        self._lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def is_alive(self) -> bool:
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._pid = os.getpid()
                    self.thread = threading.Thread(
                        target=self._run, name="limits-sweeper", daemon=True
                    )
                    self.thread.start()
        return True

    def cancel(self) -> None:  # threading.Timer's, should anything call it
        pass

    def _run(self) -> None:
        while True:
            time.sleep(SWEEP_SECONDS)
            sweep = self._sweep()
            if sweep is None:
                return
            sweep()
            del sweep


class SweptMemoryStorage(MemoryStorage):
    """limits' ``MemoryStorage`` with one sweeper per process. Not registered under a
    scheme (no ``STORAGE_SCHEME`` of its own): ``memory://`` elsewhere stays limits'."""

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options: Any):
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self._replace_timer()

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._replace_timer()

    def _replace_timer(self) -> None:
        self.timer.cancel()  # the one limits started: it would only sweep once
        self.timer = _Sweeper(getattr(self, LIMITS_SWEEP))  # type: ignore[assignment]
