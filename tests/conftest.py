"""Shared fixtures: applications built from an environment mapping, as in production."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import flask
import pytest

from service.app import create_app
from service.backfill import backfill
from service.config import Settings
from service.database import create_engine, upgrade
from service.history_store import HistoryStore
from tests.databases import PostgresServer, postgres_server

AppFactory = Callable[..., flask.Flask]
TESTS = Path(__file__).parent
PINNED_NOW = 1_700_000_000.5  # tick 566,666,666 of 3 s, 0.5 s before the next: pinned
SLOW_SUITES = (TESTS / "integration", TESTS / "deploy")  # real processes and validators


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(suite in Path(str(item.fspath)).parents for suite in SLOW_SUITES):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _single_process_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    # Unit tests use the in-process registry; integration tests set the variable themselves
    # in the child's environment only.
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)


@pytest.fixture(scope="session")
def recorded_history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A history database holding the hour before PINNED_NOW, as the default settings
    served it (written once a session, copied for each app)."""
    path = tmp_path_factory.mktemp("history") / "recorded.sqlite3"
    engine = create_engine(f"sqlite:///{path}")
    upgrade(engine)
    backfill(Settings(), HistoryStore(engine), 1 / 24, clock=lambda: PINNED_NOW)
    engine.dispose()
    return path


@pytest.fixture
def make_app(tmp_path: Path, recorded_history: Path) -> AppFactory:
    """``make_app(RATE_LIMIT="5/minute", ...)``: an app configured like the environment says
    (its history database a copy of ``recorded_history`` unless DATABASE_URL says
    otherwise); ``clock=`` pins the time it tells."""
    shutil.copy(recorded_history, tmp_path / "history.sqlite3")
    history = f"sqlite:///{tmp_path}/history.sqlite3"

    def factory(clock: Callable[[], float] = time.time, **env: str) -> flask.Flask:
        env = {"LOG_LEVEL": "warning", "DATABASE_URL": history, **env}
        return create_app(Settings.from_env(env), clock=clock)

    return factory


@pytest.fixture
def client(make_app: AppFactory) -> flask.testing.FlaskClient:
    return make_app().test_client()


@pytest.fixture
def pinned(make_app: AppFactory) -> flask.testing.FlaskClient:
    """A client of an app whose clock is pinned at PINNED_NOW: no tick turns mid-test."""
    return make_app(clock=lambda: PINNED_NOW).test_client()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """Debian's PostgreSQL in a temporary directory, for the session."""
    yield from postgres_server(tmp_path_factory.mktemp("postgres"))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty history database of each kind: a SQLite file, a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/history.sqlite3"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.new_database()
