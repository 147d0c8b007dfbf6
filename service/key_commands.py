"""``crypto-service keys create|list|revoke|rotate``: managed API keys, in the database
of ``DATABASE_URL``. Every worker of every replica honours a change within about two
seconds (service/key_registry.py), without a restart.

A new key is printed alone on stdout, once (``KEY=$(crypto-service keys create --name
ci)``); everything else goes to stderr, or to stdout for ``list``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
from typing import Any

import sqlalchemy as sa

from service.config import ConfigError, Settings, duration_between, format_duration, parse_limit
from service.database import check_schema
from service.key_store import KeyStore, Listed

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
DEFAULT_GRACE = "24h"
MAX_GRACE_SECONDS = 30 * 86400


def _name(raw: str) -> str:
    if not NAME_PATTERN.fullmatch(raw):
        raise argparse.ArgumentTypeError(
            f"a key's name is 1-64 of [A-Za-z0-9._-], starting with a letter or digit; got {raw!r}"
        )
    return raw


def _limit(raw: str) -> str:
    try:
        return parse_limit(raw, "--limit")
    except ConfigError as problem:
        raise argparse.ArgumentTypeError(str(problem).removeprefix("--limit: ")) from None


def _grace(raw: str) -> int:
    if raw == "0":
        return 0
    try:
        return duration_between(1, MAX_GRACE_SECONDS)(raw, "--grace")
    except ConfigError as problem:
        raise argparse.ArgumentTypeError(str(problem).removeprefix("--grace: ")) from None


def add_parsers(actions: Any) -> None:
    create = actions.add_parser("create", help="make a key; prints it once, on stdout")
    create.add_argument("--name", type=_name, required=True, help="unique among current keys")
    create.add_argument(
        "--limit", type=_limit, default=None, help="its own rate limit, such as 600/minute "
        "(default: RATE_LIMIT's)"
    )  # fmt: skip
    listing = actions.add_parser("list", help="the keys that work, and their use in 24 h")
    listing.add_argument("--json", action="store_true", help="one JSON object per key")
    revoke = actions.add_parser("revoke", help="stop every key of NAME (within 2 s)")
    revoke.add_argument("name", type=_name, metavar="NAME")
    rotate = actions.add_parser(
        "rotate", help="a new key for NAME; the old one works for the grace period"
    )
    rotate.add_argument("name", type=_name, metavar="NAME")
    rotate.add_argument(
        "--grace", type=_grace, default=_grace(DEFAULT_GRACE), metavar="DURATION",
        help=f"how long the old key keeps working: 0, or 1s to 30d (default {DEFAULT_GRACE})",
    )  # fmt: skip


def _when(ms: int | None) -> str:
    if ms is None:
        return "never"
    moment = datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).replace(microsecond=0)
    return moment.isoformat().replace("+00:00", "Z")


def run(engine: sa.Engine, settings: Settings, args: argparse.Namespace) -> None:
    """The keys command ``args`` asks for (KeyProblem when it cannot be done)."""
    check_schema(engine)
    store = KeyStore(engine)
    action = args.keys_command
    if action == "create":
        key, record = store.create(args.name, args.limit or "")
        print(key, flush=True)
        print(
            f"created key {record.name!r} ({record.fingerprint}, limit "
            f"{record.rate_limit or settings.rate_limit}); it is not shown again",
            file=sys.stderr,
        )
    elif action == "rotate":
        key, record, old = store.rotate(args.name, args.grace)
        print(key, flush=True)
        grace = format_duration(args.grace) if args.grace else "0"
        print(
            f"rotated key {record.name!r}: new {record.fingerprint}; the old {old.fingerprint} "
            f"works until {_when(old.expires_ms)} (grace {grace})",
            file=sys.stderr,
        )
    elif action == "revoke":
        revoked = store.revoke(args.name)
        stopped = ", ".join(key.fingerprint for key in revoked)
        print(f"revoked key {args.name!r} ({stopped}); refused everywhere within 2 s")
    else:
        _list(store.listing(), settings, args.json)


def _list(keys: list[Listed], settings: Settings, as_json: bool) -> None:
    rows = [
        {
            "name": listed.key.name,
            "fingerprint": listed.key.fingerprint,
            "limit": listed.key.rate_limit or settings.rate_limit,
            "created": _when(listed.key.created_ms),
            "expires": None if listed.key.expires_ms is None else _when(listed.key.expires_ms),
            "last_used": _when(listed.last_used_ms),
            "requests_24h": listed.last_day.requests,
            "rate_limited_24h": listed.last_day.rate_limited,
            "streams_24h": listed.last_day.streams,
        }
        for listed in keys
    ]
    if as_json:
        for row in rows:
            print(json.dumps(row))
        return
    header = ["NAME", "FINGERPRINT", "LIMIT", "CREATED", "LAST USED", "REQUESTS 24H", "429S 24H",
              "STREAMS 24H", "EXPIRES"]  # fmt: skip
    shown = ("name", "fingerprint", "limit", "created", "last_used", "requests_24h",
             "rate_limited_24h", "streams_24h", "expires")  # fmt: skip
    table = [header] + [["-" if row[n] is None else str(row[n]) for n in shown] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        cells = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        print("  ".join(cells).rstrip())
