"""Periodic work: started once per process on first ask, each round run however the one
before ended, stopped when told."""

from __future__ import annotations

import itertools
import threading
import time

from service.periodic import Periodic


def test_the_task_runs_every_period_from_the_first_ask_and_survives_its_errors() -> None:
    runs: list[float] = []
    done = threading.Event()

    def task() -> None:
        runs.append(time.monotonic())
        if len(runs) == 4:
            done.set()
        if len(runs) == 2:
            raise RuntimeError("a bug in one round")

    periodic = Periodic("test", 0.05, task)
    time.sleep(0.2)
    assert runs == []  # nothing before it is asked for
    for _ in range(10):
        periodic.ensure_running()  # one thread however often asked
    assert done.wait(5)
    periodic.stop()
    time.sleep(0.2)
    count = len(runs)
    time.sleep(0.2)
    assert len(runs) == count  # stopped
    assert all(b - a >= 0.04 for a, b in itertools.pairwise(runs))
    assert sum(1 for t in threading.enumerate() if t.name == "test") == 0
