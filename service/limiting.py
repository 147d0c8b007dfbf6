"""Rate limiting of the price endpoints: how much a client may poll, and what it is told.

Who the client is, service/identity.py says (its key, its token, or its address). Every
price endpoint shares one budget per client, counted in ``RATE_LIMIT_STORAGE_URI``.

The counting is done by ``limits``, the engine Flask-Limiter is built on: the same
storage URIs, strategies and even the same keys (``LIMITER/crypto/<client>/api/...``) as
the Flask-Limiter ``shared_limit`` this module used to declare. What it no longer does is
resolve the limits per request: Flask-Limiter's generic resolution (decorators,
blueprints, defaults, exemptions, meta limits, three hooks) cost more per request than a
whole bare Flask request (``bench/NOTES.md``), while this service has one limit per client
class, known at start-up. So the limits are parsed once and one hook on the price
blueprint counts the request with a single storage call.

Storage failures fail open by default: the request is served,
``ratelimit_storage_errors_total`` rises and a warning is logged (at most every 10 s); with
``RATE_LIMIT_FAIL_OPEN=false`` the request gets a 503 instead.
"""

from __future__ import annotations

import functools
import math
import secrets
import threading
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any, cast

import flask
import redis
from limits import RateLimitItem, WindowStats
from limits.storage import RedisStorage, Storage, storage_from_string
from limits.strategies import STRATEGIES, FixedWindowRateLimiter, RateLimiter

from service.config import Settings
from service.errors import ApiError
from service.identity import Client, Identity
from service.limits_memory import SweptMemoryStorage
from service.logs import get_logger
from service.metrics import Metrics
from service.redis_pipeline import script_caller
from service.request_facts import facts_of

KEY_PREFIX = "crypto"
API_SCOPE = "api"  # the one budget shared by every price endpoint
WARNING_INTERVAL_SECONDS = 10.0
STORAGE_TIMEOUT_SECONDS = 0.25  # a dead Redis must not stall requests for long
log = get_logger(__name__)


# INCRBY, the expiry when this hit opened the window (as limits' own incr_expire.lua
# does), and the milliseconds left, in one round trip.
INCR_EXPIRE_PTTL = b"""
local amount = tonumber(ARGV[2])
local current = redis.call("incrby", KEYS[1], amount)
if current == amount then
    redis.call("expire", KEYS[1], ARGV[1])
end
local left = redis.call("pttl", KEYS[1])
if left < 0 then
    redis.call("expire", KEYS[1], ARGV[1])
    left = tonumber(ARGV[1]) * 1000
end
return {current, left}
"""


# A client's open streams, as a sorted set of leases (member: one stream, score: when its
# lease ends, by Redis's clock): expired leases dropped, then one added if fewer than the
# cap are held. Answers 1 when taken, 0 when the client holds the cap already.
CLAIM_STREAM = b"""
local now = redis.call("time")
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call("zremrangebyscore", KEYS[1], "-inf", now_ms)
if redis.call("zcard", KEYS[1]) >= tonumber(ARGV[1]) then
    return 0
end
redis.call("zadd", KEYS[1], now_ms + tonumber(ARGV[2]), ARGV[3])
redis.call("pexpire", KEYS[1], ARGV[2])
return 1
"""


# Every lease named in ARGV[2..] (those still held: XX) extended to a lease from now.
RENEW_STREAMS = b"""
local now = redis.call("time")
local until_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do
    redis.call("zadd", KEYS[1], "XX", until_ms, ARGV[i])
end
redis.call("pexpire", KEYS[1], ARGV[1])
return 1
"""


class CountingFixedWindow(FixedWindowRateLimiter):
    """limits' fixed window, answering the window's state from the hit itself: with Redis,
    one command per request instead of three (INCR, then GET and TTL for the headers),
    and under the gevent worker sent together with those of the other requests in the
    same turn of the event loop (service/redis_pipeline.py).

    The window's end comes with the count, every time, never from a cache: a remembered
    end goes stale when Redis restarts or is flushed, and a TTL in whole seconds reads up
    to a second early. With Redis it is the key's PTTL, counted from when the answer
    arrived (so never before the real end) plus the millisecond PTTL rounds away; in
    memory, the expiry the storage itself keeps.
    """

    def __init__(self, storage: Storage) -> None:
        super().__init__(storage)
        self._key_for = lru_cache(maxsize=10_000)(_key_for)
        self._script = (
            script_caller(cast(redis.Redis, storage.get_connection()), INCR_EXPIRE_PTTL)
            if isinstance(storage, RedisStorage)
            else None
        )

    def hit_with_stats(
        self, item: RateLimitItem, *identifiers: str, cost: int = 1
    ) -> tuple[bool, WindowStats]:
        key = self._key_for(item, identifiers)
        expiry = item.get_expiry()
        if self._script is not None:
            storage = cast(RedisStorage, self.storage)
            count, left_ms = self._script([storage.prefixed_key(key)], [expiry, cost])
            end = time.time() + (int(left_ms) + 1) / 1000
        else:
            count = self.storage.incr(key, expiry, amount=cost)
            end = self.storage.get_expiry(key)
        count = int(count)
        return count <= item.amount, WindowStats(end, max(0, item.amount - count))


def _key_for(item: RateLimitItem, identifiers: tuple[str, ...]) -> str:
    return item.key_for(*identifiers)


def hit_with_stats(
    strategy: RateLimiter, item: RateLimitItem, *identifiers: str
) -> tuple[bool, WindowStats]:
    """Count one request and return whether it is allowed and the window's state."""
    if isinstance(strategy, CountingFixedWindow):
        return strategy.hit_with_stats(item, *identifiers)
    allowed = strategy.hit(item, *identifiers)
    return allowed, strategy.get_window_stats(item, *identifiers)


class RateLimited(ApiError):
    def __init__(self, limit: RateLimitItem) -> None:
        super().__init__(
            429, "rate_limited", f"Rate limit exceeded ({limit}); retry after Retry-After."
        )


class StorageUnavailable(ApiError):
    def __init__(self) -> None:
        super().__init__(
            503,
            "unavailable",
            "The rate limit storage is unreachable; retry shortly.",
            retry_after=1,
        )


class RateLimiting:
    """The service's rate limiter: storage and strategy built once, one check per request."""

    def __init__(self, settings: Settings, metrics: Metrics, identity: Identity) -> None:
        self._settings = settings
        self.identity = identity
        self._metrics = metrics
        # wrap_exceptions: limits reports its own storage calls' failures as StorageError.
        options: dict[str, Any] = {"wrap_exceptions": True}
        if settings.shared_limit_storage:
            options["socket_timeout"] = STORAGE_TIMEOUT_SECONDS
            options["socket_connect_timeout"] = STORAGE_TIMEOUT_SECONDS
        # Only synchronous schemes pass configuration (config.STORAGE_SCHEMES).
        uri = settings.rate_limit_storage_uri
        self.storage = (
            SweptMemoryStorage(uri, **options)
            if uri.startswith("memory://")
            else cast(Storage, storage_from_string(uri, **options))
        )
        self.strategy: RateLimiter = (
            CountingFixedWindow(self.storage)
            if settings.rate_limit_strategy == "fixed-window"
            else STRATEGIES[settings.rate_limit_strategy](self.storage)
        )
        self._storage_errors = _StorageErrorReporter(metrics, settings.rate_limit_fail_open)

    def stream_ledger(self, lease_seconds: float) -> SharedStreamLedger | None:
        """The open-stream places of every worker sharing this limiter's Redis, each held
        for at most ``lease_seconds``; None when the storage is not Redis (then one
        process serves, or its places are per process)."""
        if not isinstance(self.storage, RedisStorage):
            return None
        client = cast(redis.Redis, self.storage.get_connection())
        return SharedStreamLedger(
            client, lease_seconds, self._storage_errors, self._settings.rate_limit_fail_open
        )

    def init_app(
        self, app: flask.Flask, blueprint: str, accept_tokens: bool = False, counted: bool = True
    ) -> None:
        """Limit every endpoint of the blueprint named ``blueprint``, before its own hooks
        (its clients may name their key by token when ``accept_tokens``); or, not
        ``counted``, only identify its clients (a key's usage, which must answer however
        much of the limit is used).

        Registered on the app (keyed by the blueprint's name), not on the blueprint
        object, which is shared by every app built in the process."""
        if counted:
            check = functools.partial(self.check, accept_tokens)
        else:
            check = functools.partial(self.identify_only, accept_tokens)
        app.before_request_funcs.setdefault(blueprint, []).insert(0, check)

    def identify_only(self, accept_tokens: bool = False) -> None:
        self.identity.identify(flask.request.environ, accept_tokens)

    def check(self, accept_tokens: bool = False) -> None:
        """Identify the client, count the request, queue the headers; raise if refused."""
        environ = flask.request.environ
        client = self.identity.identify(environ, accept_tokens)
        limit = client.client_class.limit
        try:
            allowed, (reset_at, remaining) = hit_with_stats(
                self.strategy, limit, KEY_PREFIX, client.key, API_SCOPE
            )
        except Exception as exc:
            # Not only StorageError: the Redis script's errors come unwrapped, and limits'
            # memory storage can raise RuntimeError when two threads restart its expiry
            # timer at once. Whatever the storage raised, the request is served or refused
            # as RATE_LIMIT_FAIL_OPEN says, never answered 500.
            self._storage_errors.record(exc)
            if self._settings.rate_limit_fail_open:
                return
            raise StorageUnavailable() from None
        window = limit.get_expiry()
        reset_in = max(0, math.ceil(reset_at - time.time()))
        policy = client.client_class.policy
        headers = [
            ("X-RateLimit-Limit", str(limit.amount)),
            ("X-RateLimit-Remaining", str(remaining)),
            ("X-RateLimit-Reset", str(math.ceil(reset_at))),
            ("RateLimit-Policy", f'"{policy}";q={limit.amount};w={window}'),
            ("RateLimit", f'"{policy}";r={remaining};t={reset_in}'),
        ]
        facts_of(environ).headers = headers
        if not allowed:
            headers.append(("Retry-After", str(max(1, reset_in))))
            raise RateLimited(limit)

    def window(self, client: Client) -> tuple[int, float]:
        """What is left of ``client``'s limit in its window, and when the window ends
        (unix seconds), without counting a request."""
        limit = client.client_class.limit
        reset_at, remaining = self.strategy.get_window_stats(
            limit, KEY_PREFIX, client.key, API_SCOPE
        )
        return remaining, reset_at


class SharedStreamLedger:
    """Places for open streams per client, counted in Redis so that the cap holds across
    every worker and pod sharing it. Each place is a lease of ``lease_seconds`` that this
    worker renews (in one pipeline for all its streams) every third of that while the
    stream is open, so the places of a worker that died without giving them back free
    themselves within a lease. A Redis failure fails open (the stream opens, uncounted) or
    closed (503), as the limiter does."""

    def __init__(
        self,
        client: redis.Redis,
        lease_seconds: float,
        errors: _StorageErrorReporter,
        fail_open: bool,
    ) -> None:
        self._client = client
        self._claim = client.register_script(CLAIM_STREAM)
        self._renew = client.register_script(RENEW_STREAMS)
        self._lease_seconds = lease_seconds
        self._lease_ms = math.ceil(lease_seconds * 1000)
        self._errors = errors
        self._fail_open = fail_open
        self._held: dict[str, set[str]] = {}  # key -> this worker's leases in it
        self._lock = threading.Lock()
        self._renewer: threading.Thread | None = None

    def claim(self, client: str, cap: int) -> Callable[[], None] | None:
        """Take one of ``client``'s ``cap`` places; returns how to give it back, or None
        when they are all taken."""
        key = f"{KEY_PREFIX}/streams/{client}"
        lease = secrets.token_hex(8)
        try:
            taken = self._claim([key], [cap, self._lease_ms, lease])
        except Exception as exc:
            self._errors.record(exc)
            if self._fail_open:
                return _nothing_to_give_back
            raise StorageUnavailable() from None
        if not taken:
            return None
        with self._lock:
            self._held.setdefault(key, set()).add(lease)
            if self._renewer is None:  # started in the worker that serves, not before a fork
                self._renewer = threading.Thread(
                    target=self._keep_renewing, name="stream-lease-renewer", daemon=True
                )
                self._renewer.start()

        def give_back() -> None:
            with self._lock:
                leases = self._held.get(key)
                if leases is not None:
                    leases.discard(lease)
                    if not leases:
                        del self._held[key]
            try:
                self._client.zrem(key, lease)
            except Exception as exc:  # the lease runs out by itself
                self._errors.record(exc)

        return give_back

    def _keep_renewing(self) -> None:
        while True:
            time.sleep(self._lease_seconds / 3)
            self.renew()

    def renew(self) -> None:
        """Extend every lease this worker holds by a whole lease, in one round trip."""
        with self._lock:
            held = [(key, sorted(leases)) for key, leases in self._held.items()]
        if not held:
            return
        try:
            pipeline = self._client.pipeline(transaction=False)
            for key, leases in held:
                self._renew([key], [self._lease_ms, *leases], client=pipeline)
            pipeline.execute()
        except Exception as exc:  # renewed at the next turn, if Redis is back by then
            self._errors.record(exc)


def _nothing_to_give_back() -> None:
    return None


class _StorageErrorReporter:
    """Counts storage failures and logs a warning at most every WARNING_INTERVAL_SECONDS,
    so that a dead Redis cannot flood the log with one line per request."""

    def __init__(self, metrics: Metrics, fail_open: bool) -> None:
        self._metrics = metrics
        self._outcome = "serving without limits" if fail_open else "refusing with 503"
        self._lock = threading.Lock()
        self._last_warning = -math.inf

    def record(self, exc: BaseException) -> None:
        self._metrics.limiter_storage_errors.inc()
        now = time.monotonic()
        with self._lock:
            if now - self._last_warning < WARNING_INTERVAL_SECONDS:
                return
            self._last_warning = now
        log.warning(
            f"rate limit storage unavailable, {self._outcome}",
            error=f"{type(exc).__name__}: {exc}"[:300],
        )
