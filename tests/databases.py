"""Real databases for the tests: SQLite files, and Debian's PostgreSQL started in a
temporary directory (initdb, pg_ctl; as the postgres user when run as root, since they
refuse root), stopped after."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.integration.conftest import HOST, free_port, wait_until


def postgres_binary(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name) or ""]
    if not found[-1]:
        message = f"{name} is not installed (Debian: apt-get install postgresql)"
        if os.environ.get("REQUIRE_INTEGRATION") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return str(found[-1])


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@dataclass
class PostgresServer:
    port: int
    directory: Path
    databases: int = 0

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database's URL."""
        self.databases += 1
        name = f"test_{self.databases}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def answers(self) -> bool:
        try:
            with psycopg.connect(self.url(), connect_timeout=1):
                return True
        except psycopg.OperationalError:
            return False

    def pg_ctl(self, *args: str) -> None:
        subprocess.run(
            _as_postgres([postgres_binary("pg_ctl"), "-D", str(self.directory / "data"), *args]),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses={HOST} -c fsync=off"
        self.pg_ctl("-w", "-o", options, "-l", str(self.directory / "log"), "start")
        wait_until(self.answers, 30, "PostgreSQL")

    def stop(self) -> None:
        self.pg_ctl("-w", "-m", "fast", "stop")


def postgres_server(directory: Path) -> Generator[PostgresServer, None, None]:
    """A PostgreSQL server made in ``directory`` (empty), running until the generator is
    closed."""
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres")
        os.chmod(directory, 0o755)
        for parent in directory.parents:  # the postgres user must reach it
            if parent == Path(parent.anchor):
                break
            os.chmod(parent, os.stat(parent).st_mode | 0o005)
    subprocess.run(
        _as_postgres(
            [postgres_binary("initdb"), "-D", str(directory / "data"), "-U", "postgres",
             "--auth=trust", "--no-sync"]
        ),
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=120,
    )  # fmt: skip
    server = PostgresServer(free_port(), directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()
