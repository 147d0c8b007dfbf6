"""Rate limiting: who the client is, how much it may poll, and what it is told.

The client is its API key when the request carries one (unknown keys are refused
with 401 before any counting), else its address, which werkzeug's ProxyFix takes from
``X-Forwarded-For`` only when ``TRUSTED_PROXIES`` says how many hops to trust.
Flask-Limiter counts in ``RATE_LIMIT_STORAGE_URI``; every price endpoint shares one
budget per client. Storage failures fail open by default: the request is served,
``ratelimit_storage_errors_total`` rises and a warning is logged (at most every 10 s).
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import flask
from flask_limiter import Limiter, RouteLimit
from limits import RateLimitItem, WindowStats
from limits.errors import StorageError
from limits.strategies import FixedWindowRateLimiter
from werkzeug.exceptions import HTTPException

from service.config import ApiKey, Settings
from service.logs import get_logger
from service.metrics import Metrics

API_SCOPE = "api"  # the one budget shared by every price endpoint
WARNING_INTERVAL_SECONDS = 10.0
STORAGE_TIMEOUT_SECONDS = 0.25  # a dead Redis must not stall requests for long
log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Client:
    """Who is asking: ``key`` is the rate-limit bucket and the log field."""

    key: str
    client_class: str  # "api_key" or "anonymous", a metric label
    limit: str


class CountingFixedWindow(FixedWindowRateLimiter):
    """limits' fixed window, remembering what its hit learned so that the headers cost no
    further storage call: with Redis, one round trip per request instead of three (INCR,
    then GET and TTL for the headers).

    The count comes back from the INCR. The window's end is known exactly when this hit
    opened the window (count == cost: the key was created with the expiry just now);
    otherwise it is asked of the storage once per window and process, then remembered.
    """

    MAX_REMEMBERED_WINDOWS = 100_000

    def __init__(self, storage: Any) -> None:
        super().__init__(storage)
        self._last_hit = threading.local()
        self._window_ends: dict[str, float] = {}

    def hit(self, item: RateLimitItem, *identifiers: str, cost: int = 1) -> bool:
        key = item.key_for(*identifiers)
        now = time.time()
        count = int(self.storage.incr(key, item.get_expiry(), amount=cost))
        if count == cost:
            self._remember_window_end(key, now + item.get_expiry())
        self._last_hit.value = (key, count)
        return count <= item.amount

    def get_window_stats(self, item: RateLimitItem, *identifiers: str) -> WindowStats:
        key = item.key_for(*identifiers)
        last = getattr(self._last_hit, "value", None)
        if last is None or last[0] != key:
            return super().get_window_stats(item, *identifiers)
        end = self._window_ends.get(key)
        if end is None or end <= time.time():
            end = float(self.storage.get_expiry(key))
            self._remember_window_end(key, end)
        return WindowStats(end, max(0, item.amount - last[1]))

    def _remember_window_end(self, key: str, end: float) -> None:
        if len(self._window_ends) >= self.MAX_REMEMBERED_WINDOWS:
            now = time.time()
            self._window_ends = {k: v for k, v in self._window_ends.items() if v > now}
            if len(self._window_ends) >= self.MAX_REMEMBERED_WINDOWS:
                self._window_ends.clear()
        self._window_ends[key] = end


class InvalidApiKey(HTTPException):
    code = 401
    description = "The X-API-Key header does not name a known API key."


class StorageUnavailable(HTTPException):
    code = 503
    description = "The rate limit storage is unreachable; retry shortly."

    def get_headers(self, *args: object, **kwargs: object) -> list[tuple[str, str]]:
        return [*super().get_headers(), ("Retry-After", "1")]


class RateLimiting:
    """Flask-Limiter configured for this service, plus client identification and headers."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._keys: dict[bytes, ApiKey] = {key.digest: key for key in settings.api_keys}
        # wrap_exceptions: every storage failure arrives as limits' StorageError.
        options: dict[str, Any] = {"wrap_exceptions": True}
        if settings.shared_limit_storage:
            options["socket_timeout"] = STORAGE_TIMEOUT_SECONDS
            options["socket_connect_timeout"] = STORAGE_TIMEOUT_SECONDS
        self.limiter = Limiter(
            key_func=lambda: current_client().key,
            storage_uri=settings.rate_limit_storage_uri,
            storage_options=options,
            strategy=settings.rate_limit_strategy,
            swallow_errors=settings.rate_limit_fail_open,
            headers_enabled=False,  # written by add_headers, with Retry-After on 429s only
            key_prefix="crypto",
        )
        # A private logger per limiter: Flask-Limiter reports the storage errors it
        # swallows only by logging them, with a traceback per request, which must not
        # flood the service's log.
        self._storage_error_handler = _StorageErrorCounter(metrics)
        self.limiter.logger = logging.Logger("flask-limiter")
        self.limiter.logger.addHandler(self._storage_error_handler)

    def init_app(
        self, app: flask.Flask, error_response: Callable[[HTTPException], flask.Response]
    ) -> None:
        # Flask runs before_request hooks in registration order and after_request hooks in
        # reverse: ours go first so a bad key is refused before it is counted, and the
        # headers are written after Flask-Limiter has evaluated the limit.
        app.before_request(self.identify_client)
        app.after_request(self.add_headers)
        self._error_response = error_response
        app.register_error_handler(StorageError, self._refuse_without_storage)
        self.limiter.init_app(app)
        # Only the price endpoints are limited: every other request skips Flask-Limiter's
        # per-request limit resolution at its first check.
        self.limiter.request_filter(lambda: flask.request.blueprint != "prices")
        if self._settings.rate_limit_strategy == "fixed-window":
            # Flask-Limiter builds its strategy from a name; the counting variant is the
            # same algorithm with fewer storage calls (see CountingFixedWindow).
            self.limiter._limiter = CountingFixedWindow(self.limiter._storage)

    def limit_shared(self) -> RouteLimit:
        """The decorator every price endpoint carries."""
        return self.limiter.shared_limit(lambda: current_client().limit, scope=API_SCOPE)

    def identify_client(self) -> None:
        presented = flask.request.headers.get("X-API-Key")
        if presented is None:
            client = Client(
                key=flask.request.remote_addr or "unknown",
                client_class="anonymous",
                limit=self._settings.rate_limit,
            )
        else:
            # Looking the key up by its hash compares secrets without leaking their prefix
            # through timing.
            key = self._keys.get(hashlib.sha256(presented.encode("utf-8", "replace")).digest())
            if key is None:
                flask.g.client = Client("invalid-key", "anonymous", self._settings.rate_limit)
                raise InvalidApiKey()
            client = Client(key=key.fingerprint, client_class="api_key", limit=key.limit)
        flask.g.client = client

    def add_headers(self, response: flask.Response) -> flask.Response:
        """X-RateLimit-*, IETF RateLimit/RateLimit-Policy and, on 429, Retry-After."""
        current = self.limiter.current_limit
        if current is None:
            return response
        try:
            reset_time, remaining = current.window
        except Exception as exc:  # the storage failed after the limit was checked
            self._storage_error_handler.record(exc)
            return response
        amount = current.limit.amount
        window_seconds = current.limit.get_expiry()
        reset_in = max(0, math.ceil(reset_time - time.time()))
        policy = "api-key" if current_client().client_class == "api_key" else "default"
        headers = response.headers
        headers["X-RateLimit-Limit"] = str(amount)
        headers["X-RateLimit-Remaining"] = str(max(0, remaining))
        headers["X-RateLimit-Reset"] = str(math.ceil(reset_time))
        headers["RateLimit-Policy"] = f'"{policy}";q={amount};w={window_seconds}'
        headers["RateLimit"] = f'"{policy}";r={max(0, remaining)};t={reset_in}'
        if response.status_code == 429:
            headers["Retry-After"] = str(max(1, reset_in))
        return response

    def _refuse_without_storage(self, exc: StorageError) -> flask.Response:
        """Fail closed (RATE_LIMIT_FAIL_OPEN=false): 503 rather than serve uncounted."""
        self._storage_error_handler.record(exc)
        return self._error_response(StorageUnavailable())


def current_client() -> Client:
    client: Client | None = flask.g.get("client")
    if client is None:  # a request that never reached identify_client (e.g. 404 routing)
        client = Client(flask.request.remote_addr or "unknown", "anonymous", "")
    return client


class _StorageErrorCounter(logging.Handler):
    """Counts Flask-Limiter's swallowed storage errors and logs a throttled warning.

    Flask-Limiter reports a storage failure it swallowed (fail-open) only by logging it
    with the exception attached; that log record is the hook it offers.
    """

    def __init__(self, metrics: Metrics) -> None:
        super().__init__(level=logging.ERROR)
        self._metrics = metrics
        self._lock = threading.Lock()
        self._last_warning = -math.inf

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.record(record.exc_info[1])

    def record(self, exc: BaseException) -> None:
        self._metrics.limiter_storage_errors.inc()
        now = time.monotonic()
        with self._lock:
            if now - self._last_warning < WARNING_INTERVAL_SECONDS:
                return
            self._last_warning = now
        log.warning(
            "rate limit storage unavailable, serving without limits",
            error=f"{type(exc).__name__}: {exc}"[:300],
        )
