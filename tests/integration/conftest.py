"""Real processes on free loopback ports: redis-server and the service under gunicorn.

A missing binary skips its tests, unless REQUIRE_INTEGRATION=1 (set by .ci/run), which
turns the skip into a failure so CI cannot pass without really running them.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families

HOST = "127.0.0.1"


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (Debian: apt-get install {name})"
        if os.environ.get("REQUIRE_INTEGRATION") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def uri(self) -> str:
        return f"redis://{HOST}:{self.port}"

    def flush(self) -> None:
        redis.Redis(host=HOST, port=self.port).flushall()


def redis_reads(observer: redis.Redis) -> int:
    """How many reads Redis has made from its clients' sockets (INFO stats): one per batch
    of commands that arrived together, whatever their number."""
    stats: dict[str, Any] = observer.info("stats")  # type: ignore[assignment]
    return int(stats["total_reads_processed"])


def redis_answers(port: int) -> bool:
    try:
        return bool(redis.Redis(host=HOST, port=port, socket_timeout=0.2).ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    binary = require_binary("redis-server")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = RedisServer(port, process)
    try:
        wait_until(lambda: redis_answers(port), 10, "redis-server")
        yield server
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def redis_storage(redis_server: RedisServer) -> RedisServer:
    """The session's redis-server, emptied so each test starts with fresh counters."""
    redis_server.flush()
    return redis_server


@dataclass(frozen=True)
class Served:
    """One request as the service's own access log tells it."""

    status: int
    started_at: float  # unix time: the log line's time less the request's duration
    client: str

    def tick(self, tick_seconds: float) -> int:
        """The price tick current when the request was handled."""
        return math.floor(self.started_at / tick_seconds)


def server_side(served: list[Served], tick_seconds: float) -> dict[str, int]:
    """What the service's own access log says of one client's polls: 200s and 429s, 304s
    that came right after a 200 (a wasted poll), ticks that passed between two 200s, and
    those of them that passed while the service answered nothing but 200s (a skip the
    client's schedule caused, not one a refusal or an outage did)."""
    counts = {"fresh": 0, "limited": 0, "wasted": 0, "skipped": 0, "skipped_while_answering": 0}
    last_fresh_tick: int | None = None
    refused_since = False
    previous_status: int | None = None
    for request in served:
        if request.status == 304 and previous_status == 200:
            counts["wasted"] += 1
        if request.status == 429:
            counts["limited"] += 1
        if request.status == 200:
            counts["fresh"] += 1
            tick = request.tick(tick_seconds)
            if last_fresh_tick is not None:
                gap = max(0, tick - last_fresh_tick - 1)
                counts["skipped"] += gap
                if not refused_since:
                    counts["skipped_while_answering"] += gap
            last_fresh_tick, refused_since = tick, False
        elif request.status != 304:
            refused_since = True
        previous_status = request.status
    return counts


def recorded_database(directory: Path, days: float, **env: str) -> str:
    """A history database (DATABASE_URL) in ``directory`` holding the last ``days`` of
    ticks as a service with ``env`` serves them, written by the commands an operator runs
    (``crypto-service db upgrade``, then ``backfill``)."""
    url = f"sqlite:///{directory}/history.sqlite3"
    command = str(Path(sys.executable).parent / "crypto-service")
    full_env = {"PATH": os.environ.get("PATH", ""), **env, "DATABASE_URL": url}
    for args in (["db", "upgrade"], ["backfill", "--days", str(days)]):
        subprocess.run([command, *args], env=full_env, check=True, capture_output=True, timeout=300)
    return url


class Service:
    """``crypto-service`` running under gunicorn, as a user would start it."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.port = int(env["PORT"])
        self.url = f"http://{HOST}:{self.port}"
        self.metrics_dir = Path(env["PROMETHEUS_MULTIPROC_DIR"])
        self.workers = int(env.get("WORKERS", "1"))
        self.log_path = workdir / "service.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "crypto-service")],
            env=env,
            cwd=workdir,  # it must not depend on being started from the repository
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 30) -> None:
        """Ready means every one of the ``WORKERS`` workers is up and serving, not just the
        first: gunicorn forks them one after another, and on a busy machine the last may
        come seconds after the first answers."""

        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"service exited early:\n{self.logs()}")
            if len(self.serving_workers()) < self.workers:
                return False
            try:
                return requests.get(f"{self.url}/readyz", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_until(ready, timeout, f"{self.workers} worker(s) of the service to be serving")
        # And the history recorder beside them, once it has said something (recording,
        # or why not): its metrics exist from then on.
        wait_until(
            lambda: "service.recorder" in self.logs(), timeout, "the history recorder to start"
        )

    def worker_pids(self) -> set[int]:
        """The master's live children but the history recorder: its workers."""
        return {pid for pid in self.children() if not self.is_recorder(pid)}

    def recorder_pid(self) -> int | None:
        return next((pid for pid in self.children() if self.is_recorder(pid)), None)

    def children(self) -> set[int]:
        """The master's children, of any of its threads (the recorder is started from one
        of its own, and each thread lists only the children it forked)."""
        found: set[int] = set()
        for task in Path(f"/proc/{self.process.pid}/task").glob("*"):
            try:
                found.update(int(pid) for pid in (task / "children").read_text().split())
            except FileNotFoundError:
                continue
        return found

    @staticmethod
    def is_recorder(pid: int) -> bool:
        try:
            return b"service.recorder" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            return False

    @contextmanager
    def paused(self, workers: set[int]) -> Iterator[None]:
        """The workers stopped (SIGSTOP) for the block: what is sent meanwhile waits for
        them, or goes to the other workers."""
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in workers:
                os.kill(pid, signal.SIGCONT)

    def serving_workers(self) -> set[int]:
        """Live workers that have logged "worker ready" (their app is built, they accept)."""
        ready: set[int] = set()
        for line in self.logs().splitlines():
            if '"worker ready"' in line:
                try:
                    ready.add(int(json.loads(line)["pid"]))
                except (ValueError, KeyError):
                    continue  # a line cut by the buffer's edge: read again next time
        return ready & self.worker_pids()

    def wait_workers_replaced(self, gone: set[int], timeout: float = 30) -> None:
        """Wait until none of ``gone`` is alive and all ``WORKERS`` workers serve again."""

        def replaced() -> bool:
            serving = self.serving_workers()
            return not (gone & self.worker_pids()) and len(serving) == self.workers

        wait_until(replaced, timeout, f"replacements for workers {sorted(gone)} to be serving")

    def logs(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def served(self, route: str = "/crypto-price") -> list[Served]:
        """The requests to ``route`` as the service logged them, in order."""
        found = []
        for line in self.logs().splitlines():
            if '"event":"request"' not in line:
                continue
            entry = json.loads(line)
            if entry["route"] != route:
                continue
            ended = datetime.datetime.fromisoformat(entry["timestamp"]).timestamp()
            started = ended - entry["duration_ms"] / 1000
            found.append(Served(entry["status"], started, entry["client"]))
        return sorted(found, key=lambda served: served.started_at)

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples matching ``labels`` in a fresh scrape (0 when none)."""
        text = requests.get(f"{self.url}/metrics", timeout=5).text
        return sum(
            float(sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        )

    def wait_in_flight(self, requests_in_flight: int, timeout: float = 15) -> None:
        """Wait until that many requests are being handled (the scrape asking is not one)."""
        wait_until(
            lambda: self.metric("http_requests_in_flight") - 1 >= requests_in_flight,
            timeout,
            f"{requests_in_flight} request(s) in flight",
        )

    def wait_draining(self, session: requests.Session, timeout: float = 10) -> int:
        """After SIGTERM: ask /readyz on a kept-alive connection until it says draining."""
        statuses: list[int] = []

        def draining() -> bool:
            statuses.append(session.get(f"{self.url}/readyz", timeout=5).status_code)
            return statuses[-1] == 503

        wait_until(draining, timeout, f"readiness to turn 503 (saw {statuses[-5:]})")
        return statuses[-1]

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        if not self._log.closed:
            self._log.close()
        return code


ServiceFactory = Callable[..., Service]
CRYPTO_POLL = str(Path(sys.executable).parent / "crypto-poll")


class PollRun:
    """``crypto-poll`` running in the background, its output read line by line as it comes,
    so a test can wait for what the client said instead of sleeping."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [CRYPTO_POLL, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        assert self.process.stdout is not None and self.process.stderr is not None
        streams = ((self.process.stdout, self.stdout), (self.process.stderr, self.stderr))
        self._readers = [
            threading.Thread(target=self._read, args=(stream, lines), daemon=True)
            for stream, lines in streams
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: Any, lines: list[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))

    def wait_for_log(self, text: str, count: int = 1, timeout: float = 30) -> None:
        """Wait until ``count`` stderr lines contain ``text``."""
        wait_until(
            lambda: sum(text in line for line in list(self.stderr)) >= count,
            timeout,
            f"{count} line(s) with {text!r} from crypto-poll (stderr so far: {self.stderr[-5:]})",
        )

    def wait_for_output(self, lines: int, timeout: float = 30) -> None:
        wait_until(lambda: len(self.stdout) >= lines, timeout, f"{lines} price line(s)")

    def send_signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        """Wait for the exit; the exit status, and all of stdout and stderr."""
        code = self.process.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=10)
        return code, "\n".join(self.stdout), "\n".join(self.stderr)


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[ServiceFactory]:
    """``start_service(WORKERS="3", ...)``: a ready service with that environment."""
    started: list[Service] = []

    def start(wait: bool = True, **env: str) -> Service:
        workdir = tmp_path / f"service-{len(started)}"
        workdir.mkdir()
        full_env = {
            "PATH": os.environ.get("PATH", ""),
            "HOST": HOST,
            "PORT": str(free_port()),
            "PROMETHEUS_MULTIPROC_DIR": str(workdir / "metrics"),
            "GRACEFUL_TIMEOUT": "10",
            **env,
        }
        service = Service(full_env, workdir)
        started.append(service)
        if wait:
            service.wait_ready()
        return service

    yield start
    for service in started:
        service.stop()


class Prometheus:
    """Debian's prometheus binary on a free port, scraping what the test says every second."""

    def __init__(
        self, workdir: Path, targets: dict[str, list[str]], rule_files: list[Path]
    ) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        jobs = "\n".join(
            f"  - job_name: {job}\n    static_configs:\n      - targets: {json.dumps(addresses)}"
            for job, addresses in targets.items()
        )
        rules = "\n".join(f"  - {path}" for path in rule_files)
        config = workdir / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files:\n{rules}\nscrape_configs:\n{jobs}\n"
        )
        self._log = (workdir / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                require_binary("prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address={HOST}:{self.port}",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError("prometheus exited: see prometheus.log")
            try:
                return requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_until(ready, 30, "prometheus to become ready")

    def query(self, expr: str, at: float) -> list[dict[str, Any]]:
        answer = requests.get(
            f"{self.url}/api/v1/query", params={"query": expr, "time": str(at)}, timeout=10
        ).json()
        assert answer["status"] == "success", (expr, answer)
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def query_range(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        """The expression at every scrape interval from start to end, as a graph panel draws it."""
        answer = requests.get(
            f"{self.url}/api/v1/query_range",
            params={"query": expr, "start": str(start), "end": str(end), "step": "1"},
            timeout=10,
        ).json()
        assert answer["status"] == "success", (expr, answer)
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


@pytest.fixture
def start_prometheus(tmp_path: Path) -> Iterator[Callable[..., Prometheus]]:
    started: list[Prometheus] = []

    def start(targets: dict[str, list[str]], rule_files: list[Path] | None = None) -> Prometheus:
        workdir = tmp_path / f"prometheus-{len(started)}"
        workdir.mkdir()
        prometheus = Prometheus(workdir, targets, rule_files or [])
        started.append(prometheus)
        return prometheus

    yield start
    for prometheus in started:
        prometheus.stop()


NGINX_SITE = Path(__file__).parents[2] / "deploy" / "nginx" / "crypto-service.conf"


@contextmanager
def nginx_in_front_of(upstream_port: int, workdir: Path) -> Iterator[str]:
    """Debian's nginx with the recommended site (deploy/nginx/), only its two addresses
    and its access log's path (``workdir``/access.log) changed, proxying to
    ``upstream_port``; its URL. It needs no upstream to start."""
    binary = require_binary("nginx")
    port = free_port()
    site = (
        NGINX_SITE.read_text()
        .replace("server 127.0.0.1:5000;", f"server {HOST}:{upstream_port};")
        .replace("listen 8080;", f"listen {HOST}:{port};")
        .replace("/var/log/nginx/crypto-service.access.log", str(workdir / "access.log"))
    )
    assert f"{HOST}:{upstream_port}" in site and f"{HOST}:{port}" in site
    assert str(workdir / "access.log") in site
    (workdir / "site.conf").write_text(site)
    (workdir / "nginx.conf").write_text(
        "daemon off;\nworker_processes 1;\npid nginx.pid;\nerror_log error.log warn;\n"
        "events { worker_connections 256; }\n"
        "http {\n  access_log off;\n  client_body_temp_path body;\n  proxy_temp_path proxy;\n"
        f"  include {workdir / 'site.conf'};\n}}\n"
    )
    process = subprocess.Popen(
        [binary, "-p", str(workdir), "-c", str(workdir / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://{HOST}:{port}"

    def answers() -> bool:
        if process.poll() is not None:
            raise AssertionError((workdir / "error.log").read_text())
        try:
            requests.get(f"{url}/healthz", timeout=1)
            return True
        except requests.RequestException:
            return False

    try:
        wait_until(answers, 15, "nginx to answer")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
