"""The places push connections take: one of the worker's held connections
(:mod:`service.capacity`) and one of the client's ``MAX_STREAMS_PER_CLIENT``, counted in
a ledger (this process's, or the limiter's Redis across workers and pods).
"""

from __future__ import annotations

import functools
import math
import socket
import threading
from collections import Counter
from collections.abc import Callable
from typing import Protocol

from service.capacity import Held, HeldConnections
from service.errors import ApiError
from service.metrics import Metrics

LEASE_MAX_SECONDS = 60.0


def lease_seconds(heartbeat_seconds: float) -> float:
    """How long a stream's place in Redis lasts unless renewed: three heartbeats (it is
    renewed every heartbeat while the stream is open), at most a minute, so that the places
    of a worker killed without giving them back free themselves within that."""
    return min(LEASE_MAX_SECONDS, 3 * heartbeat_seconds)


class TooManyStreams(ApiError):
    def __init__(self, cap: int, retry_after: float) -> None:
        super().__init__(
            429,
            "too_many_streams",
            f"At most {cap} push connections per client are open at once; close one first.",
            retry_after=max(1, math.ceil(retry_after)),
        )


class StreamLedger(Protocol):
    def claim(self, client: str, cap: int) -> Callable[[], None] | None:
        """Take one of ``client``'s ``cap`` places; how to give it back, or None if full."""
        ...


class ProcessStreamLedger:
    """Places for open streams per client, counted in this process: when the limiter's
    storage is not Redis (with ``memory://`` this process is the only worker). With Redis,
    the limiter's SharedStreamLedger counts them across workers."""

    def __init__(self) -> None:
        self._open: Counter[str] = Counter()
        self._lock = threading.Lock()

    def claim(self, client: str, cap: int) -> Callable[[], None] | None:
        with self._lock:
            if self._open[client] >= cap:
                return None
            self._open[client] += 1
        return functools.partial(self._give_back, client)

    def _give_back(self, client: str) -> None:
        with self._lock:
            self._open[client] -= 1
            if self._open[client] <= 0:
                del self._open[client]


class StreamSlots:
    """The push connections each client holds open, capped, counted in ``ledger``, each
    also one of this worker's held connections.

    ``retry_after``: what a client refused for holding too many is told to wait: a stream
    it closed is noticed, and its place freed, within about that long."""

    def __init__(
        self,
        cap: int,
        metrics: Metrics,
        ledger: StreamLedger,
        held: HeldConnections,
        retry_after: float,
    ) -> None:
        self._cap = cap
        self._metrics = metrics
        self._ledger = ledger
        self._held = held
        self._retry_after = retry_after

    def take(self, client: str, transport: str, sock: socket.socket | None) -> Slot:
        """Both places, or OverCapacity (the worker's are taken) or TooManyStreams."""
        held = self._held.take(sock)
        try:
            give_back = self._ledger.claim(client, self._cap)
        except BaseException:
            held.release()
            raise
        if give_back is None:
            held.release()
            raise TooManyStreams(self._cap, self._retry_after)
        self._metrics.streams_open.labels(transport).inc()
        return Slot(held, functools.partial(self._give_back, give_back, transport))

    def _give_back(self, give_back: Callable[[], None], transport: str) -> None:
        give_back()
        self._metrics.streams_open.labels(transport).dec()


class Slot:
    """One open push connection's places; released once, however the connection ends.
    ``ended`` is set when the worker drains (or the transport finds its peer gone)."""

    def __init__(self, held: Held, give_back: Callable[[], None]) -> None:
        self._held = held
        self._give_back = give_back
        self._released = False
        self.ended = held.ended

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._give_back()
            self._held.release()
