"""What the benchmarks read of their processes from /proc."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Cpu:
    """Seconds of CPU used, in user space and in the kernel."""

    user: float
    system: float

    @property
    def total(self) -> float:
        return self.user + self.system


def children(pid: int) -> list[int]:
    """The process's children (a gunicorn master's workers)."""
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def cpu_of(pids: list[int]) -> Cpu:
    """The CPU the processes have used so far, together."""
    user = system = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        user += int(fields[11])  # utime
        system += int(fields[12])  # stime
    return Cpu(user / CLOCK_TICKS, system / CLOCK_TICKS)
