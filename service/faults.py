"""Fault injection for the price endpoints, off by default (podinfo-style).

``FAULT_LATENCY_MS`` delays every price response; ``FAULT_ERROR_RATE`` answers that share
of them with a 500. Operators use them to watch the dashboard react and alerts fire.
"""

from __future__ import annotations

import random
import time
from functools import partial

import flask

from service.config import Settings
from service.errors import ApiError


def init_app(app: flask.Flask, blueprint: str, settings: Settings) -> None:
    """Inject faults into every endpoint of the named blueprint, if any are configured
    (no hook at all otherwise: it would cost every request something)."""
    if settings.fault_latency_ms or settings.fault_error_rate:
        app.before_request_funcs.setdefault(blueprint, []).append(partial(inject, settings))


def inject(settings: Settings) -> None:
    if settings.fault_latency_ms:
        time.sleep(settings.fault_latency_ms / 1000)
    if settings.fault_error_rate and random.random() < settings.fault_error_rate:
        raise ApiError(500, "injected_fault", "Fault injected by FAULT_ERROR_RATE.")
