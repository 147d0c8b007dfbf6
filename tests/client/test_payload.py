"""The parsers of what a server sends: the body and the header hints. Whatever the bytes,
they return a value or raise BadPayload, nothing else (hypothesis)."""

from __future__ import annotations

import json
import time
from email.utils import formatdate

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.cli import format_quote
from client.payload import (
    MAX_HINT_SECONDS,
    BadPayload,
    Quote,
    error_code,
    media_type,
    parse_etag,
    parse_max_age,
    parse_quotes,
    parse_retry_after,
)

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)
QUOTE_KEYS = ["price", "timestamp", "symbol", "tick", "updated_at", "next_update_at", "prices"]
# Documents shaped like quotes, with every field of any type: the paths past the first check.
QUOTE_LIKE = st.dictionaries(st.sampled_from(QUOTE_KEYS), JSON_VALUES, max_size=7)
BATCH_LIKE = st.fixed_dictionaries(
    {"timestamp": JSON_VALUES, "prices": st.lists(QUOTE_LIKE | JSON_VALUES, max_size=4)}
)


def parsed_or_refused(content: bytes) -> tuple[Quote, ...] | None:
    try:
        return parse_quotes(content, "application/json")
    except BadPayload as error:
        reason = error.reason
    assert "\n" not in reason and len(reason) < 200
    return None


def check_printable(quotes: tuple[Quote, ...] | None) -> None:
    """Every parsed quote can be printed in both formats, after itself too."""
    for quote in quotes or ():
        for output in ("text", "json"):
            assert format_quote(quote, None, output)
            assert format_quote(quote, quote, output)


@given(st.binary(max_size=2000))
def test_arbitrary_bytes_are_quotes_or_bad_payload(content: bytes) -> None:
    check_printable(parsed_or_refused(content))


@given(JSON_VALUES | QUOTE_LIKE | BATCH_LIKE)
def test_arbitrary_json_values_are_quotes_or_bad_payload(value: object) -> None:
    content = json.dumps(value).encode()  # NaN and Infinity included, as Python writes them
    quotes = parsed_or_refused(content)
    check_printable(quotes)
    for quote in quotes or ():
        assert isinstance(quote.price, float) and isinstance(quote.timestamp, float)
        assert quote.tick is None or isinstance(quote.tick, int)
        assert quote.period is None or quote.period > 0


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_arbitrary_header_values_are_a_hint_or_nothing(value: str) -> None:
    latin1 = value.encode("utf-8", "replace").decode("latin-1")  # what requests hands over
    for header in (value, latin1):
        wait = parse_retry_after(header)
        assert 0.0 <= wait <= MAX_HINT_SECONDS
        age = parse_max_age(header)
        assert age is None or 0.0 <= age <= MAX_HINT_SECONDS
        etag = parse_etag(header)
        assert etag is None or (etag.isprintable() and "\n" not in etag)
        code = error_code(json.dumps({"error": header}).encode())
        assert code is None or (code == header and code.isidentifier())


def test_the_documents_that_once_crashed_the_client() -> None:
    for content, fragment in (
        (b'{"price": ' + b"9" * 400 + b', "timestamp": 1}', "'price'"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deep"),
        (b'{"price": 1e400, "timestamp": 1}', "'price'"),
    ):
        with pytest.raises(BadPayload, match=fragment):
            parse_quotes(content)


def test_digit_hints_accept_ascii_digits_only() -> None:
    assert parse_retry_after("\u00b2") == 0.0
    assert parse_retry_after("\u0664") == 0.0  # ARABIC-INDIC DIGIT FOUR
    assert parse_max_age("max-age=\u00b2") is None
    assert parse_max_age("public, MAX-AGE=2") == 2.0
    assert parse_retry_after("99999999999") == MAX_HINT_SECONDS


@pytest.mark.parametrize(
    ("cache_control", "seconds"),
    [
        ("max-age=5", 5.0),
        ('max-age="5"', 5.0),  # a quoted-string value, which RFC 9111 has recipients take
        ('no-cache="a, max-age=60", max-age=5', 5.0),  # not the one inside the quotes
        ('private="x,y", max-age=7', 7.0),
        ('no-cache="a, max-age=60, b"', None),
        ("max-age=5, max-age=9", 5.0),  # the first occurrence, as RFC 9111 says
        ("max-age=", None),
        ('max-age="5', None),
        ("max-age=-1", None),
        ("no-store", None),
    ],
)
def test_max_age_is_read_as_rfc_9111_writes_it(cache_control: str, seconds: float | None) -> None:
    assert parse_max_age(cache_control) == seconds


@pytest.mark.parametrize(
    ("content_type", "found"),
    [
        ("text/event-stream", "text/event-stream"),
        ("Text/Event-Stream; charset=UTF-8", "text/event-stream"),
        (" text/event-stream ;", "text/event-stream"),
        ("text/event-streams", "text/event-streams"),
        ("text/event-stream x", None),
        ('"text/event-stream"', None),
        ("text", None),
        ("a/b/c", None),
        ("", None),
        (None, None),
    ],
)
def test_a_media_type_is_its_type_and_subtype_lower_cased(
    content_type: str | None, found: str | None
) -> None:
    assert media_type(content_type) == found


@given(st.text(max_size=80))
def test_any_content_type_is_read_without_error(content_type: str) -> None:
    found = media_type(content_type)
    assert found is None or (found.count("/") == 1 and found == found.lower())


def test_retry_after_in_seconds_or_http_date() -> None:
    now = time.time()
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30, abs=1)
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon") == 0.0
    assert parse_retry_after(None) == 0.0


def test_etags_are_kept_only_when_they_can_be_sent_back() -> None:
    assert parse_etag('"abc"') == '"abc"'
    assert parse_etag(' W/"abc" ') == 'W/"abc"'
    for bad in ("abc", '"a"b"', '"a\x7f"', '"a\nb"', '"' + "x" * 300 + '"'):
        assert parse_etag(bad) is None


def test_text_line_of_the_seed_document_is_the_seed_line_with_the_change() -> None:
    first = parse_quotes(b'{"price": 101.23, "timestamp": 1692789123.45}')[0]
    second = parse_quotes(b'{"price": 100.0, "timestamp": 1692789125.45}')[0]
    assert format_quote(first, None, "text") == "Price: $101.23 | Time: 1692789123.45 | change: n/a"
    assert format_quote(second, first, "text") == (
        "Price: $100.00 | Time: 1692789125.45 | change: -1.23 (-1.22%)"
    )
    zero = parse_quotes(b'{"price": 0, "timestamp": 1}')[0]
    assert format_quote(second, zero, "text").endswith("change: +100.00")
