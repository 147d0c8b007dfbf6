"""``make hotpath``: the cost of one ``GET /crypto-price`` in-process, without gunicorn or
the network, for the service and the baselines; ``--profile NAME`` prints a cProfile.

A steadier figure than wrk on a shared machine: it isolates the Python work per request
(what the hot path changes move) from the HTTP server and the load generator. The service
runs as under gunicorn: multiprocess metrics in a scratch directory, one JSON log line per
request (written to /dev/null), the limiter counting every request.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from typing import Any

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def environ(path: str = "/crypto-price") -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "5000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:5000",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }


def call(app: WsgiApp) -> None:
    status: list[str] = []

    def start_response(s: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        status.append(s)

    body = app(environ(), start_response)
    b"".join(body)
    if hasattr(body, "close"):
        body.close()
    if not status[0].startswith("200"):
        raise RuntimeError(f"unexpected status {status[0]}")


def per_request_us(app: WsgiApp, count: int) -> float:
    for _ in range(200):  # warm caches: first tick, label children, compiled regexes
        call(app)
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(count):
            call(app)
        best = min(best, (time.perf_counter() - started) / count * 1e6)
    return best


def build(name: str, redis_uri: str | None) -> WsgiApp:
    from bench import apps
    from bench.bench import NO_LIMIT

    if name == "raw":
        return apps.raw_app
    if name == "flask":
        return apps.create_flask_app()
    from service.app import create_app
    from service.config import Settings

    env = {"RATE_LIMIT": NO_LIMIT, "LOG_FORMAT": "json", "LOG_LEVEL": "info"}
    if name == "service-redis":
        if redis_uri is None:
            raise SystemExit("service-redis needs --redis redis://host:port")
        env.update(RATE_LIMIT_STORAGE_URI=redis_uri, WORKERS="2")
    return create_app(Settings.from_env(env))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--redis", help="redis:// URI for the service-redis target")
    parser.add_argument("--profile", help="print a cProfile of this target instead")
    parser.add_argument("--json", action="store_true", help="one JSON object: target -> us")
    parser.add_argument("targets", nargs="*", default=["raw", "flask", "service"])
    args = parser.parse_args()
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="hotpath-"))
    report = sys.stdout
    # The service's log lines go to stdout: send them to /dev/null, keep the report.
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115
    names = [args.profile] if args.profile else args.targets
    built = {name: build(name, args.redis) for name in names}
    if args.profile:
        app = built[args.profile]
        per_request_us(app, 100)
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(args.count):
            call(app)
        profiler.disable()
        stats = pstats.Stats(profiler, stream=report).sort_stats("tottime")
        stats.print_stats(35)
        return
    baseline = None
    figures = {}
    for name, app in built.items():
        micros = figures[name] = per_request_us(app, args.count)
        if args.json:
            continue
        baseline = baseline or (micros if name == "flask" else None)
        ratio = f"  flask/this {baseline / micros:.2f}" if baseline else ""
        print(f"{name:15s} {micros:8.1f} us/request{ratio}", file=report, flush=True)
    if args.json:
        print(json.dumps(figures), file=report)


if __name__ == "__main__":
    main()
