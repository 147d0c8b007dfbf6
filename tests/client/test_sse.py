"""The SSE reader: the EventSource model's rules, and nothing raised on any bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.sse import MAX_EVENT_BYTES, Event, EventStream, TooLarge, split_lines


def events(raw: bytes, chunk: int = 7) -> tuple[list[Event], EventStream]:
    stream = EventStream()
    chunks = [raw[i : i + chunk] for i in range(0, len(raw), chunk)]
    return list(stream.feed(split_lines(chunks))), stream


def test_events_ids_retry_and_comments() -> None:
    raw = (
        b"retry: 2000\n\n"
        b": heartbeat\n\n"
        b'id: 41\ndata: {"a": 1}\n\n'
        b"id: 42\r\ndata: one\r\ndata: two\r\n\r\n"
        b"event: other\rdata:three\r\r"
    )
    found, stream = events(raw)
    assert found == [
        Event('{"a": 1}', "message", "41"),
        Event("one\ntwo", "message", "42"),
        Event("three", "other", "42"),
    ]
    assert stream.retry_ms == 2000 and stream.last_event_id == "42"


def test_an_event_without_its_blank_line_is_not_dispatched() -> None:
    found, stream = events(b"id: 7\ndata: cut short")
    assert found == [] and stream.last_event_id == "7"


def test_bad_retry_and_null_ids_are_ignored() -> None:
    found, stream = events(b"retry: soon\nretry: \xc2\xb2\nid: a\x00b\ndata: x\n\n")
    assert stream.retry_ms is None and found == [Event("x", "message", "")]


@given(st.binary(max_size=3000), st.integers(min_value=1, max_value=64))
def test_any_bytes_yield_events_or_nothing(raw: bytes, chunk: int) -> None:
    found, stream = events(raw, chunk)
    assert all(isinstance(event.data, str) for event in found)
    assert stream.retry_ms is None or 0 <= stream.retry_ms < 10**9


TEXT = st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n")


@given(st.lists(st.text(alphabet=TEXT, max_size=40)))
def test_data_lines_come_back_as_sent(lines: list[str]) -> None:
    raw = "".join(f"data: {line}\n" for line in lines) + "\n"
    found, _ = events(raw.encode())
    assert found == ([Event("\n".join(lines))] if lines else [])


def strict_events(raw: bytes, chunk: int) -> list[Event]:
    stream = EventStream(strict=True)
    chunks = [raw[i : i + chunk] for i in range(0, len(raw), chunk)]
    return list(stream.feed(split_lines(chunks, strict=True)))


# Past the bound: one line, or an event of many lines (each adds its value and a newline).
LINES_PAST = MAX_EVENT_BYTES // 1001 + 1
LONG = st.sampled_from(
    [b"data: " + b"x" * MAX_EVENT_BYTES, (b"data: " + b"y" * 1000 + b"\n") * LINES_PAST]
)


@settings(max_examples=15, deadline=None)
@given(before=st.binary(max_size=200), long=LONG, after=st.binary(max_size=200))
def test_strict_any_bytes_yield_events_or_too_large_past_the_bound(
    before: bytes, long: bytes, after: bytes
) -> None:
    # Within the bound the same events as the browser's model; past it, TooLarge, raised
    # as soon as the bound is passed.
    assert strict_events(before, 4096) == events(before, 4096)[0]
    with pytest.raises(TooLarge):
        strict_events(before + b"\n\n" + long + after, 65536)


def test_not_strict_an_event_past_the_bound_is_dropped_and_the_next_one_comes() -> None:
    raw = (b"data: " + b"y" * 1000 + b"\n") * LINES_PAST + b"\ndata: next\n\n"
    assert [event.data for event in events(raw, 65536)[0]] == ["next"]
