"""A Server-Sent Events reader, as the WHATWG EventSource model interprets a stream:
lines of ``field: value``, an event dispatched at each blank line, ``:`` comments
ignored, ``id`` remembered across events (it is what a reconnect sends as
``Last-Event-ID``), ``retry`` a reconnection delay in milliseconds.

Outside input: whatever the bytes, it yields events or nothing, and raises nothing; or,
asked to be ``strict`` (as crypto-poll is), :class:`TooLarge` as soon as a line or an
event passes ``MAX_EVENT_BYTES``, without holding more than that of it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

MAX_EVENT_BYTES = 1 << 20  # data beyond this in one event is dropped with the event
RETRY_DIGITS = re.compile(r"[0-9]{1,9}")


class TooLarge(ValueError):
    """A line or an event longer than MAX_EVENT_BYTES (in strict mode)."""


@dataclass(frozen=True)
class Event:
    data: str
    event: str = "message"
    last_event_id: str = ""  # the stream's last id when this event was dispatched


@dataclass
class EventStream:
    """Feed it lines (without their line ending); it yields the events they complete."""

    last_event_id: str = ""
    retry_ms: int | None = None
    strict: bool = False  # an event over the bound raises TooLarge rather than being dropped

    def __post_init__(self) -> None:
        self._data: list[str] = []
        self._size = 0
        self._event = ""

    def feed(self, lines: Iterable[str]) -> Iterator[Event]:
        for line in lines:
            event = self._line(line)
            if event is not None:
                yield event

    def _line(self, line: str) -> Event | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._size += len(value) + 1
            if self._size <= MAX_EVENT_BYTES:
                self._data.append(value)
            elif self.strict:
                self._data, self._size = [], 0
                raise TooLarge(f"an event larger than {MAX_EVENT_BYTES} bytes")
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry" and RETRY_DIGITS.fullmatch(value):
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> Event | None:
        data, size, event = self._data, self._size, self._event
        self._data, self._size, self._event = [], 0, ""
        if not data or size > MAX_EVENT_BYTES:
            return None
        return Event("\n".join(data), event or "message", self.last_event_id)


def split_lines(chunks: Iterable[bytes], strict: bool = False) -> Iterator[str]:
    """Lines of a byte stream, ended by CRLF, LF or CR, decoded as UTF-8 (errors replaced).
    A line longer than MAX_EVENT_BYTES is dropped, or with ``strict`` raises TooLarge."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        while True:
            match = re.search(rb"\r\n|\n|\r", pending)
            if match is None:
                break
            if match.group() == b"\r" and match.end() == len(pending):
                break  # a CR at the end may be the first half of a CRLF
            yield pending[: match.start()].decode("utf-8", "replace")
            pending = pending[match.end() :]
        if len(pending) > MAX_EVENT_BYTES:
            pending = b""  # a line longer than any event may be: dropped
            if strict:
                raise TooLarge(f"an event-stream line longer than {MAX_EVENT_BYTES} bytes")
    if pending.endswith(b"\r"):  # the stream ended: a CR held back above ends its line
        yield pending[:-1].decode("utf-8", "replace")
