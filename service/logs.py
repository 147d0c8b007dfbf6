"""Structured logging: one format (JSON or console) for the app, gunicorn and libraries.

structlog renders the service's own events; the standard library's records (gunicorn,
werkzeug) pass through structlog's ProcessorFormatter, so every line on
stdout has the same shape: ISO-8601 UTC ``timestamp``, ``level``, ``event`` and fields.
"""

from __future__ import annotations

import datetime
import logging
import logging.config
import os
import sys
import threading
import time
from typing import Any, TextIO

import orjson
import structlog
from gunicorn.glogging import Logger as GunicornLogger
from structlog.typing import Processor


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
    ]


LEADING_KEYS = ("timestamp", "level", "logger", "event")


def _lead_with_common_keys(
    _logger: object, _method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """Put timestamp, level, logger and event first so lines read alike; native
    loggers carry their name as ``logger_name`` (``logger`` is taken by structlog)."""
    if "logger_name" in event:
        event["logger"] = event.pop("logger_name")
    ordered = {key: event.pop(key) for key in LEADING_KEYS if key in event}
    ordered.update(event)
    return ordered


def _dumps(event: Any, **options: Any) -> str:
    # orjson: a fifth of the stdlib's time per line; compact output.
    return orjson.dumps(event, **options).decode()


def _renderer(log_format: str) -> Processor:
    if log_format == "console":
        return structlog.dev.ConsoleRenderer(colors=False)
    return structlog.processors.JSONRenderer(serializer=_dumps)


def _filtering_at(log_level: str) -> type[structlog.typing.FilteringBoundLogger]:
    return structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[log_level.upper()])


def logging_config_dict(log_format: str, log_level: str) -> dict[str, Any]:
    """A dictConfig for the standard library: also used as gunicorn's ``logconfig_dict``."""
    level = log_level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structlog": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    _lead_with_common_keys,
                    _renderer(log_format),
                ],
                "foreign_pre_chain": [
                    *_shared_processors(),
                    structlog.stdlib.add_logger_name,
                ],
            }
        },
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "formatter": "structlog",
            }
        },
        "root": {"level": level, "handlers": ["stdout"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": ["stdout"], "propagate": False},
            # The app logs every request itself; gunicorn's access log would duplicate it.
            "gunicorn.access": {"level": "CRITICAL", "handlers": [], "propagate": False},
            "werkzeug": {"level": "WARNING"},
        },
    }


def configure_logging(log_format: str, log_level: str) -> None:
    """Configure structlog and the standard library once per process, at start-up."""
    logging.config.dictConfig(logging_config_dict(log_format, log_level))
    structlog.configure(
        processors=[
            *_shared_processors(),
            structlog.processors.format_exc_info,
            _lead_with_common_keys,
            _renderer(log_format),
        ],
        wrapper_class=_filtering_at(log_level),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=True,
    )


class BufferedLineLogger:
    """A structlog logger (structlog calls the method named after the level with the
    rendered line) that leaves debug and info lines in the stream's buffer instead of
    flushing after each; a warning or an error flushes at once, with every line before it.
    The buffer is flushed when full and by :func:`flush_periodically`.

    Why: in a threaded gunicorn worker, a flush per request is a write(2) per request,
    and every system call gives up the GIL: a thread switch per request that cost the
    service a sixth of its throughput (bench/NOTES.md).
    """

    def __init__(self, stream: TextIO) -> None:
        self._write = stream.write  # bound once: this runs for every request
        self._flush = stream.flush
        self._lock = threading.Lock()  # one line at a time, whole

    def buffer(self, message: str) -> None:
        with self._lock:
            self._write(message + "\n")

    def write_and_flush(self, message: str) -> None:
        with self._lock:
            self._write(message + "\n")
            self._flush()

    msg = log = debug = info = buffer
    warning = warn = error = err = critical = exception = fatal = failure = write_and_flush


_flushing: set[tuple[int, int]] = set()  # (process, stream) pairs with a flusher thread
_flushing_lock = threading.Lock()


def flush_periodically(stream: TextIO, seconds: float) -> None:
    """Flush ``stream`` every ``seconds`` from a daemon thread: one per stream and process
    (a forked gunicorn worker starts its own)."""
    key = (os.getpid(), id(stream))
    with _flushing_lock:
        if key in _flushing:
            return
        _flushing.add(key)

    def flush_forever() -> None:
        while True:
            time.sleep(seconds)
            try:
                stream.flush()
            except (OSError, ValueError):  # closed at interpreter exit, or a broken pipe
                return

    threading.Thread(target=flush_forever, name="log-flusher", daemon=True).start()


def access_logger(
    log_format: str, log_level: str, flush_seconds: float
) -> structlog.typing.FilteringBoundLogger:
    """The logger of the one line per request: the same shape as every other line, a
    shorter processor chain (it runs on every request's path; its caller passes
    ``request_id`` itself, so it skips merging the context variables), and, unless
    ``flush_seconds`` is 0, buffered output flushed every ``flush_seconds``."""
    output: BufferedLineLogger | structlog.WriteLogger
    if flush_seconds > 0:
        output = BufferedLineLogger(sys.stdout)
        flush_periodically(sys.stdout, flush_seconds)
    else:
        output = structlog.WriteLogger(sys.stdout)
    return structlog.wrap_logger(  # type: ignore[no-any-return]
        output,
        processors=[_stamp_access_line, _renderer(log_format)],
        wrapper_class=_filtering_at(log_level),
        cache_logger_on_first_use=True,
    ).bind(logger="service.access")


def _stamp_access_line(
    _logger: object, method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """What add_log_level, TimeStamper and _lead_with_common_keys do for other lines, in
    one step."""
    now = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
    lead = {"timestamp": now, "level": method, "logger": event.pop("logger")}
    lead["event"] = event.pop("event")
    lead.update(event)
    return lead


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    # Lazy: the logger takes the configuration in force when it is first used.
    return structlog.get_logger(logger_name=name)  # type: ignore[no-any-return]


class ServiceGunicornLogger(GunicornLogger):  # type: ignore[misc]
    """gunicorn's logger without its access log: the app logs each request itself.

    gunicorn builds every access log line (headers, dates, atoms) whenever a logging
    configuration is given, even when the ``gunicorn.access`` logger then drops it: about
    a tenth of a worker's CPU under load (py-spy, bench/NOTES.md).
    """

    access_log_enabled = False

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        return None
