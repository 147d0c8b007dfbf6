"""The history database: its migrations make exactly the tables the code declares, on
both databases; a schema behind the code is named with the command that fixes it."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from service.database import (
    SchemaBehind,
    check_schema,
    create_engine,
    current_revision,
    head_revision,
    sqlalchemy_url,
    upgrade,
)
from service.schema import metadata
from tests.databases import PostgresServer


def test_the_migrations_make_the_declared_tables(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        assert upgrade(engine) == (None, head_revision())
        assert upgrade(engine) == (head_revision(), head_revision())  # again: nothing to do
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), metadata)
        assert differences == []
        check_schema(engine)
    finally:
        engine.dispose()


def test_a_schema_behind_names_the_variable_and_the_command(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        assert current_revision(engine) is None
        with pytest.raises(SchemaBehind) as raised:
            check_schema(engine)
        message = str(raised.value)
        assert message.startswith("DATABASE_URL:") and "crypto-service db upgrade" in message
        assert "\n" not in message
    finally:
        engine.dispose()


def test_sqlite_runs_in_wal_mode(tmp_path: object) -> None:
    engine = create_engine(f"sqlite:///{tmp_path}/sub/dir/history.sqlite3")
    try:
        upgrade(engine)  # which makes the directory
        with engine.connect() as connection:
            assert connection.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgresql://u:p@h/db", "postgresql+psycopg"),
        ("postgres://u:p@h/db", "postgresql+psycopg"),
        ("postgresql+psycopg://u:p@h/db", "postgresql+psycopg"),
        ("sqlite:///data/prices.sqlite3", "sqlite"),
    ],
)
def test_postgresql_is_reached_through_psycopg_3(url: str, driver: str) -> None:
    assert sqlalchemy_url(url).drivername == driver


def test_replicas_migrating_at_once_migrate_once(postgres: PostgresServer) -> None:
    """Every replica's init container runs the upgrade as it starts: one at a time."""
    url = postgres.new_database()
    engines = [create_engine(url) for _ in range(4)]
    start = threading.Barrier(len(engines))
    outcomes: list[object] = []

    def migrate(engine: sa.Engine) -> None:
        start.wait()
        try:
            outcomes.append(upgrade(engine))
        except Exception as error:  # what a race would raise: a table made twice
            outcomes.append(error)

    threads = [threading.Thread(target=migrate, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for engine in engines:
        engine.dispose()
    head = head_revision()
    assert sorted(map(str, outcomes)) == sorted(
        [str((None, head))] + [str((head, head))] * (len(engines) - 1)
    ), outcomes
