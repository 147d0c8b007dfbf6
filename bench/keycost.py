"""``make keys-bench``: what an API key costs a request. ``GET /crypto-price`` in-process,
as ``make hotpath`` measures it (the WSGI callable with its middleware, multiprocess
metrics in a scratch directory, one JSON log line per request to /dev/null, the limiter
counting every request), from one app, asked three ways taking turns request by request:
without a key, with one of ``API_KEYS``, and with a managed key (created in the app's
SQLite database, so its worker has read it). Writes bench/keys.json: each way's median
microseconds per request, the keyed ones' ratio to the unkeyed in the same run, and a
worker's lookup of a key that exists, of a near miss and of an unrelated one.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bench import NO_LIMIT
from bench.hotpath import WsgiApp, environ

HERE = Path(__file__).parent
ROUNDS = 25
COUNT = 2000  # requests per way per round
GOAL = 1.05  # the bound: a keyed request within 5 % of an unkeyed one
STATIC_KEY = "bench-static-key-0123456789"


def call(app: WsgiApp, headers: dict[str, str]) -> None:
    status: list[str] = []

    def start_response(s: str, _headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        status.append(s)

    body = app({**environ(), **headers}, start_response)
    b"".join(body)
    if hasattr(body, "close"):
        body.close()
    if not status[0].startswith("200"):
        raise RuntimeError(f"unexpected status {status[0]}")


def per_request_us(app: WsgiApp, headers: dict[str, str], count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        call(app, headers)
    return (time.perf_counter() - started) / count * 1e6


def interleaved_us(app: WsgiApp, ways: dict[str, dict[str, str]], count: int) -> dict[str, float]:
    """Each way's median microseconds per request, the ways taking turns request by
    request: what the process does beside them (its log flushes, the keys' poll and the
    usage writes each second, a collection) falls on all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in ways}
    order = list(ways.items())
    for _ in range(count):
        random.shuffle(order)  # no way always first, or always after the same one
        for name, headers in order:
            started = time.perf_counter()
            call(app, headers)
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(found) * 1e6 for name, found in times.items()}


def lookups(url: str, managed: str) -> dict[str, Any]:
    """A worker's lookup (hash, then its table) of a key that exists, of one that differs
    from it in its last character only, and of an unrelated one, alternated. What must
    not differ is the two absent ones: a lookup that compared keys character by character
    would take longer the closer a guess came (whether a key exists, its 200 or 401 says
    anyway)."""
    from service.database import create_engine
    from service.key_format import digest_of, new_key
    from service.key_registry import KeyRegistry
    from service.key_store import KeyStore
    from service.metrics import Metrics

    engine = create_engine(url)
    registry = KeyRegistry(KeyStore(engine), Metrics(("BTC",)))
    near = managed[:-1] + ("0" if managed[-1] != "0" else "1")
    keys = {"exists": managed, "absent, one character off": near, "absent, unrelated": new_key()}
    times: dict[str, list[float]] = {name: [] for name in keys}
    registry.lookup(digest_of(managed))
    for _ in range(ROUNDS):
        for name, key in keys.items():
            started = time.perf_counter()
            for _ in range(COUNT * 10):
                registry.lookup(digest_of(key))
            times[name].append((time.perf_counter() - started) / (COUNT * 10) * 1e6)
    engine.dispose()
    medians = {name: statistics.median(found) for name, found in times.items()}
    near_to_unrelated = medians["absent, one character off"] / medians["absent, unrelated"]
    return {
        "lookup_us": {name: round(value, 3) for name, value in medians.items()},
        "lookup_near_miss_to_unrelated": round(near_to_unrelated, 3),
    }


def run(scratch: Path) -> dict[str, Any]:
    from service.app import create_app
    from service.config import Settings
    from service.database import create_engine, upgrade
    from service.key_store import KeyStore

    url = f"sqlite:///{scratch}/keys.sqlite3"
    engine = create_engine(url)
    upgrade(engine)
    managed, _ = KeyStore(engine).create("bench", NO_LIMIT)
    engine.dispose()
    env = {
        "RATE_LIMIT": NO_LIMIT,
        "API_KEYS": f"{STATIC_KEY}={NO_LIMIT}",
        "DATABASE_URL": url,
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "info",
    }
    app = create_app(Settings.from_env(env))
    ways = {
        "no key": {},
        "API_KEYS key": {"HTTP_X_API_KEY": STATIC_KEY},
        "managed key": {"HTTP_X_API_KEY": managed},
        # The same as the first, measured the same way: how far apart two ways that cost
        # the same come out (the measurement's own spread).
        "no key, again": {},
    }
    for headers in ways.values():  # warm: first tick, label children, the keys read
        per_request_us(app, headers, 300)
    medians = interleaved_us(app, ways, ROUNDS * COUNT)
    return {
        **lookups(url, managed),
        "requests_per_way": ROUNDS * COUNT,
        "goal_ratio": GOAL,
        "us_per_request": {name: round(value, 2) for name, value in medians.items()},
        "ratio_to_no_key": {
            name: round(value / medians["no key"], 3) for name, value in medians.items()
        },
    }


def readme_line(found: dict[str, Any]) -> str:
    """The README's sentence of these figures (a test holds the two together)."""
    ratio = found["ratio_to_no_key"]
    more = {name: f"{(value - 1) * 100:.1f} %" for name, value in ratio.items()}
    micros = found["us_per_request"]["no key"]
    return (
        f"A request with one of `API_KEYS` costs {more['API_KEYS key']} more than one without "
        f"a key, with a managed key {more['managed key']} (in-process, {micros:.0f} µs a "
        "request without; `make keys-bench`, bench/keys.json)."
    )


def main() -> None:
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="keycost-"))
    report = sys.stdout
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the service's log lines
    with tempfile.TemporaryDirectory() as scratch:
        found = run(Path(scratch))
    (HERE / "keys.json").write_text(json.dumps(found, indent=2) + "\n")
    for name, micros in found["us_per_request"].items():
        ratio = found["ratio_to_no_key"][name]
        print(f"{name:14s} {micros:8.1f} us/request  {ratio:.3f} of no key", file=report)
    print(f"lookup: {found['lookup_us']} us", file=report)


if __name__ == "__main__":
    main()
