"""The managed API keys as one worker knows them: a dictionary from each key's SHA-256 to
its record, read again from the database whenever the keys' generation moves (polled
every REFRESH_SECONDS), so that a request looks its key up without a database round trip
and a key created or revoked anywhere holds in every worker within about a second.

While the database does not answer, the keys last read stay in force (a revocation then
waits for it); a worker that has never read them cannot tell a managed key from a wrong
one, and says so (KeysUnknown: a 503, not a 401).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlalchemy as sa

from service.key_store import KeyStore, ManagedKey
from service.logs import get_logger
from service.metrics import Metrics
from service.periodic import Periodic

REFRESH_SECONDS = 1.0  # a change holds everywhere within this and a read
ERROR_LOG_SECONDS = 60.0  # at most one log line per worker per minute while it fails
log = get_logger(__name__)


class KeysUnknown(RuntimeError):
    """This worker has not read the managed keys yet (the database has not answered)."""


class KeyRegistry:
    def __init__(
        self,
        store: KeyStore,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._clock = clock
        self._generation: int | None = None
        self._by_digest: dict[bytes, ManagedKey] = {}
        self._by_fingerprint: dict[str, ManagedKey] = {}
        self._logged_at = -ERROR_LOG_SECONDS
        self._poller = Periodic("api-keys", REFRESH_SECONDS, self.refresh)

    def refresh(self) -> bool:
        """Read the keys again if they changed; whether the database answered."""
        try:
            if self._generation is None or self._store.generation() != self._generation:
                generation, keys = self._store.working()
                self._by_digest = {key.digest: key for key in keys}
                self._by_fingerprint = {key.fingerprint: key for key in keys}
                self._generation = generation
        except sa.exc.SQLAlchemyError as error:
            self._metrics.count_key_refresh_error()
            now = time.monotonic()
            if now - self._logged_at >= ERROR_LOG_SECONDS:
                self._logged_at = now
                log.warning(
                    "api keys not refreshed",
                    error=str(error).splitlines()[0],
                    kept=len(self._by_digest),
                )
            return False
        return True

    def _ready(self) -> None:
        if self._poller.running and self._generation is not None:
            return  # every keyed request's path: nothing more than this
        self._poller.ensure_running()
        if self._generation is None and not self.refresh():
            raise KeysUnknown()

    def lookup(self, digest: bytes) -> ManagedKey | None:
        """The working key with this SHA-256, if any."""
        self._ready()
        return self._working(self._by_digest.get(digest))

    def by_fingerprint(self, fingerprint: str) -> ManagedKey | None:
        self._ready()
        return self._working(self._by_fingerprint.get(fingerprint))

    def _working(self, key: ManagedKey | None) -> ManagedKey | None:
        # Revoked keys are not read; rotated-out ones are kept until they expire: checked
        # at each use (the clock only read for those).
        if key is None or (key.expires_ms is not None and not key.works_at(self._now_ms())):
            return None
        return key

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)
