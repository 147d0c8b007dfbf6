"""gunicorn configuration, read from the validated environment.

Used by ``crypto-service`` and usable directly:
``gunicorn -c python:service.gunicorn_conf``. The master owns the Prometheus
multiprocess directory, starts the history recorder, and gives its workers one token
secret when none is configured.
"""

from __future__ import annotations

import gc
import os
import secrets
import signal
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from service.capacity import raise_open_file_limit
from service.config import METRICS_DIR_VARIABLE, ConfigError, Settings
from service.database import prepare_history_database
from service.logs import configure_logging, get_logger, logging_config_dict
from service.recorder_process import RecorderProcess
from service.state import EXTENSION, get_state


def _load_settings() -> Settings:
    try:
        return Settings.from_env(os.environ)
    except ConfigError as exc:
        # SystemExit, not an exception gunicorn would print with a traceback.
        raise SystemExit(f"crypto-service: configuration error: {exc}") from None


def _with_metrics_dir(settings: Settings) -> Settings:
    """The settings with their multiprocess directory (a fresh temporary one unless
    configured), exported for the workers and for prometheus-client, which reads
    PROMETHEUS_MULTIPROC_DIR when it is first imported: that must come after this, which
    is why this module imports nothing that imports prometheus-client (a test holds it)."""
    directory = settings.metrics_dir or tempfile.mkdtemp(prefix="crypto-service-metrics-")
    os.environ[METRICS_DIR_VARIABLE] = directory
    return replace(settings, metrics_dir=directory)


def _with_token_secret(settings: Settings) -> Settings:
    """The settings with a token secret: TOKEN_SECRET's, or one made here and exported,
    so that every worker of this master signs and accepts the same tokens."""
    if settings.token_secret is not None:
        return settings
    secret = secrets.token_urlsafe(32)
    os.environ["TOKEN_SECRET"] = secret
    return replace(settings, token_secret=secret)


settings = _with_token_secret(_with_metrics_dir(_load_settings()))

wsgi_app = "service.app:create_app()"
_host = f"[{settings.host}]" if ":" in settings.host else settings.host
bind = [f"{_host}:{settings.port}"]
# gthread or gevent (WORKER_CLASS), each answering gunicorn's own errors in JSON.
worker_class = {
    "gthread": "service.workers.JsonErrorThreadWorker",
    "gevent": "service.workers.JsonErrorGeventWorker",
}[settings.worker_class]
worker_connections = settings.worker_connections  # gevent: connections per worker
workers = settings.workers
threads = settings.threads
keepalive = settings.keepalive
timeout = settings.timeout
graceful_timeout = settings.graceful_timeout
max_requests = settings.max_requests
max_requests_jitter = settings.max_requests_jitter
proc_name = "crypto-service"
control_socket_disable = True  # gunicorn >= 24 would write a socket under $HOME
accesslog = None  # the app logs each request once, as JSON
logger_class = "service.logs.ServiceGunicornLogger"
errorlog = "-"
loglevel = settings.log_level
logconfig_dict = logging_config_dict(settings.log_format, settings.log_level)


def on_starting(server: Any) -> None:
    """In the master, before any worker exists: prepare the metrics directory."""
    configure_logging(settings.log_format, settings.log_level)
    assert settings.metrics_dir is not None
    path = Path(settings.metrics_dir)
    path.mkdir(parents=True, exist_ok=True)
    # Files left by an earlier run would resurrect its counters: start from zero.
    for stale in path.glob("*.db"):
        stale.unlink()
    log = get_logger("service.startup")
    log.info("starting crypto-service", **settings.describe())
    problem = raise_open_file_limit(settings.worker_connections)
    if problem is not None:
        log.warning(problem)
    prepare_history_database(settings.database_url, log)


def when_ready(server: Any) -> None:
    """The master is listening: start the history recorder beside the workers."""
    recorder.start()


def _archive_recorder(pid: int) -> None:
    from service.metrics_archive import archive_dead_worker

    assert settings.metrics_dir is not None
    archive_dead_worker(settings.metrics_dir, pid)


recorder = RecorderProcess(get_logger("service.recorder"), on_exit=_archive_recorder)


def post_worker_init(worker: Any) -> None:
    """Say the worker is serving, and turn readiness off the moment it is told to stop."""
    state = get_state(worker.wsgi)
    stop = worker.handle_exit

    def drain_then_stop(signum: int, frame: Any) -> None:
        state.start_draining()
        stop(signum, frame)

    signal.signal(signal.SIGTERM, drain_then_stop)
    signal.siginterrupt(signal.SIGTERM, False)
    # What is built by now (the app, its modules, the feed) lives as long as the worker:
    # out of the collector's way, or every full collection walks it all (measured on
    # 24 h of 1m candles: 6 answers in 200 took ~120 ms instead of ~18; none, frozen).
    gc.freeze()
    # gunicorn's "Booting worker" is logged at fork, before the app is built; this line
    # is when the worker accepts requests (what the tests and an operator wait for).
    get_logger("service.worker").info("worker ready", pid=os.getpid())


def worker_exit(server: Any, worker: Any) -> None:
    """In the worker, as it stops: write the API key usage it counted since the last
    batch (if the database does not answer now, those counts are lost)."""
    app = getattr(worker, "wsgi", None)
    if EXTENSION in getattr(app, "extensions", {}):
        get_state(app).usage.flush()


def child_exit(server: Any, worker: Any) -> None:
    """Fold a dead worker's metrics into the master's archive and delete its files, so
    recycled or crashed workers neither lose counts nor slow every scrape down."""
    from service.metrics_archive import archive_dead_worker

    assert settings.metrics_dir is not None
    archive_dead_worker(settings.metrics_dir, worker.pid)


def on_exit(server: Any) -> None:
    recorder.stop()
    sys.stdout.flush()
