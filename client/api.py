"""One HTTP fetch of the price API, classified: a fresh answer, "not modified", or an error
that says whether it is worth retrying."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import requests

from client.version import USER_AGENT

RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
QUOTE_FIELDS = {
    "price": float,
    "symbol": str,
    "tick": int,
    "updated_at": float,
    "next_update_at": float,
}


class PollError(Exception):
    """A fetch that brought no usable price. ``reason`` is short and safe to print."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RetryableError(PollError):
    """Worth another attempt: connection trouble, a timeout, 429, 502-504, or 500."""

    def __init__(self, reason: str, status: int | None = None, retry_after: float = 0.0) -> None:
        super().__init__(reason)
        self.status = status
        self.retry_after = retry_after


class FatalError(PollError):
    """Retrying would bring the same answer (a 4xx other than 429, or 501 and such)."""

    def __init__(self, reason: str, status: int) -> None:
        super().__init__(reason)
        self.status = status


class BadPayload(PollError):
    """The server answered 200 with something that is not a price document."""


@dataclass(frozen=True)
class Quote:
    symbol: str
    price: float
    tick: int
    updated_at: float
    next_update_at: float
    timestamp: float
    fields: dict[str, Any] = field(compare=False, repr=False)  # everything the API returned


@dataclass(frozen=True)
class Fetched:
    """A successful fetch: fresh quotes, or ``not_modified`` with none."""

    quotes: tuple[Quote, ...]
    not_modified: bool
    etag: str | None
    max_age: float | None  # Cache-Control max-age, when the server sent one
    latency: float
    received_at: float  # local unix time when the answer arrived


class PriceClient:
    """A polite client of the price API: one keep-alive session, timeouts always set,
    conditional requests with the last ETag.

    >>> with PriceClient("http://localhost:5000", ["BTC"]) as client:   # doctest: +SKIP
    ...     client.fetch().quotes[0].price
    """

    def __init__(
        self,
        url: str,
        symbols: list[str] | tuple[str, ...] = (),
        *,
        timeout: float = 5.0,
        api_key: str | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self.symbols = tuple(s.upper() for s in symbols)
        base = url.rstrip("/")
        if len(self.symbols) > 1:
            self.endpoint, self.params = f"{base}/v1/prices", {"symbols": ",".join(self.symbols)}
        else:
            self.endpoint = f"{base}/crypto-price"
            self.params = {"symbol": self.symbols[0]} if self.symbols else {}
        self.timeout = timeout
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        if api_key:
            self.session.headers["X-API-Key"] = api_key
        self.etag: str | None = None
        self.in_flight = False  # true while a request is on the wire (see the CLI's signals)

    def fetch(self) -> Fetched:
        """One request. Raises RetryableError, FatalError or BadPayload."""
        headers = {"If-None-Match": self.etag} if self.etag else {}
        started = time.monotonic()
        self.in_flight = True
        try:
            response = self.session.get(
                self.endpoint, params=self.params, headers=headers, timeout=self.timeout
            )
        except requests.Timeout:
            raise RetryableError(f"timed out after {self.timeout:g} s") from None
        except requests.ConnectionError as exc:
            raise RetryableError(f"connection failed: {_root_cause(exc)}") from None
        except requests.RequestException as exc:
            raise FatalError(f"request failed: {_root_cause(exc)}", 0) from None
        finally:
            self.in_flight = False
        latency = time.monotonic() - started
        received_at = time.time()
        status = response.status_code
        if status == 304:
            return Fetched((), True, self.etag, _max_age(response), latency, received_at)
        if status != 200:
            raise _status_error(response)
        quotes = _parse(response)
        self.etag = response.headers.get("ETag") or None
        return Fetched(quotes, False, self.etag, _max_age(response), latency, received_at)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> PriceClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _status_error(response: requests.Response) -> PollError:
    status = response.status_code
    reason = f"HTTP {status}"
    try:
        body = response.json()
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            reason += f" {body['error']}"
    except ValueError:
        pass
    if status in RETRYABLE_STATUSES or status == 500:
        return RetryableError(
            reason, status, parse_retry_after(response.headers.get("Retry-After"))
        )
    return FatalError(reason, status)


def parse_retry_after(value: str | None, now: float | None = None) -> float:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; 0 if absent."""
    if not value:
        return 0.0
    value = value.strip()
    if value.isdigit():
        return float(int(value[:9]))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return 0.0
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _max_age(response: requests.Response) -> float | None:
    for directive in response.headers.get("Cache-Control", "").split(","):
        name, _, value = directive.strip().partition("=")
        if name.lower() == "max-age" and value.isdigit():
            return float(value)
    return None


def _parse(response: requests.Response) -> tuple[Quote, ...]:
    try:
        body = response.json()
    except ValueError:
        raise BadPayload(_describe_bad_body(response, "not JSON")) from None
    if not isinstance(body, dict):
        raise BadPayload(_describe_bad_body(response, "not a JSON object"))
    items = body.get("prices") if "prices" in body else [body]
    if not isinstance(items, list) or not items:
        raise BadPayload("'prices' is not a non-empty list")
    timestamp = body.get("timestamp")
    if not _is_number(timestamp):
        raise BadPayload("field 'timestamp' is missing or not a number")
    return tuple(_quote(item, float(timestamp)) for item in items)  # type: ignore[arg-type]


def _quote(item: object, timestamp: float) -> Quote:
    if not isinstance(item, dict):
        raise BadPayload("a quote is not a JSON object")
    values: dict[str, Any] = {}
    for name, kind in QUOTE_FIELDS.items():
        value = item.get(name)
        ok = isinstance(value, str) if kind is str else _is_number(value)
        if kind is int and ok:
            ok = float(value).is_integer()  # type: ignore[arg-type]
        if not ok:
            raise BadPayload(f"field {name!r} is missing or not a {kind.__name__}")
        values[name] = kind(value)
    return Quote(**values, timestamp=timestamp, fields={**item, "timestamp": timestamp})


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _describe_bad_body(response: requests.Response, problem: str) -> str:
    content_type = response.headers.get("Content-Type", "no content type")
    return f"{problem} ({content_type}, {len(response.content)} bytes)"


def _root_cause(exc: BaseException) -> str:
    """The innermost exception's text: "[Errno 111] Connection refused", not urllib3's story."""
    for _ in range(10):
        inner = exc.__cause__ or exc.__context__
        if inner is None:
            break
        exc = inner
    text = str(exc) or type(exc).__name__
    return text[:200]
