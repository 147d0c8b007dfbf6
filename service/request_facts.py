"""What the parts of the service learn about one request, handed to the middleware that
records it (``service.instrumentation``): one small record in the WSGI environ.

Whoever knows a fact writes it: the routing, which URL rule matched; the limiter, who the
client is, its class and the rate-limit headers; the error handler, which error it
answered. The middleware reads the record once, at the end. No part reads another's data
model, and nothing else crosses between them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ENVIRON_KEY = "crypto_service.request"
UNMATCHED_ROUTE = "unmatched"  # every path that matches no URL rule shares this label value


@dataclass(slots=True)
class RequestFacts:
    route: str = UNMATCHED_ROUTE  # the matched URL rule, such as "/v1/prices/<symbol>/history"
    client: str | None = None  # who is asking, as logged: an address or a key's fingerprint
    client_class: str | None = None  # the limiter's class of that client, a metric label
    headers: list[tuple[str, str]] = field(default_factory=list)  # for the response
    error: str | None = None  # the error code answered, such as "rate_limited"
    # A refusal sent to an EventSource as a 200 event stream: the status it stands for.
    stands_for: int | None = None
    upgraded: bool = False  # a WebSocket took the connection over (it answered 101 itself)
    # The request's time is a session's or a long-poll's wait, not request latency: it is
    # counted but kept out of http_request_duration_seconds.
    held: bool = False
    # The body is a stream: the request is recorded when it ends, not when it begins.
    streamed: bool = False
    stream_end: str | None = None  # why a stream or WebSocket ended (stream_ends_total's reason)


def facts_of(environ: dict[str, Any]) -> RequestFacts:
    """The request's record, made on first use."""
    facts: RequestFacts | None = environ.get(ENVIRON_KEY)
    if facts is None:
        facts = environ[ENVIRON_KEY] = RequestFacts()
    return facts
