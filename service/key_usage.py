"""Each API key's use, counted in the worker as its requests are logged (the access line
and these counts come from the same place, so they agree), and added to the database's
hourly rows every FLUSH_SECONDS in one statement, off the request path. Counts that could
not be written are kept and written with the next batch; what is kept is bounded (one
entry per key and hour, at most MAX_PENDING)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import sqlalchemy as sa

from service.key_store import HOUR_MS, KeyStore, Usage
from service.logs import get_logger
from service.metrics import Metrics
from service.periodic import Periodic

FLUSH_SECONDS = 1.0
MAX_PENDING = 100_000  # (key, hour) entries kept while the database is down; then dropped
ERROR_LOG_SECONDS = 60.0
log = get_logger(__name__)


class UsageCounter:
    def __init__(
        self,
        store: KeyStore,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._clock = clock
        # (fingerprint, hour) -> [requests, rate limited, streams, latest request's ms]
        self._pending: dict[tuple[str, int], list[int]] = {}
        self._lock = threading.Lock()
        self._logged_at = -ERROR_LOG_SECONDS
        self._flusher = Periodic("api-key-usage", FLUSH_SECONDS, self.flush)

    def count(self, fingerprint: str, rate_limited: bool, stream: bool) -> None:
        """One request of the key ``fingerprint`` (a 429, or a stream opened). On every
        keyed request's path: counts kept in a list mutated in place, no object made."""
        now_ms = int(self._clock() * 1000)
        key = (fingerprint, now_ms - now_ms % HOUR_MS)
        with self._lock:
            counts = self._pending.get(key)
            if counts is None:
                if len(self._pending) >= MAX_PENDING:
                    self._metrics.count_usage_dropped()
                    return
                counts = self._pending[key] = [0, 0, 0, now_ms]
                self._flusher.ensure_running()
            counts[0] += 1
            counts[1] += rate_limited
            counts[2] += stream
            counts[3] = now_ms

    def pending(self, fingerprint: str, since_ms: int) -> Usage:
        """What this worker counted for the key and has not written yet."""
        with self._lock:
            found = [
                _usage(counts)
                for (counted, hour_ms), counts in self._pending.items()
                if counted == fingerprint and hour_ms >= since_ms
            ]
        return sum(found, Usage())

    def flush(self) -> bool:
        """Write what was counted; whether it was written (else it is kept)."""
        with self._lock:
            taken, self._pending = self._pending, {}
        if not taken:
            return True
        try:
            self._store.add_usage({key: _usage(counts) for key, counts in taken.items()})
        except sa.exc.SQLAlchemyError as error:
            with self._lock:
                for key, counts in taken.items():
                    since = self._pending.get(key)
                    if since is not None:  # counted meanwhile: added to what waited
                        counts = [a + b for a, b in zip(counts[:3], since[:3], strict=True)]
                        counts.append(since[3])
                    self._pending[key] = counts
            self._metrics.count_usage_write_error()
            now = time.monotonic()
            if now - self._logged_at >= ERROR_LOG_SECONDS:
                self._logged_at = now
                log.warning("api key usage not written", error=str(error).splitlines()[0])
            return False
        return True


def _usage(counts: list[int]) -> Usage:
    requests, rate_limited, streams, last_ms = counts
    return Usage(requests, rate_limited, streams, last_ms)
