"""JSON errors: every failure is ``{"error": "<code>", "message": "..."}`` with its status.

Never an HTML page and never a traceback: HTTP errors keep their status and headers
(``Allow`` on 405, ``Retry-After`` on 503) and get a JSON body; anything unexpected is
logged with its traceback and answered with a bare 500.
"""

from __future__ import annotations

import re

import flask
from werkzeug.exceptions import HTTPException, InternalServerError

from service.logs import get_logger
from service.request_facts import facts_of

log = get_logger(__name__)

# Codes whose werkzeug names are vaguer than what a client should branch on.
ERROR_CODES = {401: "unauthorized", 429: "rate_limited", 503: "unavailable"}


class ApiError(HTTPException):
    """An error the API raises on purpose, with a stable machine-readable code."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        retry_after: int | None = None,
        **extra: object,
    ) -> None:
        super().__init__(description=message)
        self.code = status
        self.error = error
        self.retry_after = retry_after  # whole seconds, sent as Retry-After when set
        self.extra = extra

    def get_headers(self, *args: object, **kwargs: object) -> list[tuple[str, str]]:
        headers = super().get_headers()
        if self.retry_after is not None:
            headers.append(("Retry-After", str(self.retry_after)))
        return headers


class ShuttingDown(ApiError):
    """A stream or long-poll asked of a worker that is draining: try again (elsewhere)."""

    def __init__(self) -> None:
        super().__init__(
            503, "shutting_down", "This instance is shutting down; retry shortly.", retry_after=1
        )

    def get_headers(self, *args: object, **kwargs: object) -> list[tuple[str, str]]:
        return [*super().get_headers(), ("Connection", "close")]


def snake_code(reason: str) -> str:
    """ "Request Header Fields Too Large" -> "request_header_fields_too_large"."""
    return re.sub(r"[^a-z0-9]+", "_", reason.lower()).strip("_") or "error"


def error_code(exc: HTTPException) -> str:
    if isinstance(exc, ApiError):
        return exc.error
    code = exc.code or 500
    if code in ERROR_CODES:
        return ERROR_CODES[code]
    return snake_code(exc.name or "error")


def error_response(exc: HTTPException) -> flask.Response:
    code = error_code(exc)
    if flask.has_request_context():
        facts_of(flask.request.environ).error = code
    body: dict[str, object] = {
        "error": code,
        "message": exc.description or exc.name,
    }
    if isinstance(exc, ApiError):
        body.update(exc.extra)
    response = flask.jsonify(body)
    response.status_code = exc.code or 500
    for name, value in exc.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def unexpected_error(exc: Exception) -> flask.Response:
    if isinstance(exc, HTTPException):
        return error_response(exc)
    log.exception("unhandled error", error=type(exc).__name__)
    return error_response(InternalServerError(description="Internal server error."))


def init_app(app: flask.Flask) -> None:
    app.register_error_handler(HTTPException, error_response)
    app.register_error_handler(Exception, unexpected_error)
