"""``make bench``: the service against bare baselines, in one process tree, one run.

Targets, each under gunicorn in the service's own shape, loaded with the same wrk run,
alternated round by round (A B C ... A B C ...) so drift hits all alike:

* raw WSGI and bare Flask in the embedded default's shape (1 worker x 8 threads), and the
  service in its embedded default (memory:// limiter);
* raw WSGI and bare Flask in production shape (2 workers x 4 threads), and the service in
  production shape (Redis limiter storage), full instrumentation and JSON logging on.

Then: p99 latency at half the production shape's maximum rate, the /metrics scrape time
with 4 workers, and the polling efficiency of crypto-poll (aligned vs the seed's fixed
loop) against 3 s ticks. Writes bench/results.json, bench/RESULTS.md and bench/chart.png.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from itertools import pairwise
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
BIN = Path(sys.executable).parent
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
DURATION = int(os.environ.get("BENCH_SECONDS", "6"))
HALF_RATE_RUNS = 3
HOTPATH_TARGETS = ("raw", "flask", "service", "service-redis")
CONNECTIONS = 32
POLL_SECONDS = int(os.environ.get("BENCH_POLL_SECONDS", "60"))
# A client started at a random moment of a tick honours --interval (2 s) between polls, so
# its first changes are seen late until its polls reach the ticks' starts (at most two).
SETTLING_CHANGES = 2
NO_LIMIT = "100000000/minute"  # the limiter counts every request but never refuses


@dataclass
class Target:
    name: str
    label: str
    argv: list[str]
    env: dict[str, str]
    runs: list[dict[str, float]] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def require(*binaries: str) -> None:
    missing = [b for b in binaries if shutil.which(b) is None]
    if missing:
        sys.exit(
            f"bench: missing {', '.join(missing)}; it installs nothing itself. "
            f"Debian: apt-get install {' '.join(missing)}"
        )


@contextmanager
def redis_server() -> Iterator[str]:
    """A throwaway redis-server on a free loopback port; yields its URI."""
    port = free_port()
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        yield f"redis://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait()


@contextmanager
def serve(
    argv: list[str], env: dict[str, str], port: int, cwd: Path = ROOT
) -> Iterator[subprocess.Popen[bytes]]:
    full_env = {"PATH": os.environ["PATH"], "HOST": "127.0.0.1", "PORT": str(port), **env}
    process = subprocess.Popen(
        argv, env=full_env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/crypto-price", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"{argv} did not start")
            time.sleep(0.1)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wrk(
    url: str, seconds: int, script: Path | None = None, connections: int = CONNECTIONS
) -> dict[str, float]:
    argv = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if script:
        argv[1:1] = ["-s", str(script)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    latency = {}
    for percentile in ("50", "99"):
        match = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        value, unit = float(match.group(1)), match.group(2)  # type: ignore[union-attr]
        latency[percentile] = value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50_ms": latency["50"],
        "p99_ms": latency["99"],
        "non_2xx": float(errors.group(1)) if errors else 0.0,
    }


def targets(redis_uri: str, metrics_dir: Path) -> list[Target]:
    gunicorn = [str(BIN / "gunicorn"), "-c", "python:bench.gunicorn_baseline"]
    service = [str(BIN / "crypto-service")]
    default_shape = {"WORKERS": "1", "THREADS": "8"}
    prod_shape = {"WORKERS": "2", "THREADS": "4", "RATE_LIMIT_STORAGE_URI": redis_uri}
    instrumented = {"RATE_LIMIT": NO_LIMIT, "LOG_FORMAT": "json", "LOG_LEVEL": "info"}
    return [
        Target("raw_default", "raw WSGI, 1x8", [*gunicorn, "bench.apps:raw_app"], default_shape),
        Target(
            "flask_default",
            "bare Flask, 1x8",
            [*gunicorn, "bench.apps:create_flask_app()"],
            default_shape,
        ),
        Target(
            "service_default",
            "service, embedded default (memory://, 1x8)",
            service,
            {
                **default_shape,
                **instrumented,
                "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir / "default"),
            },
        ),
        Target("raw_prod", "raw WSGI, 2x4", [*gunicorn, "bench.apps:raw_app"], prod_shape),
        Target(
            "flask_prod",
            "bare Flask, 2x4",
            [*gunicorn, "bench.apps:create_flask_app()"],
            prod_shape,
        ),
        Target(
            "service_prod",
            "service, production shape (Redis, 2x4)",
            service,
            {**prod_shape, **instrumented, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir / "prod")},
        ),
    ]


def median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def throughput(all_targets: list[Target]) -> None:
    for round_number in range(1, ROUNDS + 1):
        for target in all_targets:
            port = free_port()
            with serve(target.argv, target.env, port):
                url = f"http://127.0.0.1:{port}/crypto-price"
                wrk(url, 2)  # warm-up: imports, first ticks, connections
                result = wrk(url, DURATION)
            target.runs.append(result)
            print(
                f"round {round_number} {target.label:45s} {result['rps']:8.0f} req/s  "
                f"p50 {result['p50_ms']:.2f} ms  p99 {result['p99_ms']:.2f} ms",
                flush=True,
            )


def latency_at_half_rate(target: Target, max_rps: float, workdir: Path) -> dict[str, Any]:
    """p99 with wrk paced (its Lua delay hook) to half the measured maximum; the median of
    HALF_RATE_RUNS runs, each against a fresh service."""
    connections = 16
    delay_ms = connections * 1000 / (max_rps / 2)
    script = workdir / "paced.lua"
    script.write_text(f"function delay() return {delay_ms:.3f} end\n")
    runs = []
    for _ in range(HALF_RATE_RUNS):
        port = free_port()
        with serve(target.argv, target.env, port):
            url = f"http://127.0.0.1:{port}/crypto-price"
            wrk(url, 2)
            runs.append(wrk(url, DURATION, script, connections))
    return {
        "target_rps": max_rps / 2,
        "rps": median(runs, "rps"),
        "p50_ms": median(runs, "p50_ms"),
        "p99_ms": median(runs, "p99_ms"),
        "runs": runs,
    }


def in_process_costs(redis_uri: str) -> dict[str, float]:
    """bench/hotpath.py: microseconds per request in-process (no server, no network)."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.hotpath", "--json", "--redis", redis_uri, *HOTPATH_TARGETS],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    return {k: float(v) for k, v in json.loads(out.strip().splitlines()[-1]).items()}


def scrape_time(redis_uri: str, metrics_dir: Path) -> dict[str, float]:
    port = free_port()
    env = {
        "WORKERS": "4",
        "THREADS": "4",
        "RATE_LIMIT_STORAGE_URI": redis_uri,
        "RATE_LIMIT": NO_LIMIT,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir / "scrape"),
    }
    with serve([str(BIN / "crypto-service")], env, port):
        base = f"http://127.0.0.1:{port}"
        wrk(f"{base}/crypto-price", 3)  # every worker has samples to merge
        for path in ("/v1/prices", "/v1/prices/BTC/history", "/nope"):
            requests.get(base + path, timeout=5)
        session = requests.Session()
        timings = []
        for _ in range(60):
            started = time.perf_counter()
            session.get(f"{base}/metrics", timeout=10).raise_for_status()
            timings.append((time.perf_counter() - started) * 1000)
    timings.sort()
    return {
        "median_ms": statistics.median(timings),
        "p95_ms": timings[int(len(timings) * 0.95)],
        "files": float(len(list((metrics_dir / "scrape").glob("*.db")))),
    }


def polling_efficiency(metrics_dir: Path) -> dict[str, dict[str, float]]:
    """crypto-poll at its defaults against 3 s ticks, beside the seed-style fixed loop."""
    port = free_port()
    results = {}
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir / "poll"), "RATE_LIMIT": NO_LIMIT}
    with serve([str(BIN / "crypto-service")], env, port):
        clients = {
            mode: subprocess.Popen(
                [
                    str(BIN / "crypto-poll"),
                    "--url",
                    f"http://127.0.0.1:{port}",
                    "--log-format",
                    "json",
                    "--output",
                    "json",
                    *flags,
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for mode, flags in (("aligned", []), ("fixed", ["--no-align"]))
        }
        time.sleep(POLL_SECONDS)
        for mode, client in clients.items():
            client.send_signal(signal.SIGINT)
            stdout, stderr = client.communicate(timeout=15)
            summary = next(
                json.loads(line)
                for line in stderr.splitlines()
                if line.startswith("{") and '"summary"' in line
            )
            delays = change_delays([json.loads(line) for line in stdout.splitlines()])
            results[mode] = {
                "requests": summary["requests"],
                "price_changes": summary["price_changes"],
                # The first poll only learns the starting price: every later request is
                # spent on seeing changes.
                "requests_per_change": (summary["requests"] - 1) / max(1, summary["price_changes"]),
                "mean_delay_s": statistics.fmean(delays),
                "settled_mean_delay_s": statistics.fmean(delays[SETTLING_CHANGES:]),
                "delays_s": [round(d, 3) for d in delays],
            }
    return results


def change_delays(quotes: list[dict[str, Any]]) -> list[float]:
    """Seconds from each price change to the answer that showed it, by the server's own
    clock (the answer's ``timestamp`` against the tick's ``updated_at``), for every quote
    the client printed after the first (which only learns the starting price)."""
    return [
        quote["timestamp"] - quote["updated_at"]
        for previous, quote in pairwise(quotes)
        if quote["tick"] != previous["tick"]
    ]


def machine() -> dict[str, str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[
        0
    ]
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory_gib": f"{int(memory) / 2**20:.0f}",
        "python": platform.python_version(),
        "kernel": platform.release(),
        "gunicorn": version("gunicorn"),
        "flask": version("flask"),
        "limits": version("limits"),
        "redis": version("redis"),
        "prometheus_client": version("prometheus-client"),
        "structlog": version("structlog"),
        "wrk": wrk_version.strip(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def main() -> None:
    require("wrk", "redis-server")
    with (
        tempfile.TemporaryDirectory(prefix="crypto-bench-") as scratch,
        redis_server() as redis_uri,
    ):
        workdir = Path(scratch)
        all_targets = targets(redis_uri, workdir)
        throughput(all_targets)
        by_name = {t.name: t for t in all_targets}
        prod = by_name["service_prod"]
        half = latency_at_half_rate(prod, median(prod.runs, "rps"), workdir)
        print(
            f"p99 at half rate ({half['target_rps']:.0f} req/s): {half['p99_ms']:.2f} ms",
            flush=True,
        )
        hotpath = in_process_costs(redis_uri)
        print(f"in-process us/request: {hotpath}", flush=True)
        scrape = scrape_time(redis_uri, workdir)
        print(f"/metrics with 4 workers: median {scrape['median_ms']:.1f} ms", flush=True)
        polling = polling_efficiency(workdir)
        print(f"polling: {polling}", flush=True)
    results = {
        "machine": machine(),
        "settings": {
            "rounds": ROUNDS,
            "seconds": DURATION,
            "connections": CONNECTIONS,
            "poll_seconds": POLL_SECONDS,
            "settling_changes": SETTLING_CHANGES,
        },
        "throughput": {
            t.name: {
                "label": t.label,
                "runs": t.runs,
                "median_rps": median(t.runs, "rps"),
                "median_p50_ms": median(t.runs, "p50_ms"),
                "median_p99_ms": median(t.runs, "p99_ms"),
            }
            for t in all_targets
        },
        "latency_at_half_rate": half,
        "in_process_us": hotpath,
        "scrape": scrape,
        "polling": polling,
    }
    (BENCH / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    from bench.report import write_report

    write_report(results)
    print(f"wrote {BENCH / 'RESULTS.md'} and {BENCH / 'chart.png'}")


if __name__ == "__main__":
    main()
