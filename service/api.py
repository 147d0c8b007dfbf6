"""The price endpoints: current price, batch of prices, history.

Polling etiquette: each answer carries a strong ETag per (symbols, tick) and
``Cache-Control: max-age`` of the whole seconds left in the tick; a matching
``If-None-Match`` gets a 304 with no body.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from functools import lru_cache

import flask

from service.config import SYMBOL_MAX_LENGTH, SYMBOL_PATTERN
from service.errors import ApiError
from service.feed import HISTORY_MAX
from service.prices import TickQuote
from service.state import ServiceState, get_state

bp = flask.Blueprint("prices", __name__)
MAX_BATCH_SYMBOLS = 50  # a batch asks for each symbol at most once; this bounds the parsing
DEFAULT_HISTORY_LIMIT = 10
# What a symbol parameter may be: matched case-insensitively against SYMBOL_PATTERN.
SYMBOL_PARAMETER = f"[A-Za-z0-9]{{1,{SYMBOL_MAX_LENGTH}}}"


@bp.get("/crypto-price")
def crypto_price() -> flask.Response:
    state = get_state()
    symbol = _known_symbol(state, flask.request.args.get("symbol", state.settings.default_symbol))
    now = state.feed.now()
    quote = state.feed.quote(symbol, now)
    return _respond_and_count_polls(
        state,
        tag=_etag(state.settings.price_seed, symbol, quote.tick),
        quotes=(quote,),
        now=now,
        body_prefix=lambda: _single_prefix(quote),
    )


@bp.get("/v1/prices")
def prices() -> flask.Response:
    state = get_state()
    raw = flask.request.args.get("symbols")
    symbols = list(state.feed.symbols) if raw is None else _symbol_list(state, raw)
    now = state.feed.now()
    quotes = tuple(state.feed.quote(symbol, now) for symbol in symbols)
    return _respond_and_count_polls(
        state,
        tag=_etag(state.settings.price_seed, ",".join(symbols), quotes[0].tick),
        quotes=quotes,
        now=now,
        body_prefix=lambda: _batch_prefix(quotes),
    )


@bp.get("/v1/prices/<symbol>/history")
def history(symbol: str) -> flask.Response:
    state = get_state()
    symbol = _known_symbol(state, symbol)
    limit = _history_limit(flask.request.args.get("limit"))
    now = state.feed.now()
    quotes = state.feed.history(symbol, now, limit)
    return _respond_and_count_polls(
        state,
        tag=_etag(state.settings.price_seed, f"{symbol}/history/{limit}", quotes[-1].tick),
        quotes=(quotes[-1],),
        now=now,
        body_prefix=lambda: _json_prefix(
            {
                "symbol": symbol,
                "prices": [
                    {"price": q.price, "tick": q.tick, "updated_at": q.updated_at} for q in quotes
                ],
            }
        ),
    )


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
def _batch_prefix(quotes: tuple[TickQuote, ...]) -> str:
    return _json_prefix({"prices": [_quote_fields(q) for q in quotes]})


def _respond_and_count_polls(
    state: ServiceState,
    tag: str,
    quotes: tuple[TickQuote, ...],
    now: float,
    body_prefix: Callable[[], str],
) -> flask.Response:
    """The response to a poll: 304 to a matching If-None-Match, else the JSON body (the
    tick's cached prefix and this response's timestamp); either way with the ETag and
    Cache-Control, and counted as a fresh or not-modified poll of each symbol."""
    # Only a header that is there needs parsing (werkzeug parses it on first access).
    asked = "HTTP_IF_NONE_MATCH" in flask.request.environ
    not_modified = asked and flask.request.if_none_match.contains_weak(tag)
    if not_modified:
        response = flask.Response(status=304)
    else:
        response = flask.Response(f"{body_prefix()}{now!r}}}", mimetype="application/json")
    # add, not the Response(headers=...) argument: a third of the time per response.
    response.headers.add("ETag", f'"{tag}"')
    response.headers.add(
        "Cache-Control", f"max-age={max(0, math.floor(quotes[0].next_update_at - now))}"
    )
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


def _known_symbol(state: ServiceState, raw: str) -> str:
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
    return list(dict.fromkeys(_known_symbol(state, item) for item in items))


def _history_limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_HISTORY_LIMIT
    if not (len(raw) <= 6 and raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= HISTORY_MAX:
        raise ApiError(
            400,
            "invalid_limit",
            f"limit must be a whole number from 1 to {HISTORY_MAX}.",
        )
    return int(raw)
