"""The price endpoints: current price and batch of prices (history: history_api.py).

Polling etiquette: each answer carries a strong ETag per (symbols, tick) and
``Cache-Control: max-age`` of the whole seconds left in the tick; a matching
``If-None-Match`` gets a 304 with no body.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any, NamedTuple, Protocol

import flask
from werkzeug.datastructures import ETags
from werkzeug.http import parse_etags, parse_list_header

from service.config import SYMBOL_MAX_LENGTH, SYMBOL_PATTERN
from service.errors import ApiError, ShuttingDown
from service.feed import HISTORY_MAX, parse_tick
from service.prices import TickQuote
from service.request_facts import facts_of
from service.state import ServiceState, get_state

bp = flask.Blueprint("prices", __name__)
LONG_POLL_MAX_SECONDS = 60  # Prefer: wait=N beyond this waits this long
MAX_BATCH_SYMBOLS = 50  # a batch asks for each symbol at most once; this bounds the parsing
# What a symbol parameter may be: matched case-insensitively against SYMBOL_PATTERN.
SYMBOL_PARAMETER = f"[A-Za-z0-9]{{1,{SYMBOL_MAX_LENGTH}}}"


@bp.get("/crypto-price")
def crypto_price() -> flask.Response:
    state = get_state()
    symbol = known_symbol(state, flask.request.args.get("symbol", state.settings.default_symbol))
    seed = state.settings.price_seed

    def current(now: float, tick: int | None = None) -> Polled:
        quote = (
            state.feed.quote(symbol, now) if tick is None else state.feed.at_tick(symbol, tick, now)
        )
        return Polled(_etag(seed, symbol, quote.tick), (quote,), lambda: _single_prefix(quote))

    return _answer_poll(state, current, symbol)


@bp.get("/v1/prices")
def prices() -> flask.Response:
    state = get_state()
    symbols = requested_symbols(state)
    subject, seed = ",".join(symbols), state.settings.price_seed

    def current(now: float, tick: int | None = None) -> Polled:
        if tick is None:
            quotes = tuple(state.feed.quote(symbol, now) for symbol in symbols)
        else:
            quotes = tuple(state.feed.at_tick(symbol, tick, now) for symbol in symbols)
        return Polled(_etag(seed, subject, quotes[0].tick), quotes, lambda: batch_prefix(quotes))

    return _answer_poll(state, current, subject)


def requested_symbols(state: ServiceState) -> list[str]:
    """The ``symbols=`` of a batch request, validated; every symbol when absent."""
    raw = flask.request.args.get("symbols")
    return list(state.feed.symbols) if raw is None else _symbol_list(state, raw)


class Polled(NamedTuple):  # a NamedTuple: this is made on every poll
    """What a price endpoint answers at one moment: its ETag, quotes and body prefix."""

    tag: str
    quotes: tuple[TickQuote, ...]
    body_prefix: Callable[[], str]


class Current(Protocol):
    def __call__(self, now: float, tick: int | None = None) -> Polled: ...


def _answer_poll(state: ServiceState, current: Current, subject: str) -> flask.Response:
    """A poll, or with ``Prefer: wait=N`` a long-poll: while the client's If-None-Match is
    still current, hold the answer until the tick turns (200 with the new prices) or N
    seconds pass (304), and say ``Preference-Applied``. A long-poll whose tag names an
    earlier tick (a client back from an outage) gets the tick after it, so that a client
    catching up sees every tick, as the Consul blocking queries that inspired this do.
    Without Prefer, an ordinary poll."""
    environ = flask.request.environ
    now = state.feed.now()
    polled = current(now)
    client_tags = _client_tags(environ)
    wait = preferred_wait(environ.get("HTTP_PREFER"))
    if wait is not None and client_tags is not None:
        if state.draining.is_set():
            raise ShuttingDown()  # not a 304 at once, which the client would re-ask at once
        if client_tags.contains_weak(polled.tag):
            facts_of(environ).held = True  # its wait is not request latency
            polled, now = _hold_until_the_tick_turns(state, current, polled, wait)
        else:
            behind = _tick_after(state, client_tags, subject, polled.quotes[0].tick)
            if behind is not None:
                polled = current(now, behind)
    response = _respond_and_count_polls(
        state, polled.tag, polled.quotes, now, polled.body_prefix, client_tags
    )
    if wait is not None:
        response.headers.add("Preference-Applied", f"wait={wait}")
    return response


def _tick_after(state: ServiceState, tags: ETags, subject: str, current: int) -> int | None:
    """The tick after the one the client's tag names, when that is one of ours for this
    subject, earlier than ``current`` and no further back than the history reaches."""
    for tag in tags.as_set(include_weak=True):
        if not tag:  # werkzeug reads an empty tag '""' as None, despite its annotation
            continue
        tick = parse_tick(tag.partition("-")[0])
        if (
            tick is not None
            and tag == _etag(state.settings.price_seed, subject, tick)
            and (current - HISTORY_MAX < tick < current)
        ):
            return tick + 1
    return None


def preferred_wait(prefer: str | None) -> int | None:
    """The seconds of an RFC 7240 ``Prefer: wait=N`` (the first ``wait`` preference of
    the comma-separated list; its parameters after ``;`` ignored; the value a token or a
    quoted string of digits, RFC 9111's delta-seconds), capped at LONG_POLL_MAX_SECONDS:
    a value too large to hold is the cap, as RFC 9111 says of delta-seconds. None when
    absent, zero, or not a whole number (``1e400``, ``-3``, ``1.5``: not a wait at all)."""
    if not prefer:
        return None
    for preference in parse_list_header(prefer):
        name, equals, value = preference.partition(";")[0].partition("=")
        if name.strip().lower() != "wait":
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        if not equals or not value.isascii() or not value.isdigit():
            return None
        # More digits than the cap has are more than the cap (and int() is not asked to
        # read ten thousand of them).
        seconds = LONG_POLL_MAX_SECONDS if len(value) > 6 else int(value)
        return min(seconds, LONG_POLL_MAX_SECONDS) or None
    return None


def _hold_until_the_tick_turns(
    state: ServiceState, current: Current, polled: Polled, wait: int
) -> tuple[Polled, float]:
    place = state.held.take()  # one of the worker's held connections, or 503 over_capacity
    deadline = time.monotonic() + wait
    state.metrics.long_polls_waiting.inc()
    try:
        while True:
            now = state.feed.now()
            to_tick = polled.quotes[0].next_update_at - now
            left = deadline - time.monotonic()
            if place.ended.wait(max(0.0, min(to_tick, left))):
                raise ShuttingDown()
            if left <= 0:
                return polled, state.feed.now()  # out of time: a 304
            now = state.feed.now()
            turned = current(now)
            if turned.tag != polled.tag:
                return turned, now
    finally:
        state.metrics.long_polls_waiting.dec()
        place.release()


def _client_tags(environ: dict[str, Any]) -> ETags | None:
    """The request's If-None-Match, parsed only when it is there."""
    asked = environ.get("HTTP_IF_NONE_MATCH")
    return parse_etags(asked) if asked is not None else None


def _quote_fields(quote: TickQuote) -> dict[str, object]:
    return {
        "price": quote.price,
        "symbol": quote.symbol,
        "tick": quote.tick,
        "updated_at": quote.updated_at,
        "next_update_at": quote.next_update_at,
    }


def _json_prefix(fields: dict[str, object]) -> str:
    """The document without its closing brace: ``"timestamp"`` is appended per response."""
    return json.dumps(fields, separators=(",", ":"))[:-1] + ',"timestamp":'


# Everything but the timestamp is the same for a whole tick: serialised once per tick and
# process, not once per request.
@lru_cache(maxsize=64)
def _single_prefix(quote: TickQuote) -> str:
    return _json_prefix(_quote_fields(quote))


@lru_cache(maxsize=64)
def batch_prefix(quotes: tuple[TickQuote, ...]) -> str:
    return _json_prefix({"prices": [_quote_fields(q) for q in quotes]})


def _respond_and_count_polls(
    state: ServiceState,
    tag: str,
    quotes: tuple[TickQuote, ...],
    now: float,
    body_prefix: Callable[[], str],
    client_tags: ETags | None,
) -> flask.Response:
    """The response to a poll: 304 when the client's If-None-Match (``client_tags``) holds
    ``tag``, else the JSON body (the tick's cached prefix and this response's timestamp);
    either way with the ETag and Cache-Control, and counted as a fresh or not-modified
    poll of each symbol."""
    not_modified = client_tags is not None and client_tags.contains_weak(tag)
    if not_modified:
        response = flask.Response(status=304)
    else:
        response = flask.Response(f"{body_prefix()}{now!r}}}", mimetype="application/json")
    # add, not the Response(headers=...) argument: a third of the time per response.
    response.headers.add("ETag", f'"{tag}"')
    response.headers.add("Cache-Control", f"max-age={state.feed.fresh_seconds(now)}")
    outcome = "not_modified" if not_modified else "fresh"
    for quote in quotes:
        state.metrics.count_poll(quote.symbol, outcome)
    return response


@lru_cache(maxsize=1024)
def _etag(seed: str, subject: str, tick: int) -> str:
    # The seed is part of the tag so that two differently seeded deployments behind one
    # URL never validate each other's prices.
    digest = hashlib.blake2b(f"{seed}\x00{subject}".encode(), digest_size=6).hexdigest()
    return f"{tick}-{digest}"


def known_symbol(state: ServiceState, raw: str) -> str:
    symbol = raw.strip().upper()
    if not SYMBOL_PATTERN.match(symbol):
        raise ApiError(
            400,
            "invalid_symbol",
            f"A symbol is 1-{SYMBOL_MAX_LENGTH} letters or digits, such as BTC.",
            valid_symbols=list(state.feed.symbols),
        )
    if symbol not in state.settings.symbols:
        raise ApiError(
            404,
            "unknown_symbol",
            f"Unknown symbol {symbol}; valid symbols: {', '.join(state.feed.symbols)}.",
            valid_symbols=list(state.feed.symbols),
        )
    return symbol


def _symbol_list(state: ServiceState, raw: str) -> list[str]:
    items = raw.split(",")
    if len(items) > MAX_BATCH_SYMBOLS:
        raise ApiError(
            400,
            "too_many_symbols",
            f"At most {MAX_BATCH_SYMBOLS} symbols may be asked for at once.",
        )
    # dict.fromkeys: drop repeats, keep the caller's order.
    return list(dict.fromkeys(known_symbol(state, item) for item in items))
