"""The connections one worker holds open (SSE streams, WebSockets, long-polls), capped
below what the worker can serve at once, and ended together when it drains.

A gevent worker serves at most ``WORKER_CONNECTIONS`` connections, a gthread worker
``THREADS`` requests; once held connections take them all, the worker stops accepting and
``/healthz``, ``/readyz``, polls and ``/metrics`` wait in the listen queue until the
liveness probe restarts the pod. So held connections get at most ``Settings.held_cap``
places and the rest stay free; one more is refused with a 503 ``over_capacity``.

On SIGTERM every held connection is told to end (its ``ended`` event), and those whose
socket is still open a moment later (a client that stopped reading, its write blocked)
are cut, so that the worker exits well within ``GRACEFUL_TIMEOUT`` whatever the clients do.
"""

from __future__ import annotations

import random
import resource
import socket
import threading
import time
from contextlib import suppress

from service.errors import ApiError

FILES_BESIDE_CONNECTIONS = 64  # listeners, logs, metric files, Redis: besides the clients
CUT_AFTER_SECONDS = 1.0  # after the drain began: time enough for a stream to end cleanly
OVER_CAPACITY_RETRY_SECONDS = (2, 6)  # Retry-After, drawn per answer to spread the retries


class OverCapacity(ApiError):
    def __init__(self, cap: int) -> None:
        super().__init__(
            503,
            "over_capacity",
            f"This instance holds as many streams and long-polls as it may ({cap}); "
            "retry after Retry-After.",
            retry_after=random.randint(*OVER_CAPACITY_RETRY_SECONDS),
        )


class Held:
    """One held connection's place. ``ended`` is set when the worker drains, or by the
    transport when its peer is gone; whoever holds the place waits on it."""

    __slots__ = ("_owner", "_released", "ended", "sock")

    def __init__(self, owner: HeldConnections, sock: socket.socket | None) -> None:
        self._owner = owner
        self._released = False
        self.ended = threading.Event()
        self.sock = sock

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._owner._give_back(self)

    def cut(self) -> None:
        """End the connection now, whatever its writer is doing: a blocked write fails at
        once (EPIPE, which the server ignores) and the transport cleans up."""
        self.ended.set()
        if self.sock is not None:
            with suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)


class HeldConnections:
    """This worker's held connections, at most ``cap`` at once."""

    def __init__(self, cap: int, cut_after: float = CUT_AFTER_SECONDS) -> None:
        self.cap = cap
        self._cut_after = cut_after
        self._held: set[Held] = set()
        self._lock = threading.Lock()
        self._draining = threading.Event()
        self._cutter: threading.Thread | None = None

    def __len__(self) -> int:
        return len(self._held)

    def take(self, sock: socket.socket | None = None) -> Held:
        """A place for one more held connection (``sock``, when given, is cut if it is
        still open a moment after the drain began); OverCapacity when there is none."""
        place = Held(self, sock)
        with self._lock:
            if len(self._held) >= self.cap:
                raise OverCapacity(self.cap)
            self._held.add(place)
            if self._draining.is_set():
                place.ended.set()
            if self._cutter is None:
                # Started here, in a request, and waiting: drain() runs in a signal
                # handler, where gevent may not start a thread.
                self._cutter = threading.Thread(target=self._cut_after_drain, daemon=True)
                self._cutter.start()
        return place

    def drain(self) -> None:
        """Tell every held connection to end; those still open CUT_AFTER_SECONDS later are
        cut. Safe in a signal handler: it only sets events."""
        self._draining.set()
        with self._lock:
            held = list(self._held)
        for place in held:
            place.ended.set()

    def _cut_after_drain(self) -> None:
        self._draining.wait()
        time.sleep(self._cut_after)
        with self._lock:
            held = list(self._held)
        for place in held:
            place.cut()

    def _give_back(self, place: Held) -> None:
        with self._lock:
            self._held.discard(place)


def raise_open_file_limit(connections: int) -> str | None:
    """Raise this process's soft limit on open files to its hard limit (the workers forked
    after inherit it): each connection a worker holds is a file. A warning naming both
    when even that cannot hold ``connections``, else None."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    needed = connections + FILES_BESIDE_CONNECTIONS
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return None
    return (
        f"the open-file limit (RLIMIT_NOFILE {soft}, hard {hard}) is below what "
        f"WORKER_CONNECTIONS={connections} needs ({needed}): connections beyond it will be "
        "refused; raise the limit (ulimit -n, systemd LimitNOFILE, the container's nofile) "
        "or lower WORKER_CONNECTIONS"
    )
