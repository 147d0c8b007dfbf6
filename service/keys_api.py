"""What a key's holder may ask about it: ``POST /v1/tokens`` (a short-lived token that the
stream endpoints take in the URL, for browsers), limited like every other request, and
``GET /v1/usage`` (its limit, what is left of it, and today's counts), which is not: a
client over its limit must still be able to ask when it may go on (as GitHub's
``/rate_limit``). Both need ``X-API-Key``."""

from __future__ import annotations

import math

import flask
import sqlalchemy as sa

from service.errors import ApiError
from service.identity import API_KEY
from service.key_store import DAY_MS
from service.request_facts import facts_of
from service.state import get_state

bp = flask.Blueprint("keys", __name__)  # limited
usage_bp = flask.Blueprint("usage", __name__)  # identified, not limited
MAX_TOKEN_BODY = 1024  # POST /v1/tokens reads no body: a larger one is a mistake


class KeyRequired(ApiError):
    def __init__(self, path: str) -> None:
        super().__init__(401, "unauthorized", f"{path} needs an X-API-Key header.")


def _keyed_client() -> str:
    """The fingerprint of the request's key (the limiter has identified it)."""
    facts = facts_of(flask.request.environ)
    if facts.client_class != API_KEY or facts.client is None:
        raise KeyRequired(flask.request.path)
    return facts.client


def _no_store(response: flask.Response) -> flask.Response:
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/v1/tokens")
def issue_token() -> flask.Response:
    if (flask.request.content_length or 0) > MAX_TOKEN_BODY:
        raise ApiError(
            413,
            "body_too_large",
            f"POST /v1/tokens reads no body (at most {MAX_TOKEN_BODY} bytes).",
        )
    fingerprint = _keyed_client()
    state = get_state()
    token, expires_at = state.identity.issue_token(fingerprint)
    state.metrics.count_token_issued()
    answer = flask.jsonify(
        token=token,
        key=fingerprint,
        expires_at=expires_at,
        expires_in=max(0, expires_at - math.floor(state.feed.now())),
    )
    answer.status_code = 201
    return _no_store(answer)


@usage_bp.get("/v1/usage")
def usage() -> flask.Response:
    fingerprint = _keyed_client()
    state = get_state()
    holder = state.identity.holder(fingerprint)
    if holder is None:  # revoked since the limiter let this request in
        raise KeyRequired(flask.request.path)
    remaining, reset_at = state.limiting.window(holder.client)
    now_ms = int(state.feed.now() * 1000)
    midnight_ms = now_ms - now_ms % DAY_MS  # UTC
    try:
        stored = state.keys.usage(fingerprint, midnight_ms)
    except sa.exc.SQLAlchemyError:
        raise ApiError(
            503,
            "usage_unavailable",
            "The usage counts cannot be read now (the database is not answering).",
            retry_after=1,
        ) from None
    today = stored + state.usage.pending(fingerprint, midnight_ms)
    return _no_store(
        flask.jsonify(
            key=fingerprint,
            name=holder.name,
            limit=holder.limit,
            remaining=remaining,
            reset=math.ceil(reset_at),
            today={
                "from": midnight_ms // 1000,
                "requests": today.requests,
                "rate_limited": today.rate_limited,
                "streams": today.streams,
                "last_request_at": None if today.last_ms is None else today.last_ms / 1000,
            },
        )
    )
