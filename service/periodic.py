"""Work a worker does every so often beside its requests, in a daemon thread (a greenlet
under gevent's patched threading) started the first time it is asked for in a process: a
forked worker does not inherit its parent's threads, and a process that never serves
never starts one."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from service.logs import get_logger

log = get_logger(__name__)


class Periodic:
    """``task()`` every ``seconds``, from the first ``ensure_running()`` in a process on.
    The task handles its own errors: one that escapes stops nothing but that round."""

    def __init__(self, name: str, seconds: float, task: Callable[[], object]) -> None:
        self.name = name
        self.seconds = seconds
        self._task = task
        self.running = False  # in this process: a forked child starts with False
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        self.running = False
        self._lock = threading.Lock()

    def ensure_running(self) -> None:
        """Start the thread unless it runs in this process (cheap when it does: callers
        are on requests' paths)."""
        if self.running:
            return
        with self._lock:
            if not self.running:
                self.running = True
                self._stopped = threading.Event()
                threading.Thread(target=self._run, name=self.name, daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        stopped = self._stopped
        while not stopped.wait(self.seconds):
            try:
                self._task()
            except Exception:  # a bug, not an outage (tasks report those): said, and go on
                log.exception("periodic task failed", task=self.name)
