"""The OpenAPI 3.2 document of every endpoint, precise enough to fuzz the service against."""

from __future__ import annotations

from typing import Any

from service.api import MAX_BATCH_SYMBOLS, SYMBOL_PARAMETER
from service.config import Settings
from service.feed import HISTORY_MAX, TICK_PATTERN
from service.history_api import (
    CANDLE_INTERVALS,
    DEFAULT_CANDLES,
    DEFAULT_HISTORY_LIMIT,
    DEFAULT_STATS_WINDOW,
    MAX_CANDLES,
    STATISTICS,
    STATS_WINDOWS,
    TIME_SCHEMA,
    UNAVAILABLE_RETRY_SECONDS,
)
from service.identity import TOKEN_PARAMETER
from service.keys_api import MAX_TOKEN_BODY
from service.tokens import TOKEN_PATTERN
from service.version import __version__

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}},
        "content": {JSON: {"schema": _ref("Error")}},
    }


def _polled(description: str, schema: str) -> dict[str, Any]:
    """The responses of a rate-limited, conditional price endpoint."""
    headers = {
        name: {"$ref": f"#/components/headers/{name}"}
        for name in (
            "ETag",
            "Cache-Control",
            "X-Request-ID",
            "RateLimit",
            "RateLimit-Policy",
            "Preference-Applied",
        )
    }
    return {
        "200": {
            "description": description,
            "headers": headers,
            "content": {JSON: {"schema": _ref(schema)}},
        },
        "304": {
            "description": "Not modified: the If-None-Match tag is still current.",
            "headers": headers,
        },
        "400": _error("Malformed parameter."),
        "401": _error("Unknown X-API-Key."),
        "404": _error("Unknown symbol."),
        "429": {
            **_error("Rate limit exceeded; retry after Retry-After seconds."),
            "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
        },
        "500": _error("Injected fault (FAULT_ERROR_RATE) or internal error."),
        "503": _error(
            "Rate limit storage unreachable and RATE_LIMIT_FAIL_OPEN=false, a long-poll "
            "asked of an instance that is shutting down (Retry-After: 1), or a key while the "
            "managed keys cannot be read yet (keys_unavailable, Retry-After: 1)."
        ),
    }


def _json_text(schema: str) -> dict[str, Any]:
    """A string field (an event's data) that holds a JSON document of ``schema``."""
    return {"type": "string", "contentMediaType": JSON, "contentSchema": _ref(schema)}


def _stored(description: str, schema: str, csv: bool = True) -> dict[str, Any]:
    """The responses of a history endpoint: a poll's, CSV too, and a 503 of its own."""
    responses = _polled(description, schema)
    if csv:
        responses["200"]["content"]["text/csv"] = {"schema": {"type": "string"}}
    responses["503"] = {
        **_error(
            "The history database is not answering (history_unavailable, Retry-After: "
            f"{UNAVAILABLE_RETRY_SECONDS}), or the rate limit storage is down."
        ),
        "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
    }
    return responses


def _time(name: str, meaning: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": f"{meaning}: unix seconds or an RFC 3339 time with its offset.",
        "schema": {**TIME_SCHEMA, "examples": ["1796000000", "2026-12-01T12:00:00Z"]},
    }


def _refusals(websocket: bool = False) -> dict[str, Any]:
    """What opening a stream may be refused with (an event stream's refusals go to
    clients that do not ask for text/event-stream; those that do get a 200)."""
    refusals = {
        "400": _error("Malformed parameter."),
        "401": _error(
            "Unknown X-API-Key (unauthorized), or a token that is not this service's "
            "(invalid_token), has expired (token_expired) or whose key was revoked "
            "(token_revoked): get a new one with POST /v1/tokens."
        ),
        "404": _error("Unknown symbol."),
        "429": {
            **_error(
                "Rate limit exceeded (rate_limited), or MAX_STREAMS_PER_CLIENT open already "
                "(too_many_streams: Retry-After is a heartbeat, within which a closed stream's "
                "place is freed)."
            ),
            "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
        },
        "503": {
            **_error(
                "Shutting down (shutting_down, Retry-After: 1), the worker holds as many "
                "streams and long-polls as it may (over_capacity, Retry-After 2-6), or the "
                "rate limit storage is down (unavailable)."
            ),
            "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
        },
    }
    if websocket:
        refusals["403"] = _error("An Origin not allowed (ALLOWED_ORIGINS): forbidden_origin.")
    return refusals


# A stream endpoint's key may come as a token in the URL (browsers: service/tokens.py).
STREAM_SECURITY: list[dict[str, list[str]]] = [{}, {"apiKey": []}, {"streamToken": []}]
TOKEN_PARAMETER_DOC = {
    "name": TOKEN_PARAMETER,
    "in": "query",
    "required": False,
    "description": "A token from POST /v1/tokens, for clients that cannot send X-API-Key "
    "(EventSource, a browser's WebSocket); X-API-Key wins when both are sent.",
    "schema": {"type": "string"},
}


def _get(
    summary: str,
    responses: dict[str, Any],
    parameters: list[Any] | None = None,
    conditional: bool = False,
    keyed: bool = False,
    long_poll: bool = False,
    tokens: bool = False,
) -> dict[str, Any]:
    """A GET operation; ``conditional`` takes If-None-Match, ``keyed`` an optional API key
    (``tokens``: or a token), ``long_poll`` a Prefer: wait=N."""
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    params = [{"$ref": "#/components/parameters/X-Request-ID"}, *(parameters or [])]
    if conditional:
        params.append({"$ref": "#/components/parameters/If-None-Match"})
    if long_poll:
        params.append({"$ref": "#/components/parameters/Prefer"})
    if keyed:
        operation["security"] = STREAM_SECURITY if tokens else [{}, {"apiKey": []}]
    operation["parameters"] = params
    return {"get": operation}


def _key_paths() -> dict[str, Any]:
    """What a key's holder may ask about it (service/keys_api.py)."""
    keyed_errors = {
        "401": _error("No X-API-Key, or an unknown one."),
        "429": {
            **_error("Rate limit exceeded; retry after Retry-After seconds."),
            "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
        },
        "500": _error("Injected fault (FAULT_ERROR_RATE) or internal error."),
    }
    unavailable = {
        **_error(
            "The database is not answering (usage_unavailable), the managed keys cannot be "
            "read yet (keys_unavailable), or the rate limit storage is down."
        ),
        "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
    }
    token = {
        "summary": "A short-lived token standing for the request's key, for the stream "
        f"endpoints' `{TOKEN_PARAMETER}` parameter (EventSource and a browser's WebSocket "
        "cannot send headers). It expires after TOKEN_TTL and stops with its key. The "
        f"request has no body (at most {MAX_TOKEN_BODY} bytes are accepted and ignored).",
        "security": [{"apiKey": []}],
        "parameters": [{"$ref": "#/components/parameters/X-Request-ID"}],
        "responses": {
            "201": {
                "description": "The token.",
                "headers": {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}},
                "content": {JSON: {"schema": _ref("Token")}},
            },
            **keyed_errors,
            "413": _error("A body over the bound."),
            "503": unavailable,
        },
    }
    usage = _get(
        "The request's key: its limit, what is left of it in the current window, and "
        "today's counts (UTC) of its requests before this one (those of other workers "
        "within about a second). Not rate limited itself.",
        {
            "200": {
                "description": "The key's usage.",
                "headers": {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}},
                "content": {JSON: {"schema": _ref("Usage")}},
            },
            "401": keyed_errors["401"],
            "500": keyed_errors["500"],
            "503": unavailable,
        },
    )
    usage["get"]["security"] = [{"apiKey": []}]
    return {"/v1/tokens": {"post": token}, "/v1/usage": usage}


def _key_schemas() -> dict[str, Any]:
    count = {"type": "integer", "minimum": 0}
    return {
        "Token": {
            "type": "object",
            "required": ["token", "key", "expires_at", "expires_in"],
            "properties": {
                "token": {"type": "string", "pattern": TOKEN_PATTERN.pattern},
                "key": {"type": "string", "description": "The key's fingerprint."},
                "expires_at": {"type": "integer", "description": "Unix seconds."},
                "expires_in": {"type": "integer", "minimum": 0},
            },
        },
        "Usage": {
            "type": "object",
            "required": ["key", "name", "limit", "remaining", "reset", "today"],
            "properties": {
                "key": {"type": "string", "description": "The key's fingerprint."},
                "name": {"type": ["string", "null"], "description": "null for API_KEYS'."},
                "limit": {"type": "string", "examples": ["600/minute"]},
                "remaining": count,
                "reset": {"type": "integer", "description": "Unix seconds."},
                "today": {
                    "type": "object",
                    "required": ["from", "requests", "rate_limited", "streams"],
                    "properties": {
                        "from": {"type": "integer", "description": "UTC midnight, unix s."},
                        "requests": count,
                        "rate_limited": count,
                        "streams": count,
                        "last_request_at": {"type": ["number", "null"]},
                    },
                },
            },
        },
    }


def openapi_document(settings: Settings) -> dict[str, Any]:
    symbols = list(settings.symbols)
    symbol_schema = {"type": "string", "pattern": f"^{SYMBOL_PARAMETER}$", "examples": [symbols[0]]}
    symbol_list = f"^{SYMBOL_PARAMETER}(,{SYMBOL_PARAMETER}){{0,{MAX_BATCH_SYMBOLS - 1}}}$"
    symbols_parameter = {
        "name": "symbols",
        "in": "query",
        "required": False,
        "description": "Comma-separated symbols (default: all).",
        "schema": {"type": "string", "pattern": symbol_list, "examples": [",".join(symbols[:2])]},
    }
    quote: dict[str, Any] = {
        "type": "object",
        "required": ["price", "timestamp", "symbol", "tick", "updated_at", "next_update_at"],
        "properties": {
            "price": {"type": "number", "description": "Price rounded to cents."},
            "timestamp": {"type": "number", "description": "Unix time of the response."},
            "symbol": {"type": "string", "enum": symbols},
            "tick": {"type": "integer", "description": "Tick index: floor(unix time / tick)."},
            "updated_at": {"type": "number", "description": "Unix time the tick started."},
            "next_update_at": {"type": "number", "description": "Unix time of the next tick."},
        },
    }
    stream_refusals = _refusals()
    refused_with = sorted(map(int, stream_refusals))
    batch_quote = {**quote, "required": [r for r in quote["required"] if r != "timestamp"]}
    batch_quote["properties"] = {k: v for k, v in quote["properties"].items() if k != "timestamp"}
    return {
        "openapi": "3.2.0",
        "info": {
            "title": "Crypto price service",
            "version": __version__,
            "description": "Simulated prices that change once per tick "
            f"({settings.price_tick_seconds:g} s), made to be polled.",
        },
        "paths": {
            "/crypto-price": _get(
                "Current price of one symbol (default: the first configured).",
                _polled("The current quote.", "Quote"),
                [{"name": "symbol", "in": "query", "required": False, "schema": symbol_schema}],
                conditional=True,
                keyed=True,
                long_poll=True,
            ),
            "/v1/prices": _get(
                "Current prices of all or some symbols.",
                _polled("The current quotes.", "Prices"),
                [
                    {
                        "name": "symbols",
                        "in": "query",
                        "required": False,
                        "description": "Comma-separated symbols.",
                        "schema": {
                            "type": "string",
                            "pattern": symbol_list,
                            "examples": [",".join(symbols[:2])],
                        },
                    }
                ],
                conditional=True,
                keyed=True,
                long_poll=True,
            ),
            "/v1/prices/stream": _get(
                "Server-Sent Events: the /v1/prices document at once, then one event per tick "
                "(id: the tick). A reconnect with Last-Event-ID first gets the ticks it missed.",
                {
                    "200": {
                        "description": "An event stream (retry hint, events, heartbeat "
                        "comments); it ends by itself after STREAM_LIFETIME_MINUTES. To a "
                        "request with Accept: text/event-stream (as EventSource sends), a "
                        "refusal is a 200 event stream too: a retry of the wait (jittered) "
                        "and one `error` event whose data is the JSON error with its "
                        "`status` (and `retry_after`), then the end; EventSource comes back "
                        "after the retry by itself.",
                        "headers": {
                            "X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"},
                            "RateLimit": {"$ref": "#/components/headers/RateLimit"},
                            "RateLimit-Policy": {"$ref": "#/components/headers/RateLimit-Policy"},
                        },
                        "content": {"text/event-stream": {"itemSchema": _ref("StreamEvent")}},
                    },
                    **stream_refusals,
                },
                [
                    symbols_parameter,
                    {"$ref": "#/components/parameters/Last-Event-ID"},
                    {
                        "name": "last_event_id",
                        "in": "query",
                        "required": False,
                        "description": "As Last-Event-ID, for a page that opens a new "
                        "EventSource itself (it cannot set the header); the header wins.",
                        "schema": {"type": "string"},
                    },
                    TOKEN_PARAMETER_DOC,
                ],
                keyed=True,
                tokens=True,
            ),
            "/v1/prices/ws": _get(
                "WebSocket: the /v1/prices document as a JSON text frame at once and per "
                "tick; pings keep it alive. Plain HTTP requests are refused with 400.",
                {
                    "101": {"description": "Switching to the WebSocket protocol."},
                    "400": _error("Not a WebSocket handshake."),
                    **_refusals(websocket=True),
                },
                [symbols_parameter, TOKEN_PARAMETER_DOC],
                keyed=True,
                tokens=True,
            ),
            "/v1/prices/{symbol}/history": _get(
                "Ticks of one symbol as they were served, oldest first: the newest `limit`, "
                "or those of a range (from, to), paged by `next` (pass it as `cursor`). A "
                "range's answer has no timestamp: the same range, the same bytes.",
                _stored("The history.", "History"),
                [
                    {"name": "symbol", "in": "path", "required": True, "schema": symbol_schema},
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": HISTORY_MAX,
                            "default": DEFAULT_HISTORY_LIMIT,
                        },
                    },
                    _time("from", "The first tick's start at or after this"),
                    _time("to", "Ticks that started before this"),
                    {
                        "name": "cursor",
                        "in": "query",
                        "required": False,
                        "description": "The `next` of the previous page.",
                        "schema": {"type": "string", "pattern": "^[0-9]{1,15}$"},
                    },
                ],
                conditional=True,
                keyed=True,
            ),
            "/v1/prices/{symbol}/candles": _get(
                "Candles of one symbol (open, high, low, close of the ticks that started in "
                f"each): the last {DEFAULT_CANDLES} by default, at most {MAX_CANDLES} "
                "an answer.",
                _stored("The candles.", "Candles"),
                [
                    {"name": "symbol", "in": "path", "required": True, "schema": symbol_schema},
                    {
                        "name": "interval",
                        "in": "query",
                        "required": False,
                        "schema": {
                            "type": "string",
                            "enum": list(CANDLE_INTERVALS),
                            "default": "1m",
                        },
                    },
                    _time("from", "The first candle holds this"),
                    _time("to", "Candles that started before this"),
                ],
                conditional=True,
                keyed=True,
            ),
            "/v1/stats": _get(
                "Each symbol's statistics over a window of whole minutes up to and including "
                "the one holding `to` (the minute still open, by default): first, last, "
                "change, min, max, mean, volatility (the sample standard deviation of the "
                "log returns from each tick to the next), and the correlation matrix of the "
                "symbols' log returns (over the ticks where both have one).",
                _stored("The statistics.", "Stats", csv=False),
                [
                    symbols_parameter,
                    {
                        "name": "window",
                        "in": "query",
                        "required": False,
                        "schema": {
                            "type": "string",
                            "enum": list(STATS_WINDOWS),
                            "default": DEFAULT_STATS_WINDOW,
                        },
                    },
                    _time("to", "The window ends with the minute holding this"),
                ],
                conditional=True,
                keyed=True,
            ),
            **_key_paths(),
            "/healthz": _get(
                "Liveness.",
                {"200": {"description": "Alive.", "content": {JSON: {"schema": _ref("Status")}}}},
            ),
            "/readyz": _get(
                "Readiness: 503 while draining on shutdown.",
                {
                    "200": {"description": "Ready.", "content": {JSON: {"schema": _ref("Status")}}},
                    "503": _error("Draining."),
                },
            ),
            "/metrics": _get(
                "Prometheus metrics.",
                {
                    "200": {
                        "description": "Exposition.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            ),
            "/openapi.json": _get(
                "This document.",
                {
                    "200": {
                        "description": "OpenAPI 3.2.",
                        "content": {JSON: {"schema": {"type": "object"}}},
                    }
                },
            ),
        },
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "streamToken": {"type": "apiKey", "in": "query", "name": TOKEN_PARAMETER},
            },
            "parameters": {
                "X-Request-ID": {
                    "name": "X-Request-ID",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string"},
                },
                "If-None-Match": {
                    "name": "If-None-Match",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string"},
                },
                "Prefer": {
                    "name": "Prefer",
                    "in": "header",
                    "required": False,
                    "description": "RFC 7240 wait=N (1-60): with a current If-None-Match, hold "
                    "the answer until the tick turns (200) or N seconds pass (304). A tag of an "
                    "earlier tick gets the tick after it.",
                    "schema": {"type": "string", "examples": ["wait=30"]},
                },
                "Last-Event-ID": {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "required": False,
                    "description": "The last tick seen (an event's id): the stream starts "
                    "after it. Any other value (an empty one, another server's id) is ignored, "
                    "as a reconnecting EventSource must not be refused for it: the stream "
                    "starts at the current tick.",
                    "schema": {"type": "string"},
                },
            },
            "headers": {
                "X-Request-ID": {"schema": {"type": "string"}},
                "ETag": {"schema": {"type": "string"}},
                "Cache-Control": {"schema": {"type": "string", "pattern": "^max-age=\\d+$"}},
                "RateLimit": {"schema": {"type": "string"}},
                "RateLimit-Policy": {"schema": {"type": "string"}},
                "Preference-Applied": {"schema": {"type": "string", "examples": ["wait=30"]}},
            },
            "schemas": {
                "Quote": quote,
                "BatchQuote": batch_quote,
                "Prices": {
                    "type": "object",
                    "required": ["prices", "timestamp"],
                    "properties": {
                        "prices": {"type": "array", "items": _ref("BatchQuote")},
                        "timestamp": {"type": "number"},
                    },
                },
                "History": {
                    "type": "object",
                    "required": ["symbol", "prices"],
                    "properties": {
                        "symbol": {"type": "string", "enum": symbols},
                        "prices": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["price", "tick", "updated_at"],
                                "properties": {
                                    "price": {"type": "number"},
                                    "tick": {"type": "integer"},
                                    "updated_at": {"type": "number"},
                                },
                            },
                        },
                        "timestamp": {
                            "type": "number",
                            "description": "The time of the response: the newest-ticks form only.",
                        },
                        "next": {"type": "string", "description": "The next page's cursor."},
                    },
                },
                "Candles": {
                    "type": "object",
                    "required": ["symbol", "interval", "candles"],
                    "properties": {
                        "symbol": {"type": "string", "enum": symbols},
                        "interval": {"type": "string", "enum": list(CANDLE_INTERVALS)},
                        "candles": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["start", "open", "high", "low", "close", "ticks"],
                                "properties": {
                                    "start": {"type": "number"},
                                    **{
                                        name: {"type": "number"}
                                        for name in ("open", "high", "low", "close")
                                    },
                                    "ticks": {"type": "integer", "minimum": 1},
                                },
                            },
                        },
                    },
                },
                "Stats": {
                    "type": "object",
                    "required": ["window", "from", "to", "symbols", "correlation"],
                    "properties": {
                        "window": {"type": "string", "enum": list(STATS_WINDOWS)},
                        "from": {"type": "number"},
                        "to": {"type": "number"},
                        "symbols": {
                            "type": "object",
                            "propertyNames": {"enum": symbols},
                            "additionalProperties": {
                                "type": "object",
                                "required": ["ticks", *STATISTICS],
                                "properties": {
                                    "ticks": {"type": "integer", "minimum": 0},
                                    **{name: {"type": ["number", "null"]} for name in STATISTICS},
                                },
                            },
                        },
                        "correlation": {
                            "type": "object",
                            "propertyNames": {"enum": symbols},
                            "additionalProperties": {
                                "type": "object",
                                "propertyNames": {"enum": symbols},
                                "additionalProperties": {
                                    "type": ["number", "null"],
                                    "minimum": -1,
                                    "maximum": 1,
                                },
                            },
                        },
                    },
                },
                # One event of /v1/prices/stream, as an EventSource parses it (OpenAPI 3.2's
                # itemSchema): a tick's document, or the one error event of a refusal.
                "StreamEvent": {"oneOf": [_ref("TickEvent"), _ref("RefusalEvent")]},
                "TickEvent": {
                    "type": "object",
                    "required": ["id", "data"],
                    "properties": {
                        "event": {"const": "message"},
                        "id": {"type": "string", "pattern": TICK_PATTERN},
                        "data": _json_text("Prices"),
                    },
                    "additionalProperties": False,
                },
                "RefusalEvent": {
                    "type": "object",
                    "required": ["event", "data", "retry"],
                    "properties": {
                        "event": {"const": "error"},
                        "data": _json_text("Refusal"),
                        "retry": {"type": "integer", "minimum": 0},
                    },
                    "additionalProperties": False,
                },
                "Refusal": {
                    "allOf": [
                        _ref("Error"),
                        {
                            "type": "object",
                            "required": ["status"],
                            "properties": {
                                "status": {"type": "integer", "enum": refused_with},
                                "retry_after": {"type": "integer", "minimum": 1},
                            },
                        },
                    ]
                },
                **_key_schemas(),
                "Status": {
                    "type": "object",
                    "required": ["status"],
                    "properties": {"status": {"type": "string"}},
                },
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {
                        "error": {"type": "string"},
                        "message": {"type": "string"},
                        "valid_symbols": {"type": "array", "items": {"type": "string"}},
                    },
                },
            },
        },
    }
