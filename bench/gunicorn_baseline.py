"""gunicorn settings for the baselines: the service's shape (worker class, workers,
threads, keep-alive, timeouts from the same environment), without its hooks."""

from __future__ import annotations

from service import gunicorn_conf

bind = gunicorn_conf.bind
worker_class = gunicorn_conf.worker_class
workers = gunicorn_conf.workers
threads = gunicorn_conf.threads
keepalive = gunicorn_conf.keepalive
timeout = gunicorn_conf.timeout
graceful_timeout = gunicorn_conf.graceful_timeout
control_socket_disable = True
accesslog = None
loglevel = "warning"
