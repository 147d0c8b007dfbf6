"""The application factory: ``create_app(settings)`` wires the parts; nothing runs at import."""

from __future__ import annotations

import os

import flask
from werkzeug.middleware.proxy_fix import ProxyFix

from service import api, errors, instrumentation, ops
from service.config import Settings
from service.errors import ApiError
from service.feed import PriceFeed
from service.limiting import RateLimiting
from service.logs import configure_logging
from service.metrics import Metrics
from service.prices import PriceModel
from service.state import EXTENSION, ServiceState


def create_app(settings: Settings | None = None) -> flask.Flask:
    """Build the WSGI application; ``settings`` default to the environment's."""
    if settings is None:
        settings = Settings.from_env(os.environ)
    configure_logging(settings.log_format, settings.log_level)

    app = flask.Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]  # price and timestamp first
    metrics = Metrics(settings.symbols)
    feed = PriceFeed(
        PriceModel(settings.price_seed, settings.symbols),
        list(settings.symbols),
        settings.price_tick_seconds,
        on_new_tick=metrics.observe_new_tick,
    )
    limiting = RateLimiting(settings, metrics)
    app.extensions[EXTENSION] = ServiceState(settings, feed, metrics, limiting)

    instrumentation.init_app(app)
    errors.init_app(app)
    app.register_error_handler(429, _rate_limited)
    limiting.init_app(app, errors.error_response)
    limiting.limit_shared()(api.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(ops.bp)
    metrics.start_rate_limit_series(
        rule.rule for rule in app.url_map.iter_rules() if rule.endpoint.startswith("prices.")
    )

    if settings.trusted_proxies:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=settings.trusted_proxies, x_proto=settings.trusted_proxies
        )
    return app


def _rate_limited(exc: Exception) -> flask.Response:
    limit = getattr(exc, "description", None) or "the configured rate"
    return errors.error_response(
        ApiError(429, "rate_limited", f"Rate limit exceeded ({limit}); retry after Retry-After.")
    )
