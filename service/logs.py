"""Structured logging: one format (JSON or console) for the app, gunicorn and libraries.

structlog renders the service's own events; the standard library's records (gunicorn,
flask-limiter, werkzeug) pass through structlog's ProcessorFormatter, so every line on
stdout has the same shape: ISO-8601 UTC ``timestamp``, ``level``, ``event`` and fields.
"""

from __future__ import annotations

import logging
import logging.config
import sys
from typing import Any

import structlog
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


def _renderer(log_format: str) -> Processor:
    if log_format == "console":
        return structlog.dev.ConsoleRenderer(colors=False)
    return structlog.processors.JSONRenderer()


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
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[log_level.upper()]
        ),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    # Lazy: the logger takes the configuration in force when it is first used.
    return structlog.get_logger(logger_name=name)  # type: ignore[no-any-return]
