"""Worker CPU per request: what the wrk ratio cannot show.

``python -m bench.workercpu [--rounds N] [--class gevent,gthread] [--json PATH] [TARGET ...]``
serves each of ``make bench``'s targets (default: bare Flask and the service in production
shape) fresh per round under each worker class, alternated, and reads the CPU time of the
workers and of redis-server from ``/proc/<pid>/stat`` around the same wrk run: microseconds
per request in the workers (and how much of it in the kernel) and in Redis. Variations:
``--env NAME=VALUE`` (repeatable) sets the service's environment on every target;
``TARGET@REV`` serves that target from the code of a git revision (exported to a scratch
directory, the same installed dependencies), so old and new code are measured side by side
in one run: ``service_default@db2b652 service_default flask_default``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import redis

from bench.bench import (
    DURATION,
    ROOT,
    free_port,
    machine,
    redis_server,
    require,
    serve,
    targets,
    wrk,
)
from bench.procfs import children, cpu_of

COLUMNS = ("rps", "worker_us", "worker_kernel_us", "redis_us")


def export_revision(revision: str, into: Path) -> Path:
    """The tree of ``revision`` written under ``into``; its commit id is checked first."""
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{revision}^{{commit}}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit], cwd=ROOT, capture_output=True, check=True
    ).stdout
    tree = into / commit[:12]
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tree, filter="data")
    return tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--class", dest="classes", default="gevent")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--json", type=Path, help="also write the runs and medians here")
    parser.add_argument("targets", nargs="*", default=["flask_prod", "service_prod"])
    args = parser.parse_args()
    require("wrk", "redis-server")
    extra = dict(item.split("=", 1) for item in args.env)
    rows: dict[str, list[tuple[float, float, float, float]]] = {}
    with redis_server() as uri, tempfile.TemporaryDirectory() as scratch:
        server: dict[str, Any] = redis.Redis.from_url(uri).info("server")  # type: ignore[assignment]
        redis_pid = int(server["process_id"])
        by_name = {t.name: t for t in targets(uri, Path(scratch))}
        trees = {
            revision: export_revision(revision, Path(scratch))
            for revision in {spec.partition("@")[2] for spec in args.targets} - {""}
        }
        for round_number in range(args.rounds):
            for worker_class in args.classes.split(","):
                for spec in args.targets:
                    name, _, revision = spec.partition("@")
                    target = by_name[name]
                    tree = trees.get(revision, ROOT)
                    metrics = f"{scratch}/{name}-{revision}-{worker_class}-{round_number}"
                    env = {
                        **target.env,
                        "WORKER_CLASS": worker_class,
                        **extra,
                        "PROMETHEUS_MULTIPROC_DIR": metrics,
                    }
                    if revision:
                        env["PYTHONPATH"] = str(tree)
                    os.makedirs(metrics, exist_ok=True)
                    port = free_port()
                    with serve(target.argv, env, port, cwd=tree) as master:
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
                    rows.setdefault(f"{spec} ({worker_class})", []).append(row)
                    print(
                        f"round {round_number + 1} {spec:24s} {worker_class:8s} "
                        f"{row[0]:8.0f} req/s  workers {row[1]:6.1f} us/request "
                        f"(kernel {row[2]:5.1f})  redis-server {row[3]:5.1f} us/request",
                        flush=True,
                    )
    medians = {
        label: dict(
            zip(COLUMNS, (statistics.median(c) for c in zip(*runs, strict=True)), strict=True)
        )
        for label, runs in rows.items()
    }
    print("\nmedians:")
    for label, m in medians.items():
        print(
            f"{label:40s} {m['rps']:8.0f} req/s  workers {m['worker_us']:6.1f} us/request "
            f"(kernel {m['worker_kernel_us']:5.1f})  redis-server {m['redis_us']:5.1f} us/request"
        )
    if args.json:
        runs = {
            label: [dict(zip(COLUMNS, r, strict=True)) for r in rs] for label, rs in rows.items()
        }
        record = {
            "machine": machine(),
            "settings": {"rounds": args.rounds, "seconds": DURATION, "env": extra},
            "runs": runs,
            "medians": medians,
        }
        args.json.write_text(json.dumps(record, indent=2) + "\n")


def readme_line(record: dict[str, Any]) -> str:
    """One line for the README from a ``--json`` record of a run with ``TARGET@REV``: each
    target's median throughput and worker CPU per request, the revision beside today's."""
    medians = record["medians"]
    parts = [
        f"{label.removesuffix(' (gevent)')} {m['rps']:,.0f} req/s, {m['worker_us']:,.0f} µs of "
        "worker CPU per request"
        for label, m in medians.items()
    ]
    return (
        f"{record['settings']['rounds']} alternated rounds, medians ({record['machine']['date']}): "
        + "; ".join(parts)
        + "."
    )


if __name__ == "__main__":
    main()
