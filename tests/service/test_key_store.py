"""Managed keys in both databases: created, rotated and revoked as the commands say, a
change that cannot be made changes nothing (not even the generation the workers poll),
and no key is ever written to the database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from service.database import create_engine, upgrade
from service.key_format import digest_of, fingerprint_of, is_well_formed
from service.key_store import HOUR_MS, USAGE_RETENTION_DAYS, KeyProblem, KeyStore, Usage
from service.schema import metadata

NOW = 1_700_000_000.0


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = create_engine(database_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def every_value(engine: sa.Engine) -> str:
    """Every value of every table, as text (what a dump would hold)."""
    found: list[str] = []
    with engine.connect() as connection:
        for table in metadata.sorted_tables:
            for row in connection.execute(sa.select(table)):
                found.extend(v.hex() if isinstance(v, bytes) else str(v) for v in row)
    return "\n".join(found)


def test_a_created_key_works_is_listed_and_is_not_stored(engine: sa.Engine) -> None:
    store = KeyStore(engine, Clock())
    before = store.generation()
    key, record = store.create("ci", "600/minute")
    assert is_well_formed(key)
    assert record.fingerprint == fingerprint_of(key) and record.digest == digest_of(key)
    assert store.generation() == before + 1
    generation, working = store.working()
    assert generation == before + 1 and working == [record]
    (listed,) = store.listing()
    assert (listed.key, listed.last_day, listed.last_used_ms) == (record, Usage(), None)
    assert key not in every_value(engine) and key[4:] not in every_value(engine)


def test_a_name_in_use_is_refused_and_nothing_changes(engine: sa.Engine) -> None:
    store = KeyStore(engine, Clock())
    store.create("ci")
    before = store.working()
    with pytest.raises(KeyProblem, match="a key named 'ci' exists already"):
        store.create("ci")
    assert store.working() == before  # the generation did not move either


def test_unknown_names_are_refused_and_nothing_changes(engine: sa.Engine) -> None:
    store = KeyStore(engine, Clock())
    store.create("ci")
    before = store.working()
    with pytest.raises(KeyProblem, match="no key named 'cd'"):
        store.rotate("cd", 3600)
    with pytest.raises(KeyProblem, match="no key named 'cd' is in use"):
        store.revoke("cd")
    assert store.working() == before


def test_rotation_keeps_the_old_key_for_its_grace_period_only(engine: sa.Engine) -> None:
    clock = Clock()
    store = KeyStore(engine, clock)
    _, old = store.create("ci", "5/second")
    key, new, rotated = store.rotate("ci", 3600)
    assert new.rate_limit == "5/second" and new.fingerprint == fingerprint_of(key)
    assert rotated.expires_ms == int(NOW * 1000) + 3_600_000
    assert {k.fingerprint for k in store.working()[1]} == {old.fingerprint, new.fingerprint}
    assert rotated.works_at(int(NOW * 1000) + 3_599_999)
    assert not rotated.works_at(int(NOW * 1000) + 3_600_000)
    clock.now += 3600
    assert [k.fingerprint for k in store.working()[1]] == [new.fingerprint]
    assert [listed.key.fingerprint for listed in store.listing()] == [new.fingerprint]
    with pytest.raises(KeyProblem, match="exists already"):  # the new one is current
        store.create("ci")


def test_revoking_stops_every_key_of_the_name_and_frees_it(engine: sa.Engine) -> None:
    store = KeyStore(engine, Clock())
    store.create("ci")
    store.rotate("ci", 3600)
    revoked = store.revoke("ci")
    assert len(revoked) == 2 and all(key.revoked_ms is not None for key in revoked)
    assert store.working()[1] == [] and store.listing() == []
    with pytest.raises(KeyProblem):
        store.revoke("ci")
    store.create("ci")  # the name is free again
    assert len(store.working()[1]) == 1


def test_usage_adds_up_per_hour_and_old_hours_are_forgotten(engine: sa.Engine) -> None:
    clock = Clock()
    store = KeyStore(engine, clock)
    _, record = store.create("ci")
    hour = int(NOW * 1000) // HOUR_MS * HOUR_MS
    fp = record.fingerprint
    store.add_usage({(fp, hour): Usage(3, 1, 1, hour + 5)})
    store.add_usage(
        {(fp, hour): Usage(2, 0, 0, hour + 2), (fp, hour - HOUR_MS): Usage(7, 0, 0, hour - 1)}
    )
    assert store.usage(fp, hour) == Usage(5, 1, 1, hour + 5)
    assert store.usage(fp, 0) == Usage(12, 1, 1, hour + 5)
    assert store.usage("key-000000000000", 0) == Usage()
    (listed,) = store.listing()
    assert listed.last_day == Usage(12, 1, 1, hour + 5) and listed.last_used_ms == hour + 5
    clock.now += USAGE_RETENTION_DAYS * 86400 + 3600
    store.add_usage({})
    assert store.usage(fp, 0) == Usage()


def test_the_sqlite_file_never_holds_a_key(tmp_path: Path) -> None:
    path = tmp_path / "keys.sqlite3"
    engine = create_engine(f"sqlite:///{path}")
    upgrade(engine)
    store = KeyStore(engine, Clock())
    keys = [store.create("ci")[0], store.rotate("ci", 60)[0], store.create("cd", "5/second")[0]]
    store.add_usage({(fingerprint_of(keys[0]), 0): Usage(1, 0, 0, 1)})
    store.revoke("cd")
    engine.dispose()
    written = b"".join(p.read_bytes() for p in tmp_path.glob("keys.sqlite3*"))
    assert fingerprint_of(keys[0]).encode() in written  # what is kept is in the file
    for key in keys:
        assert key.encode() not in written and key[4:20].encode() not in written
