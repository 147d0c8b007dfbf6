"""``crypto-service``: validate the environment, then run gunicorn with the bundled config."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from service.config import ConfigError, Settings
from service.version import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="crypto-service",
        description="Serve the crypto price API with gunicorn. Every setting is an environment "
        "variable (PORT, WORKERS, THREADS, RATE_LIMIT, RATE_LIMIT_STORAGE_URI, ...): "
        "see the README's configuration table.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="validate the environment, print the effective configuration and exit",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    database = commands.add_parser("db", help="the history database (DATABASE_URL)")
    database.add_argument(
        "action", choices=["upgrade", "check"], help="upgrade: migrate to this code's schema"
    )
    database.add_argument(
        "--if-reachable",
        action="store_true",
        help="upgrade: a database that does not answer is said and is not a failure (exit 0; "
        "the service serves prices meanwhile and its recorder waits for the database): for "
        "an init container, which must not keep a pod from starting during an outage",
    )
    fill = commands.add_parser("backfill", help="fill the history from the price model")
    fill.add_argument("--days", type=_days, required=True, help="how far back from now (0-3650)")
    fill.add_argument(
        "--processes",
        type=int,
        choices=range(1, 65),
        default=os.cpu_count() or 1,
        metavar="N",
        help="compute the prices in N processes (default: one per CPU)",
    )
    _key_commands(commands)
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        print(f"crypto-service: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.check_config:
        for name, value in settings.describe().items():
            print(f"{name}={value}")
        return 0
    if args.command == "db":
        return _database(settings, args.action, args.if_reachable)
    if args.command == "backfill":
        return _backfill(settings, args.days, args.processes)
    if args.command == "keys":
        from service.key_commands import run

        return _on_database(settings, lambda engine: run(engine, settings, args))

    from gunicorn.app.wsgiapp import WSGIApplication

    sys.argv = ["crypto-service", "--config", "python:service.gunicorn_conf"]
    WSGIApplication("%(prog)s").run()
    return 0


def _key_commands(commands: Any) -> None:
    from service.key_commands import add_parsers

    keys = commands.add_parser(
        "keys", help="managed API keys (in DATABASE_URL's database; no restart needed)"
    )
    add_parsers(keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True))


def _days(raw: str) -> float:
    try:
        days = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of days, got {raw!r}") from None
    if not 0 < days <= 3650:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 3650, got {raw}")
    return days


def _on_database(settings: Settings, work: Callable[[Any], None]) -> int:
    """``work(engine)`` on DATABASE_URL's database; its exit status, a problem said in one
    line (the command to run for a schema behind)."""
    from sqlalchemy.exc import SQLAlchemyError

    from service import database
    from service.key_store import KeyProblem

    engine = database.create_engine(settings.database_url)
    try:
        work(engine)
    except (database.SchemaBehind, KeyProblem) as problem:
        print(f"crypto-service: {problem}", file=sys.stderr)
        return 1
    except SQLAlchemyError as error:
        reason = str(error).splitlines()[0]
        print(f"crypto-service: DATABASE_URL: cannot use the database: {reason}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    return 0


def _database(settings: Settings, action: str, if_reachable: bool = False) -> int:
    from sqlalchemy.exc import OperationalError

    from service import database

    def act(engine: Any) -> None:
        if action == "upgrade":
            try:
                before, after = database.upgrade(engine)
            except OperationalError as error:
                if not if_reachable:
                    raise
                reason = str(error).splitlines()[0]
                print(f"crypto-service: DATABASE_URL: not upgraded now: {reason}", file=sys.stderr)
                return
            print(f"history schema: {before or 'none'} -> {after}")
        else:
            database.check_schema(engine)
            print(f"history schema: {database.head_revision()}, as this code needs")

    return _on_database(settings, act)


def _backfill(settings: Settings, days: float, processes: int = 1) -> int:
    from service import database
    from service.backfill import backfill
    from service.history_store import HistoryStore

    def progress(done: int, total: int) -> None:
        if done == total or done % 20_000 < 500:
            print(f"backfill: {done:,} of {total:,} ticks", flush=True)

    def fill(engine: Any) -> None:
        database.check_schema(engine)
        started = time.monotonic()
        stored = backfill(settings, HistoryStore(engine), days, progress, processes=processes)
        print(f"backfill: {stored:,} quotes stored in {time.monotonic() - started:.1f} s")

    return _on_database(settings, fill)


if __name__ == "__main__":
    sys.exit(main())
