"""Managed API keys in the service's database (``DATABASE_URL``): created, rotated and
revoked by ``crypto-service keys``, read by every worker (service/key_registry.py), and
their use per hour written by the workers (service/key_usage.py).

Only a key's SHA-256 and fingerprint are stored; the key itself is shown once, by the
command that made it. Every change raises the one-row generation in the same
transaction, first: that row's lock orders the changes (two ``keys create`` of one name
cannot both succeed), and the workers poll it to know when to read the keys again.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from service.database import on_connection
from service.key_format import digest_of, fingerprint_of_digest, new_key
from service.schema import api_key_generation, api_key_usage, api_keys

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
USAGE_RETENTION_DAYS = 35  # a month of days, as whole days in any time zone


class KeyProblem(ValueError):
    """A key command that cannot be done as asked (the message says why); nothing changed."""


@dataclasses.dataclass(frozen=True, slots=True)
class ManagedKey:
    fingerprint: str
    name: str
    digest: bytes = dataclasses.field(repr=False)
    rate_limit: str  # empty: RATE_LIMIT's
    created_ms: int
    expires_ms: int | None  # a rotated-out key: when it stops working
    revoked_ms: int | None

    def works_at(self, now_ms: int) -> bool:
        return self.revoked_ms is None and (self.expires_ms is None or now_ms < self.expires_ms)


@dataclasses.dataclass(frozen=True, slots=True)
class Usage:
    requests: int = 0  # 429s included
    rate_limited: int = 0
    streams: int = 0  # SSE streams and WebSockets opened
    last_ms: int | None = None  # the latest request counted

    def __add__(self, other: Usage) -> Usage:
        lasts = [at for at in (self.last_ms, other.last_ms) if at is not None]
        return Usage(
            self.requests + other.requests,
            self.rate_limited + other.rate_limited,
            self.streams + other.streams,
            max(lasts) if lasts else None,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Listed:
    """A key as ``keys list`` shows it: never the key."""

    key: ManagedKey
    last_day: Usage  # the last 24 hours (whole hours)
    last_used_ms: int | None  # ever (within the usage kept)


_COLUMNS = [api_keys.c[field.name] for field in dataclasses.fields(ManagedKey)]


class KeyStore:
    """The keys and their use, through one engine."""

    def __init__(self, engine: sa.Engine, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.clock = clock
        self._pruned_hour: int | None = None
        insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        statement = insert(api_key_usage)
        later = sa.func.greatest if engine.dialect.name == "postgresql" else sa.func.max
        self._add_usage = statement.on_conflict_do_update(
            index_elements=[api_key_usage.c.fingerprint, api_key_usage.c.hour_ms],
            set_={
                name: api_key_usage.c[name] + statement.excluded[name]
                for name in ("requests", "rate_limited", "streams")
            }
            | {"last_ms": later(api_key_usage.c.last_ms, statement.excluded.last_ms)},
        )

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _change(self, work: Callable[[sa.Connection], Any]) -> Any:
        """``work`` in a transaction that first raises the generation (and so holds its
        row's lock until it commits)."""

        def change(connection: sa.Connection) -> Any:
            connection.execute(
                sa.update(api_key_generation).values(generation=api_key_generation.c.generation + 1)
            )
            return work(connection)

        return on_connection(self.engine, change, begin=True)

    @staticmethod
    def _rows(connection: sa.Connection, *where: Any) -> list[ManagedKey]:
        query = sa.select(*_COLUMNS).where(*where).order_by(api_keys.c.name, api_keys.c.created_ms)
        return [ManagedKey(*row) for row in connection.execute(query)]

    def _current(self, connection: sa.Connection, name: str) -> ManagedKey | None:
        found = self._rows(
            connection,
            api_keys.c.name == name,
            api_keys.c.expires_ms.is_(None),
            api_keys.c.revoked_ms.is_(None),
        )
        return found[0] if found else None

    @staticmethod
    def _insert(
        connection: sa.Connection, name: str, rate_limit: str, now_ms: int
    ) -> tuple[str, ManagedKey]:
        while True:  # a fingerprint (48 bits) already taken: another key
            key = new_key()
            digest = digest_of(key)
            fingerprint = fingerprint_of_digest(digest)
            taken = connection.scalar(
                sa.select(sa.func.count()).where(api_keys.c.fingerprint == fingerprint)
            )
            if not taken:
                break
        record = ManagedKey(fingerprint, name, digest, rate_limit, now_ms, None, None)
        connection.execute(sa.insert(api_keys).values(dataclasses.asdict(record)))
        return key, record

    def create(self, name: str, rate_limit: str = "") -> tuple[str, ManagedKey]:
        """A new key named ``name`` (no current key may have that name): the key, shown
        only now, and its record."""

        def create(connection: sa.Connection) -> tuple[str, ManagedKey]:
            if self._current(connection, name) is not None:
                raise KeyProblem(f"a key named {name!r} exists already (rotate or revoke it)")
            return self._insert(connection, name, rate_limit, self._now_ms())

        result: tuple[str, ManagedKey] = self._change(create)
        return result

    def rotate(self, name: str, grace_seconds: int) -> tuple[str, ManagedKey, ManagedKey]:
        """A new key for ``name``, with its limit; the one it replaces works for
        ``grace_seconds`` more. (new key, new record, the old record as it is now)."""

        def rotate(connection: sa.Connection) -> tuple[str, ManagedKey, ManagedKey]:
            old = self._current(connection, name)
            if old is None:
                raise KeyProblem(f"no key named {name!r}")
            now_ms = self._now_ms()
            ends = now_ms + grace_seconds * 1000
            connection.execute(
                sa.update(api_keys)
                .where(api_keys.c.fingerprint == old.fingerprint)
                .values(expires_ms=ends)
            )
            key, record = self._insert(connection, name, old.rate_limit, now_ms)
            return key, record, dataclasses.replace(old, expires_ms=ends)

        result: tuple[str, ManagedKey, ManagedKey] = self._change(rotate)
        return result

    def revoke(self, name: str) -> list[ManagedKey]:
        """Every key of ``name`` still working (the current one and any in a rotation's
        grace period) stops; those keys, as they are now."""

        def revoke(connection: sa.Connection) -> list[ManagedKey]:
            now_ms = self._now_ms()
            working = [
                key
                for key in self._rows(connection, api_keys.c.name == name)
                if key.works_at(now_ms)
            ]
            if not working:
                raise KeyProblem(f"no key named {name!r} is in use")
            connection.execute(
                sa.update(api_keys)
                .where(api_keys.c.fingerprint.in_([key.fingerprint for key in working]))
                .values(revoked_ms=now_ms)
            )
            return [dataclasses.replace(key, revoked_ms=now_ms) for key in working]

        result: list[ManagedKey] = self._change(revoke)
        return result

    def generation(self) -> int:
        """Raised by every change: a worker reads the keys again when it moves."""
        found = on_connection(
            self.engine, lambda c: c.scalar(sa.select(api_key_generation.c.generation))
        )
        return int(found or 0)

    def working(self) -> tuple[int, list[ManagedKey]]:
        """The generation and the keys that work now or may later (not revoked, not
        expired), read together."""
        now_ms = self._now_ms()

        def read(connection: sa.Connection) -> tuple[int, list[ManagedKey]]:
            generation = connection.scalar(sa.select(api_key_generation.c.generation))
            keys = self._rows(
                connection,
                api_keys.c.revoked_ms.is_(None),
                sa.or_(api_keys.c.expires_ms.is_(None), api_keys.c.expires_ms > now_ms),
            )
            return int(generation or 0), keys

        found: tuple[int, list[ManagedKey]] = on_connection(self.engine, read, begin=True)
        return found

    def listing(self) -> list[Listed]:
        """Every key that works, with its use over the last 24 hours."""
        now_ms = self._now_ms()
        since = (now_ms // HOUR_MS - 23) * HOUR_MS

        def read(connection: sa.Connection) -> list[Listed]:
            keys = [key for key in self._rows(connection) if key.works_at(now_ms)]
            day = self._usage(connection, [key.fingerprint for key in keys], since)
            ever = self._usage(connection, [key.fingerprint for key in keys], 0)
            return [
                Listed(
                    key,
                    day.get(key.fingerprint, Usage()),
                    ever.get(key.fingerprint, Usage()).last_ms,
                )
                for key in keys
            ]

        found: list[Listed] = on_connection(self.engine, read)
        return found

    @staticmethod
    def _usage(
        connection: sa.Connection, fingerprints: Sequence[str], since_ms: int
    ) -> dict[str, Usage]:
        u = api_key_usage.c
        query = (
            sa.select(
                u.fingerprint,
                sa.func.sum(u.requests),
                sa.func.sum(u.rate_limited),
                sa.func.sum(u.streams),
                sa.func.max(u.last_ms),
            )
            .where(u.fingerprint.in_(fingerprints), u.hour_ms >= since_ms)
            .group_by(u.fingerprint)
        )
        return {
            fingerprint: Usage(int(requests), int(limited), int(streams), last)
            for fingerprint, requests, limited, streams, last in connection.execute(query)
        }

    def usage(self, fingerprint: str, since_ms: int) -> Usage:
        """A key's use since ``since_ms`` (hours starting then or later)."""
        found = on_connection(self.engine, lambda c: self._usage(c, [fingerprint], since_ms))
        return found.get(fingerprint, Usage())

    def add_usage(self, counts: Mapping[tuple[str, int], Usage]) -> None:
        """Add ``(fingerprint, hour_ms) -> counts`` to what is stored, and forget the
        hours older than USAGE_RETENTION_DAYS."""
        rows = [
            {
                "fingerprint": fingerprint,
                "hour_ms": hour_ms,
                "requests": used.requests,
                "rate_limited": used.rate_limited,
                "streams": used.streams,
                "last_ms": used.last_ms,
            }
            for (fingerprint, hour_ms), used in counts.items()
        ]
        hour = self._now_ms() // HOUR_MS
        prune = hour != self._pruned_hour  # once an hour: a scan of the whole table

        def add(connection: sa.Connection) -> None:
            if rows:
                connection.execute(self._add_usage, rows)
            if prune:
                oldest = (hour * HOUR_MS) - USAGE_RETENTION_DAYS * DAY_MS
                connection.execute(sa.delete(api_key_usage).where(api_key_usage.c.hour_ms < oldest))

        on_connection(self.engine, add, begin=True)
        self._pruned_hour = hour
