"""What one application instance holds: built once by ``create_app``, read by the views."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import flask

from service.capacity import HeldConnections

if TYPE_CHECKING:  # the gunicorn config imports this module before prometheus-client
    from service.config import Settings
    from service.fanout import Hub
    from service.feed import PriceFeed
    from service.history_store import HistoryStore
    from service.identity import Identity
    from service.key_store import KeyStore
    from service.key_usage import UsageCounter
    from service.limiting import RateLimiting
    from service.metrics import Metrics
    from service.stream_slots import StreamSlots

EXTENSION = "crypto_service"


@dataclass
class ServiceState:
    settings: Settings
    feed: PriceFeed
    metrics: Metrics
    limiting: RateLimiting
    streams: StreamSlots
    held: HeldConnections  # this worker's streams and long-polls, capped
    hub: Hub  # the fan-out of ticks to this worker's push connections
    history: HistoryStore  # what was served (DATABASE_URL), for the history endpoints
    identity: Identity  # who a request's client is (keys, tokens, addresses)
    keys: KeyStore  # the managed API keys and their usage, in the same database
    usage: UsageCounter  # this worker's counts of each key's requests, not yet written
    # Set on SIGTERM (see gunicorn_conf.post_worker_init): /readyz then answers 503 while
    # the requests in flight finish.
    draining: threading.Event = field(default_factory=threading.Event)

    def start_draining(self) -> None:
        """Readiness off, new streams and long-polls refused, held ones ended."""
        self.draining.set()
        self.hub.drain()
        self.held.drain()


def get_state(app: flask.Flask | None = None) -> ServiceState:
    app = app or flask.current_app
    state: ServiceState = app.extensions[EXTENSION]
    return state
