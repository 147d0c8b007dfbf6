"""The access log: its line's shape, and its buffering (LOG_FLUSH_SECONDS)."""

from __future__ import annotations

import io
import json
import time

import pytest

from service.logs import BufferedLineLogger, access_logger, flush_periodically


class CountingStream(io.StringIO):
    """A text stream that remembers what reached it by a flush."""

    def __init__(self) -> None:
        super().__init__()
        self.flushed = ""

    def flush(self) -> None:
        self.flushed = self.getvalue()


def test_info_lines_wait_in_the_buffer_and_a_warning_flushes_them_all() -> None:
    stream = CountingStream()
    logger = BufferedLineLogger(stream)
    logger.info("one")
    logger.info("two")
    assert stream.getvalue() == "one\ntwo\n" and stream.flushed == ""
    logger.warning("three")
    assert stream.flushed == "one\ntwo\nthree\n"
    logger.error("four")
    assert stream.flushed.endswith("four\n")


def test_buffered_lines_are_flushed_within_the_interval() -> None:
    stream = CountingStream()
    flush_periodically(stream, 0.05)
    BufferedLineLogger(stream).info("waiting")
    deadline = time.monotonic() + 5
    while stream.flushed != "waiting\n" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stream.flushed == "waiting\n"


@pytest.mark.parametrize("flush_seconds", [0.0, 0.5])
def test_access_line_has_the_common_shape(
    capsys: pytest.CaptureFixture[str], flush_seconds: float
) -> None:
    log = access_logger("json", "info", flush_seconds)
    log.log(40, "request", status=500, request_id="abc")
    log.debug("hidden")  # below LOG_LEVEL
    line = json.loads(capsys.readouterr().out)
    assert list(line)[:4] == ["timestamp", "level", "logger", "event"]
    assert line["timestamp"].endswith("Z") and line["level"] == "error"
    assert line["logger"] == "service.access" and line["event"] == "request"
    assert line["status"] == 500 and line["request_id"] == "abc"
