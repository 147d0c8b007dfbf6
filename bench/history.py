"""``make history-bench``: the price history at the size the issue asks for, 30 days of
3 s ticks for 4 symbols (about 3.5 million rows), in a SQLite file and in Debian's
PostgreSQL (started here in a temporary directory, as the tests do).

Both are filled by the service's own backfill (the prices computed once, in one process
per CPU, and written to both), then every endpoint that reads them is timed through the
app itself (Flask's test client: no network, no server, the clock pinned at the end of the
backfill) in alternated rounds, with ``/v1/prices`` (no database) as the baseline of the
same run. Writes bench/history.json and bench/HISTORY.md.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from service.app import create_app
from service.backfill import backfill
from service.config import Settings
from service.database import create_engine, upgrade
from service.history_store import HistoryStore, Tick

HERE = Path(__file__).parent
DAYS = float(os.environ.get("HISTORY_BENCH_DAYS", "30"))
ROUNDS = 100  # of every query, alternated
GOAL_MS = 50.0  # the bound for 1d candles over 30 days and 1m candles over 24 h


class BothStores:
    """Writes to every store; the first's count (each holds the same)."""

    def __init__(self, stores: Sequence[HistoryStore]) -> None:
        self.stores = stores

    def record(self, rows: Sequence[Tick]) -> int:
        counts = [store.record(rows) for store in self.stores]
        return counts[0]


def queries(now: float) -> dict[str, str]:
    day = 86_400
    return {
        "baseline /v1/prices (no database)": "/v1/prices",
        "1d candles, 30 days": f"/v1/prices/BTC/candles?interval=1d&from={now - 30 * day:.0f}",
        "1m candles, 24 h": f"/v1/prices/BTC/candles?interval=1m&from={now - day:.0f}",
        "1h candles, 7 days": f"/v1/prices/ETH/candles?interval=1h&from={now - 7 * day:.0f}",
        "15m candles, 7 days": f"/v1/prices/SOL/candles?interval=15m&from={now - 7 * day:.0f}",
        "history, 1,000 ticks a day ago": (
            f"/v1/prices/BTC/history?from={now - day:.0f}&limit=1000"
        ),
        "newest 1,000 ticks": "/v1/prices/XRP/history?limit=1000",
        "stats 24 h, all symbols": "/v1/stats?window=24h",
        "stats 7 d, all symbols": "/v1/stats?window=7d",
    }


def timed(url: str, now: float) -> dict[str, dict[str, float]]:
    """Milliseconds per answer of each query, through the app."""
    env = {"DATABASE_URL": url, "RATE_LIMIT": "100000000/minute", "LOG_LEVEL": "warning"}
    client = create_app(Settings.from_env(env), clock=lambda: now).test_client()
    asked = queries(now)
    times: dict[str, list[float]] = {name: [] for name in asked}
    for path in asked.values():  # once each first: connections, caches
        assert client.get(path).status_code == 200, path
    gc.freeze()  # as a worker does once it is ready (service/gunicorn_conf.py)
    for _ in range(ROUNDS):
        for name, path in asked.items():
            started = time.perf_counter()
            response = client.get(path)
            times[name].append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, (path, response.status_code)
    return {
        name: {
            "median_ms": round(statistics.median(found), 2),
            "p95_ms": round(sorted(found)[int(0.95 * len(found))], 2),
            "max_ms": round(max(found), 2),
        }
        for name, found in times.items()
    }


def sqlite_bytes(path: Path, engine: sa.Engine) -> int:
    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def postgres_bytes(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        size: int = connection.scalar(sa.text("SELECT pg_database_size(current_database())"))
    return size


def run() -> dict[str, Any]:
    from tests.databases import postgres_server  # the tests' harness: initdb, pg_ctl

    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / "postgres").mkdir()
        servers = postgres_server(Path(scratch) / "postgres")
        server = next(servers)
        try:
            sqlite_path = Path(scratch) / "history.sqlite3"
            urls = {"sqlite": f"sqlite:///{sqlite_path}", "postgresql": server.new_database()}
            engines = {kind: create_engine(url) for kind, url in urls.items()}
            for engine in engines.values():
                upgrade(engine)
            empty = {
                "sqlite": sqlite_bytes(sqlite_path, engines["sqlite"]),
                "postgresql": postgres_bytes(engines["postgresql"]),
            }
            settings = Settings()
            now = time.time()
            started = time.monotonic()
            stored = backfill(
                settings,
                BothStores([HistoryStore(e) for e in engines.values()]),
                DAYS,
                clock=lambda: now,
                processes=os.cpu_count() or 1,
            )
            filled_seconds = time.monotonic() - started
            sizes = {  # what the history takes: the database's growth
                "sqlite": sqlite_bytes(sqlite_path, engines["sqlite"]) - empty["sqlite"],
                "postgresql": postgres_bytes(engines["postgresql"]) - empty["postgresql"],
            }
            for engine in engines.values():
                engine.dispose()
            results = {kind: timed(url, now) for kind, url in urls.items()}
        finally:
            servers.close()
    return {
        "days": DAYS,
        "symbols": len(settings.symbols),
        "tick_seconds": settings.price_tick_seconds,
        "rows": stored,
        "backfill_seconds": round(filled_seconds, 1),
        "processes": os.cpu_count() or 1,
        "rounds": ROUNDS,
        "goal_ms": GOAL_MS,
        "databases": {
            kind: {
                "bytes": sizes[kind],
                "mib_per_million_ticks": round(sizes[kind] / 2**20 / (stored / 1e6), 1),
                "queries": results[kind],
            }
            for kind in urls
        },
    }


def report(found: dict[str, Any]) -> str:
    lines = [
        "# The price history at 30 days (written by `make history-bench`)",
        "",
        f"{found['rows']:,} rows: {found['days']:g} days of {found['tick_seconds']:g} s ticks "
        f"for {found['symbols']} symbols, backfilled into both databases in "
        f"{found['backfill_seconds']:,} s ({found['processes']} processes computing prices). "
        f"Each query answered {found['rounds']} times through the app (no network), "
        "alternated with the others; milliseconds.",
        "",
        "| query | SQLite median | p95 | PostgreSQL median | p95 |",
        "|---|---:|---:|---:|---:|",
    ]
    sqlite, postgres = (found["databases"][k]["queries"] for k in ("sqlite", "postgresql"))
    for name in sqlite:
        lines.append(
            f"| {name} | {sqlite[name]['median_ms']} | {sqlite[name]['p95_ms']} | "
            f"{postgres[name]['median_ms']} | {postgres[name]['p95_ms']} |"
        )
    lines += [
        "",
        "Size: what the database grew by (tables, indexes; SQLite after a WAL checkpoint).",
        "",
        "| database | size | per million ticks |",
        "|---|---:|---:|",
    ]
    for kind, figures in found["databases"].items():
        lines.append(
            f"| {kind} | {figures['bytes'] / 2**20:,.0f} MiB | "
            f"{figures['mib_per_million_ticks']} MiB |"
        )
    goals = [
        f"{kind}: {name} p95 {figures['queries'][name]['p95_ms']} ms"
        for kind, figures in found["databases"].items()
        for name in ("1d candles, 30 days", "1m candles, 24 h")
    ]
    met = all(
        figures["queries"][name]["p95_ms"] <= found["goal_ms"]
        for figures in found["databases"].values()
        for name in ("1d candles, 30 days", "1m candles, 24 h")
    )
    lines += [
        "",
        f"Goal (≤ {found['goal_ms']:g} ms): {'met' if met else 'NOT met'} ({'; '.join(goals)}).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    found = run()
    (HERE / "history.json").write_text(json.dumps(found, indent=2) + "\n")
    (HERE / "HISTORY.md").write_text(report(found))
    print(report(found))


if __name__ == "__main__":
    main()
