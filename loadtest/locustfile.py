"""Locust users that poll like real pollers do (like crypto-poll): on the server's tick,
with ETags, honouring Retry-After; some with API keys, some batching symbols.

    make loadtest URL=http://localhost:5000 USERS=200 DURATION=2m

API keys for the keyed users come from CRYPTO_API_KEYS (comma-separated, the same keys as
the server's API_KEYS); without them every user polls anonymously, and since they all
share one address they share one rate limit: expect 429s, which they honour.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

from locust import FastHttpUser, between, task
from locust.exception import RescheduleTask

KEYS = [k.split("=")[0] for k in os.environ.get("CRYPTO_API_KEYS", "").split(",") if k]
SPREAD = float(os.environ.get("CRYPTO_SPREAD", "0.25"))
INTERVAL = float(os.environ.get("CRYPTO_INTERVAL", "2.0"))


class Poller(FastHttpUser):
    """Polls one URL: waits at least INTERVAL, then for the next tick, plus a spread."""

    abstract = True
    path = "/crypto-price"
    fallback_wait = between(1.5, 2.5)

    def on_start(self) -> None:
        self.etag: str | None = None
        self.next_update_at = 0.0
        self.not_before = 0.0
        self._period = 3.0
        self.headers: dict[str, str] = {}

    def wait_time(self) -> float:
        now = time.time()
        earliest = max(now + INTERVAL, self.not_before)
        if self.next_update_at > 0:
            # The first tick boundary at or after `earliest`.
            period = self._period
            boundary = self.next_update_at
            while boundary < earliest:
                boundary += period
            return boundary - now + random.uniform(0, SPREAD)
        return max(earliest - now, 0.0) + random.uniform(0, SPREAD)

    @task
    def poll(self) -> None:
        headers = dict(self.headers)
        if self.etag:
            headers["If-None-Match"] = self.etag
        with self.client.get(
            self.path, headers=headers, name=self.name_for_stats, catch_response=True
        ) as response:
            if response.status_code == 304:
                response.success()
                return
            if response.status_code == 429:
                # Honoured, and reported as what it is rather than as a failure.
                self.not_before = time.time() + float(response.headers.get("Retry-After", "1"))
                response.success()
                raise RescheduleTask()
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
                return
            body: dict[str, Any] = response.json()
            quote = body["prices"][0] if "prices" in body else body
            self._period = quote["next_update_at"] - quote["updated_at"]
            self.next_update_at = quote["next_update_at"]
            self.etag = response.headers.get("ETag")
            response.success()

    @property
    def name_for_stats(self) -> str:
        return self.path.split("?")[0]


class AnonymousPoller(Poller):
    weight = 2


class KeyedPoller(Poller):
    abstract = not KEYS  # only when keys were given
    weight = 2

    def on_start(self) -> None:
        super().on_start()
        self.headers = {"X-API-Key": random.choice(KEYS)}


class BatchPoller(Poller):
    weight = 1
    path = "/v1/prices?symbols=BTC,ETH,SOL"
