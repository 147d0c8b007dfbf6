"""The application factory: ``create_app(settings)`` wires the parts; nothing runs at import."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable

import flask
from werkzeug.middleware.proxy_fix import ProxyFix

from service import api, errors, faults, history_api, keys_api, ops, page, push
from service.capacity import HeldConnections
from service.config import Settings
from service.database import create_engine
from service.fanout import Hub
from service.feed import PriceFeed
from service.history_store import HistoryStore
from service.identity import CLIENT_CLASSES, Identity
from service.instrumentation import Instrumentation, RoutedFlask
from service.key_registry import KeyRegistry
from service.key_store import KeyStore
from service.key_usage import UsageCounter
from service.limiting import RateLimiting
from service.logs import access_logger, configure_logging
from service.metrics import Metrics
from service.prices import PriceModel
from service.state import EXTENSION, ServiceState
from service.stream_slots import ProcessStreamLedger, StreamSlots, lease_seconds
from service.tokens import TokenSigner


def create_app(
    settings: Settings | None = None, clock: Callable[[], float] = time.time
) -> flask.Flask:
    """Build the WSGI application; ``settings`` default to the environment's, ``clock``
    (unix time) to the system's: tests pin it so that a tick cannot turn mid-test."""
    if settings is None:
        settings = Settings.from_env(os.environ)
    configure_logging(settings.log_format, settings.log_level)

    app = RoutedFlask(__name__, static_folder=None)  # the page blueprint serves them
    # werkzeug answers a path with doubled slashes with a 308 and an HTML body, to a
    # Location built from the Host header (a client's input): here such a path is
    # simply not one of ours, and gets the JSON 404 (no route ends in a slash, so no
    # other redirect is made either).
    app.url_map.merge_slashes = False
    app.json.sort_keys = False  # type: ignore[attr-defined]  # price and timestamp first
    metrics = Metrics(settings.symbols, settings.metrics_dir)
    feed = PriceFeed(
        PriceModel(settings.price_seed, settings.symbols),
        list(settings.symbols),
        settings.price_tick_seconds,
        on_new_tick=metrics.observe_new_tick,
        clock=clock,
    )
    # Connects on the first request that needs it, in the worker that makes it.
    engine = create_engine(settings.database_url)
    keys = KeyStore(engine, clock)
    # Unset (outside gunicorn, whose master makes one for its workers): this app's own.
    signer = TokenSigner(settings.token_secret or secrets.token_urlsafe(32))
    identity = Identity(settings, KeyRegistry(keys, metrics, clock), signer, clock)
    usage = UsageCounter(keys, metrics, clock)
    limiting = RateLimiting(settings, metrics, identity)
    held = HeldConnections(settings.held_cap)
    ledger = limiting.stream_ledger(lease_seconds(settings.stream_heartbeat_seconds))
    streams = StreamSlots(
        settings.max_streams_per_client,
        metrics,
        ledger or ProcessStreamLedger(),
        held,
        retry_after=settings.stream_heartbeat_seconds,
    )
    hub = Hub(
        lambda symbols, tick, now: push.document(feed, symbols, tick, now),
        settings.price_tick_seconds,
        settings.stream_heartbeat_seconds,
        clock=clock,
        on_fanout=metrics.observe_fanout,
    )
    app.extensions[EXTENSION] = ServiceState(
        settings,
        feed,
        metrics,
        limiting,
        streams,
        held,
        hub,
        HistoryStore(engine),
        identity,
        keys,
        usage,
    )

    errors.init_app(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(history_api.bp)
    app.register_blueprint(keys_api.bp)
    app.register_blueprint(keys_api.usage_bp)
    app.register_blueprint(ops.bp)
    push.init_app(app)
    app.register_blueprint(page.bp)
    for limited in (api.bp, history_api.bp, keys_api.bp):
        limiting.init_app(app, limited.name)
    limiting.init_app(app, push.bp.name, accept_tokens=True)  # browsers' streams
    limiting.init_app(app, keys_api.usage_bp.name, counted=False)
    faults.init_app(app, api.bp.name, settings)
    faults.init_app(app, history_api.bp.name, settings)
    metrics.start_rate_limit_series(
        (
            rule.rule
            for rule in app.url_map.iter_rules()
            if rule.endpoint.startswith(
                tuple(bp.name + "." for bp in (api.bp, history_api.bp, keys_api.bp, push.bp))
            )
        ),
        CLIENT_CLASSES,
    )

    if settings.trusted_proxies:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=settings.trusted_proxies, x_proto=settings.trusted_proxies
        )
    # Outermost, so that it sees the client address ProxyFix settled on.
    app.wsgi_app = Instrumentation(  # type: ignore[method-assign]
        app.wsgi_app,
        metrics,
        access_logger(settings.log_format, settings.log_level, settings.log_flush_seconds),
        usage.count,
    )
    return app
