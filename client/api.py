"""One HTTP fetch of the price API, classified: a fresh answer, "not modified", or an error
that says whether it is worth retrying."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import requests

from client.payload import (
    MAX_BODY_BYTES,
    BadPayload,
    PollError,
    Quote,
    error_code,
    parse_etag,
    parse_max_age,
    parse_quotes,
    parse_retry_after,
)
from client.version import USER_AGENT

__all__ = [
    "BadPayload",
    "FatalError",
    "Fetched",
    "Fetcher",
    "PollError",
    "PriceClient",
    "Quote",
    "RetryableError",
]

# Worth another attempt; a 500 only once (client/retry.py), the rest within the policy.
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


class RetryableError(PollError):
    """Worth another attempt: connection trouble, a timeout, 429, 502-504, or 500.

    ``kind`` is a bounded label for metrics: ``timeout``, ``connection`` or ``http_<status>``.
    """

    def __init__(
        self,
        reason: str,
        kind: str,
        status: int | None = None,
        retry_after: float = 0.0,
    ) -> None:
        super().__init__(reason)
        self.kind = kind
        self.status = status
        self.retry_after = retry_after


class FatalError(PollError):
    """Retrying would bring the same answer (a 4xx other than 429, or 501 and such)."""

    def __init__(self, reason: str, status: int) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class Fetched:
    """A successful fetch: fresh quotes, or ``not_modified`` with none."""

    quotes: tuple[Quote, ...]
    not_modified: bool
    etag: str | None
    max_age: float | None  # Cache-Control max-age, when the server sent one
    latency: float
    received_at: float  # local unix time when the answer arrived


class Fetcher(Protocol):
    """What the polling loop needs of a transport: the next answer, whether a request is on
    the wire (the CLI abandons one on SIGINT), and how many requests it has sent."""

    in_flight: bool
    # HTTP requests sent so far, as the server counts them: one per poll, one per stream or
    # WebSocket opened (not one per document pushed over it).
    requests_sent: int

    def fetch(self) -> Fetched: ...

    def close(self) -> None: ...


def identifying_headers(api_key: str | None) -> dict[str, str]:
    """What every request of the client carries, whatever the transport: who it is, and
    its API key when it has one."""
    headers = {"User-Agent": USER_AGENT}
    if api_key:
        headers["X-API-Key"] = api_key
    return headers


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
        long_poll_wait: int | None = None,
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
        self.session.headers.update(identifying_headers(api_key))
        # Long-poll: a conditional request also asks the server to hold it until the tick
        # turns (Prefer: wait=N); the read timeout then allows for the wait.
        self.long_poll_wait = long_poll_wait
        self.etag: str | None = None
        self.in_flight = False  # true while a request is on the wire (see the CLI's signals)
        self.requests_sent = 0

    def fetch(self) -> Fetched:
        """One request. Raises RetryableError, FatalError or BadPayload."""
        headers = {"If-None-Match": self.etag} if self.etag else {}
        timeout: float | tuple[float, float] = self.timeout
        if self.etag and self.long_poll_wait:
            headers["Prefer"] = f"wait={self.long_poll_wait}"
            timeout = (self.timeout, self.timeout + self.long_poll_wait)
        started = time.monotonic()
        self.in_flight = True
        self.requests_sent += 1
        try:
            response = self.session.get(
                self.endpoint,
                params=self.params,
                headers=headers,
                timeout=timeout,
                stream=True,  # the body is read below, bounded
            )
            with response:
                content = read_bounded(response)
        except requests.Timeout:
            raise timed_out(self.timeout) from None
        except requests.exceptions.ChunkedEncodingError:
            raise RetryableError(
                "connection broken in the middle of the body", "connection"
            ) from None
        except requests.exceptions.ContentDecodingError:
            raise BadPayload("the body could not be decompressed") from None
        except requests.ConnectionError as exc:
            raise connection_failed(exc) from None
        except requests.RequestException as exc:
            raise request_failed(exc) from None
        finally:
            self.in_flight = False
        latency = time.monotonic() - started
        received_at = time.time()
        status = response.status_code
        max_age = parse_max_age(response.headers.get("Cache-Control"))
        if status == 304:
            return Fetched((), True, self.etag, max_age, latency, received_at)
        if status != 200:
            raise _status_error(response, content)
        if content is None:
            raise BadPayload(f"larger than {MAX_BODY_BYTES} bytes")
        quotes = parse_quotes(content, response.headers.get("Content-Type"))
        self.etag = parse_etag(response.headers.get("ETag"))
        return Fetched(quotes, False, self.etag, max_age, latency, received_at)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> PriceClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def read_bounded(response: requests.Response) -> bytes | None:
    """The body, or None when it is longer than MAX_BODY_BYTES (not read further)."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(chunk_size=65536):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _status_error(response: requests.Response, content: bytes | None) -> PollError:
    return status_error(response.status_code, content, response.headers.get("Retry-After"))


def status_error(status: int, content: bytes | None, retry_after: str | None) -> PollError:
    """The error an answer with this status (and body, and Retry-After) is."""
    reason = f"HTTP {status}"
    code = error_code(content) if content is not None else None
    if code is not None:
        reason += f" {code}"
    if status in RETRYABLE_STATUSES:
        return RetryableError(reason, f"http_{status}", status, parse_retry_after(retry_after))
    return FatalError(reason, status)


def timed_out(seconds: float) -> RetryableError:
    """A request, stream or handshake that got no answer within its timeout."""
    return RetryableError(f"timed out after {seconds:g} s", "timeout")


def connection_failed(exc: BaseException) -> RetryableError:
    """A connection that could not be made, or broke before the answer."""
    return RetryableError(f"connection failed: {root_cause(exc)}", "connection")


def request_failed(exc: BaseException) -> FatalError:
    """A request that could not be made at all (a bad URL, say): retrying cannot help."""
    return FatalError(f"request failed: {root_cause(exc)}", 0)


def root_cause(exc: BaseException) -> str:
    """The innermost exception's text: "[Errno 111] Connection refused", not urllib3's story."""
    for _ in range(10):
        inner = exc.__cause__ or exc.__context__
        if inner is None:
            break
        exc = inner
    text = str(exc) or type(exc).__name__
    return text[:200]
