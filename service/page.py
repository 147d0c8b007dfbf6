"""The live price page at ``/``: a Flask template and static files, nothing from another
origin. Not counted against the price budget (no limiter hook on this blueprint); the
API calls the page makes are.

Headers: a Content-Security-Policy without 'unsafe-inline' (scripts and styles are
static files), ``frame-ancestors 'none'``; static files carry ETags (Flask's send_file),
and the vendored chart library, whose path names its version, is cacheable for a year.
"""

from __future__ import annotations

import flask

from service.state import get_state

bp = flask.Blueprint("page", __name__, static_folder="static", static_url_path="/static")

UPLOT_VERSION = "1.6.32"  # vendored by `make vendor` from npm, with its licence
TRANSPORTS = ("poll", "long-poll", "sse", "websocket")
RANGES = ("live", "1h", "24h", "7d")  # the history's ranges (static/history.js charts each)
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
VENDOR_MAX_AGE = 365 * 24 * 3600


@bp.get("/")
def index() -> flask.Response:
    state = get_state()
    transport = flask.request.args.get("transport", "poll")
    if transport not in TRANSPORTS:
        transport = "poll"
    chosen_range = flask.request.args.get("range", "live")
    if chosen_range not in RANGES:
        chosen_range = "live"
    html = flask.render_template(
        "index.html",
        symbols=list(state.feed.symbols),
        tick_seconds=state.feed.tick_seconds,
        transport=transport,
        transports=TRANSPORTS,
        range=chosen_range,
        ranges=RANGES,
        uplot_version=UPLOT_VERSION,
    )
    response = flask.Response(html, mimetype="text/html")
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.get("/favicon.ico")
def favicon() -> flask.Response:
    # Browsers ask for it whatever the page says; the page links the SVG itself.
    return flask.send_from_directory(
        bp.static_folder or "", "favicon.svg", mimetype="image/svg+xml"
    )


@bp.after_request
def _page_headers(response: flask.Response) -> flask.Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    if flask.request.path.startswith("/static/vendor/"):
        response.headers["Cache-Control"] = f"public, max-age={VENDOR_MAX_AGE}, immutable"
    elif flask.request.path.startswith("/static/"):
        response.headers["Cache-Control"] = "no-cache"  # revalidated with the ETag
    return response
