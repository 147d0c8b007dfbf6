"""The history database named by DATABASE_URL: its engine, and its schema's migrations
(Alembic, run by ``crypto-service db upgrade`` and checked at start)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from service.greenlets import off_the_loop

MIGRATIONS = Path(__file__).parent / "migrations"
# Alembic says "Context impl SQLiteImpl" at info on every check: not news.
logging.getLogger("alembic").setLevel(logging.WARNING)
CONNECT_TIMEOUT_SECONDS = 3  # a database that does not answer is down, not slow
SQLITE_BUSY_MS = 5000  # another process writing: wait this long for its lock
MIGRATION_LOCK = 0x63727971  # PostgreSQL advisory lock id held while migrating
T = TypeVar("T")


class SchemaBehind(RuntimeError):
    """The database's schema is older (or other) than the code's; the message says what
    to run."""


def sqlalchemy_url(url: str) -> sa.URL:
    """DATABASE_URL as SQLAlchemy names the driver: psycopg 3 for PostgreSQL."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def create_engine(url: str, sqlite_busy_ms: int = SQLITE_BUSY_MS, **options: Any) -> sa.Engine:
    """An engine for DATABASE_URL (it connects when first used): SQLite in WAL mode
    (readers never wait for the writer), PostgreSQL with a connect timeout."""
    parsed = sqlalchemy_url(url)
    if parsed.get_backend_name() == "sqlite":
        busy = {"timeout": sqlite_busy_ms / 1000}
        engine = sa.create_engine(parsed, connect_args=busy, **options)

        @sa.event.listens_for(engine, "connect")
        def _pragmas(connection: Any, _record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints
            cursor.close()

        return engine
    return sa.create_engine(
        parsed,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
        pool_pre_ping=True,
        **options,
    )


def on_connection(engine: sa.Engine, work: Callable[[sa.Connection], T], begin: bool = False) -> T:
    """``work`` on one of ``engine``'s connections, in a transaction committed after it
    when ``begin``. SQLite's calls block without yielding to gevent: under the gevent
    worker they run in a thread of its pool, so that the streams and polls of the worker
    go on meanwhile (psycopg 3 yields by itself)."""

    def run() -> T:
        with engine.begin() if begin else engine.connect() as connection:
            return work(connection)

    return run() if engine.dialect.name == "postgresql" else off_the_loop(run)


def _alembic_config(connection: sa.Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config).get_current_head()


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: sa.Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Bring the schema to the code's (or to an older ``revision``); (revision before,
    revision after). A SQLite file's directory is made here (only here: a reader must
    not make one)."""
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":  # replicas' init containers, one at a time
            connection.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK)))
        before = MigrationContext.configure(connection).get_current_revision()
        command.upgrade(_alembic_config(connection), revision)
        after = MigrationContext.configure(connection).get_current_revision()
    return before, after


def check_schema(engine: sa.Engine) -> None:
    """Raise SchemaBehind unless the database is at the code's revision."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise SchemaBehind(
            f"DATABASE_URL: the history schema is at revision {current or 'none'}, this "
            f"code needs {head}: run `crypto-service db upgrade`"
        )


def prepare_history_database(url: str, log: Any) -> None:
    """At start: an embedded SQLite file is brought to the code's schema (this node owns
    it); a PostgreSQL behind it stops the start with the command to run. A database that
    does not answer is the recorder's to wait for: prices are served meanwhile."""
    engine = create_engine(url)
    try:
        if engine.dialect.name == "sqlite":
            before, after = upgrade(engine)
            if before != after:
                log.info("history schema upgraded", before=before, after=after)
            return
        check_schema(engine)
    except SchemaBehind as problem:
        raise SystemExit(f"crypto-service: {problem}") from None
    except sa.exc.SQLAlchemyError as error:
        log.warning("history database unreachable at start", error=str(error).splitlines()[0])
    finally:
        engine.dispose()
