"""Worker CPU per request: what the wrk ratio cannot show.

``python -m bench.workercpu [--rounds N] [--class gevent,gthread] [TARGET ...]`` serves
each of ``make bench``'s targets (default: bare Flask and the service in production
shape) fresh per round under each worker class, alternated, and reads the CPU time of the
workers and of redis-server from ``/proc/<pid>/stat`` around the same wrk run: microseconds
per request in the workers (and how much of it in the kernel) and in Redis. Variations:
``--env NAME=VALUE`` (repeatable) sets the service's environment on every target.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

import redis

from bench.bench import DURATION, free_port, redis_server, require, serve, targets, wrk
from bench.procfs import children, cpu_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--class", dest="classes", default="gevent")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("targets", nargs="*", default=["flask_prod", "service_prod"])
    args = parser.parse_args()
    require("wrk", "redis-server")
    extra = dict(item.split("=", 1) for item in args.env)
    rows: dict[str, list[tuple[float, float, float, float]]] = {}
    with redis_server() as uri, tempfile.TemporaryDirectory() as scratch:
        server: dict[str, Any] = redis.Redis.from_url(uri).info("server")  # type: ignore[assignment]
        redis_pid = int(server["process_id"])
        by_name = {t.name: t for t in targets(uri, Path(scratch))}
        for round_number in range(args.rounds):
            for worker_class in args.classes.split(","):
                for name in args.targets:
                    target = by_name[name]
                    metrics = f"{scratch}/{name}-{worker_class}-{round_number}"
                    env = {
                        **target.env,
                        "WORKER_CLASS": worker_class,
                        **extra,
                        "PROMETHEUS_MULTIPROC_DIR": metrics,
                    }
                    port = free_port()
                    with serve(target.argv, env, port) as master:
                        url = f"http://127.0.0.1:{port}/crypto-price"
                        wrk(url, 2)  # warm-up
                        workers = children(master.pid)
                        before, redis_before = cpu_of(workers), cpu_of([redis_pid])
                        result = wrk(url, DURATION)
                        after, redis_after = cpu_of(workers), cpu_of([redis_pid])
                    requests = result["rps"] * DURATION
                    row = (
                        result["rps"],
                        (after.total - before.total) / requests * 1e6,
                        (after.system - before.system) / requests * 1e6,
                        (redis_after.total - redis_before.total) / requests * 1e6,
                    )
                    rows.setdefault(f"{name} ({worker_class})", []).append(row)
                    print(
                        f"round {round_number + 1} {name:16s} {worker_class:8s} "
                        f"{row[0]:8.0f} req/s  workers {row[1]:6.1f} us/request "
                        f"(kernel {row[2]:5.1f})  redis-server {row[3]:5.1f} us/request",
                        flush=True,
                    )
    print("\nmedians:")
    for label, runs in rows.items():
        rps, worker, kernel, redis_us = (
            statistics.median(column) for column in zip(*runs, strict=True)
        )
        print(
            f"{label:32s} {rps:8.0f} req/s  workers {worker:6.1f} us/request "
            f"(kernel {kernel:5.1f})  redis-server {redis_us:5.1f} us/request"
        )


if __name__ == "__main__":
    main()
