"""What a price server sent, read defensively: the body into quotes, and the headers that
are hints (Retry-After, Cache-Control max-age, ETag).

Only ``price`` (a finite number) and ``timestamp`` are required of a quote: that is all the
seed's server sends. Everything else is an optional hint, used when it is present and
well-formed and ignored otherwise. A body that is not a price document raises
:class:`BadPayload`; a malformed header is an absent hint. Nothing here raises anything
else, whatever the bytes (tests/client/test_payload.py proves it with hypothesis).
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.request import parse_http_list

MAX_BODY_BYTES = 1 << 20  # a price document is a few hundred bytes; refuse to hold more
MAX_DEPTH = 32  # nesting a price document never needs; deeper bodies are refused
MAX_HINT_SECONDS = 3600.0  # Retry-After and max-age beyond an hour are taken as an hour
MAX_TICK_SECONDS = 86400.0  # a tick period beyond a day is not a tick grid
MAX_SAFE_INTEGER = 2**53  # ticks beyond this cannot survive a float or a JSON reader
SYMBOL = re.compile(r"[A-Za-z0-9._:/-]{1,32}")
DIGITS = re.compile(r"[0-9]{1,12}")  # ASCII only: str.isdigit also accepts "²"
ENTITY_TAG = re.compile(r'(W/)?"[\x21\x23-\x7e\x80-\xff]{0,250}"')
ERROR_CODE = re.compile(r"[a-z_]{1,64}")
_TCHARS = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"  # RFC 9110's token
MEDIA_TYPE = re.compile(rf"[ \t]*({_TCHARS}/{_TCHARS})[ \t]*(?:;.*)?", re.DOTALL)


class PollError(Exception):
    """A fetch that brought no usable price. ``reason`` is short and safe to print."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.attempts = 1  # requests made for the poll that failed (set by the retries)


class BadPayload(PollError):
    """The server answered 200 with something that is not a price document."""


@dataclass(frozen=True)
class Quote:
    """One price as the server stated it; the hints are None when absent or malformed."""

    price: float
    timestamp: float  # server time of the answer, unix seconds
    symbol: str | None = None
    tick: int | None = None
    updated_at: float | None = None  # server time the price was set
    next_update_at: float | None = None  # server time the next price is due
    fields: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def period(self) -> float | None:
        """The tick period the hints describe, when they describe one."""
        if self.updated_at is None or self.next_update_at is None:
            return None
        period = self.next_update_at - self.updated_at
        return period if 0 < period <= MAX_TICK_SECONDS else None


def parse_quotes(content: bytes, content_type: str | None = None) -> tuple[Quote, ...]:
    """The quotes of a single-price document (``{"price", "timestamp", ...}``) or of a
    batch (``{"prices": [...], "timestamp"}``)."""
    described = f"{(content_type or 'no content type')[:64]}, {len(content)} bytes"
    body = load_json(content, described)
    if not isinstance(body, dict):
        raise BadPayload(f"not a JSON object ({described})")
    timestamp = finite_number(body.get("timestamp"))
    if timestamp is None:
        raise BadPayload("field 'timestamp' is missing or not a finite number")
    items = body.get("prices") if "prices" in body else [body]
    if not isinstance(items, list) or not items:
        raise BadPayload("'prices' is not a non-empty list")
    return tuple(_quote(item, timestamp) for item in items)


def load_json(content: bytes, described: str = "") -> object:
    """JSON from bytes (UTF-8, -16 or -32), refused with BadPayload when it is not JSON,
    larger than MAX_BODY_BYTES or nested deeper than MAX_DEPTH."""
    described = described or f"{len(content)} bytes"
    if len(content) > MAX_BODY_BYTES:
        raise BadPayload(f"larger than {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(content)
    except RecursionError:
        raise BadPayload(f"JSON nested too deep ({described})") from None
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        raise BadPayload(f"not JSON ({described})") from None
    if _deeper_than(body, MAX_DEPTH):
        raise BadPayload(f"JSON nested deeper than {MAX_DEPTH} levels ({described})")
    return body


def error_code(content: bytes) -> str | None:
    """The ``error`` code of a JSON error body such as the service's, if it has a sane one."""
    try:
        body = load_json(content)
    except BadPayload:
        return None
    code = body.get("error") if isinstance(body, dict) else None
    return code if isinstance(code, str) and ERROR_CODE.fullmatch(code) else None


def parse_retry_after(value: str | None, now: float | None = None) -> float:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date, at most
    MAX_HINT_SECONDS; 0 when absent or malformed."""
    if not value:
        return 0.0
    value = value.strip()
    if DIGITS.fullmatch(value):
        return min(float(value), MAX_HINT_SECONDS)
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return 0.0
    wait = when - (time.time() if now is None else now)
    return min(max(0.0, wait), MAX_HINT_SECONDS) if math.isfinite(wait) else 0.0


def parse_max_age(cache_control: str | None) -> float | None:
    """``max-age`` of a Cache-Control header in seconds (at most MAX_HINT_SECONDS), or None.

    Read as RFC 9111 writes it: the list split outside quoted strings (a comma or a
    ``max-age`` inside another directive's quoted value is not one), the value a token
    or a quoted string."""
    for directive in parse_http_list(cache_control or ""):
        name, _, value = directive.strip().partition("=")
        if name.lower() != "max-age":
            continue
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        return min(float(value), MAX_HINT_SECONDS) if DIGITS.fullmatch(value) else None
    return None


def media_type(content_type: str | None) -> str | None:
    """The media type of a Content-Type header (RFC 9110's ``type/subtype``, before any
    parameters), lower-cased as a browser compares it; None when there is none."""
    found = MEDIA_TYPE.fullmatch(content_type or "")
    return found.group(1).lower() if found else None


def parse_etag(value: str | None) -> str | None:
    """The ETag to send back in If-None-Match, or None if it is not an entity tag (it
    could not be sent back safely, and conditional requests then simply stop)."""
    if value is None:
        return None
    value = value.strip()
    return value if ENTITY_TAG.fullmatch(value) else None


def finite_number(value: object) -> float | None:
    """A JSON number that is a finite float, or None (booleans, huge integers and NaN too)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer of 400 digits
        return None
    return number if math.isfinite(number) else None


def _quote(item: object, timestamp: float) -> Quote:
    if not isinstance(item, dict):
        raise BadPayload("a quote is not a JSON object")
    price = finite_number(item.get("price"))
    if price is None:
        raise BadPayload("field 'price' is missing or not a finite number")
    symbol = item.get("symbol")
    return Quote(
        price=price,
        timestamp=timestamp,
        symbol=symbol if isinstance(symbol, str) and SYMBOL.fullmatch(symbol) else None,
        tick=_tick(item.get("tick")),
        updated_at=finite_number(item.get("updated_at")),
        next_update_at=finite_number(item.get("next_update_at")),
        fields={**item, "timestamp": timestamp},
    )


def _tick(value: object) -> int | None:
    number = finite_number(value)
    if number is None or not number.is_integer() or abs(number) > MAX_SAFE_INTEGER:
        return None
    return int(number)


def _deeper_than(value: object, limit: int) -> bool:
    """Whether ``value`` nests containers more than ``limit`` deep (iteratively: no
    recursion on outside input)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        current, depth = stack.pop()
        children: Any
        if isinstance(current, dict):
            children = current.values()
        elif isinstance(current, list):
            children = current
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False
