"""What the prod Deployment runs, run here: its command, args and environment (ConfigMap
and Secret resolved) serve the readiness probe's path; three replicas of it behind a
round-robin agree on every price and share the limit exactly."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.deploy.conftest import OVERLAYS, ROOT, container_environment, find, render
from tests.integration.conftest import RedisServer, free_port, wait_until


class Replica:
    def __init__(self, command: list[str], env: dict[str, str], workdir: Path) -> None:
        self.port = int(env["PORT"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            command, env=env, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def wait_ready(self, path: str) -> None:
        def ready() -> bool:
            assert self.process.poll() is None, "the manifest's command exited"
            try:
                return requests.get(self.url + path, timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_until(ready, 30, f"{self.url}{path}")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


def manifest_process(overlay: str) -> tuple[list[str], dict[str, str], dict[str, Any]]:
    documents = render(overlay)
    pod = find(documents, "Deployment", "crypto-service")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    command = [*container["command"], *container.get("args", [])]
    executable = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin" / command[0]
    return (
        [str(executable), *command[1:]],
        container_environment(documents, "crypto-service"),
        container,
    )


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[list[Replica]]:
    started: list[Replica] = []
    yield started
    for replica in started:
        if replica.process.poll() is None:
            replica.stop()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_manifest_command_serves_its_readiness_probe(
    overlay: str, tmp_path: Path, replicas: list[Replica]
) -> None:
    command, env, container = manifest_process(overlay)
    # Only what cannot be the same here: the port, and a writable metrics directory.
    env |= {
        "PATH": os.environ["PATH"],
        "PORT": str(free_port()),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    replica = Replica(command, env, tmp_path)
    replicas.append(replica)
    replica.wait_ready(container["readinessProbe"]["httpGet"]["path"])
    assert requests.get(replica.url + container["livenessProbe"]["httpGet"]["path"], timeout=5).ok
    assert requests.get(f"{replica.url}/crypto-price", timeout=5).ok
    assert replica.stop() == 0


def test_three_prod_replicas_on_one_redis_agree_and_share_the_limit(
    tmp_path: Path, replicas: list[Replica], redis_storage: RedisServer
) -> None:
    command, env, container = manifest_process("prod")
    limit = int(env["RATE_LIMIT"].split("/")[0])
    for index in range(3):
        replica_env = env | {
            "PATH": os.environ["PATH"],
            "PORT": str(free_port()),
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / f"metrics-{index}"),
            "RATE_LIMIT_STORAGE_URI": redis_storage.uri,  # the in-cluster Redis, here
        }
        workdir = tmp_path / f"replica-{index}"
        workdir.mkdir()
        replicas.append(Replica(command, replica_env, workdir))
    for replica in replicas:
        replica.wait_ready(container["readinessProbe"]["httpGet"]["path"])

    # Round-robin, as a Service would spread new connections.
    statuses: Counter[int] = Counter()
    prices: dict[int, set[float]] = defaultdict(set)
    served_by: Counter[int] = Counter()
    for replica in itertools.islice(itertools.cycle(replicas), limit + 30):
        response = requests.get(f"{replica.url}/crypto-price", timeout=5)
        statuses[response.status_code] += 1
        if response.status_code == 200:
            body = response.json()
            prices[body["tick"]].add(body["price"])
            served_by[replica.port] += 1
    assert statuses == {200: limit, 429: 30}
    assert len(served_by) == 3
    assert all(len(p) == 1 for p in prices.values()), prices
