"""The Dockerfile: hadolint and checkov clean, and its command runs here as written."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import requests
from dockerfile_parse import DockerfileParser

from tests.deploy.conftest import ROOT, run, tool
from tests.integration.conftest import free_port, wait_until


def parsed() -> DockerfileParser:
    return DockerfileParser(path=str(ROOT / "Dockerfile"))


def test_hadolint_is_clean_at_warning_level() -> None:
    result = run(tool("hadolint"), "--failure-threshold", "warning", "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_checkov_reports_no_failed_dockerfile_check() -> None:
    result = run(
        tool("checkov"),
        "--file",
        "Dockerfile",
        "--framework",
        "dockerfile",
        "--quiet",
        "--compact",
        "--skip-download",
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_shape() -> None:
    dockerfile = parsed()
    stages = [i for i in dockerfile.structure if i["instruction"] == "FROM"]
    assert len(stages) == 2, "multi-stage: build tools stay in the first stage"
    assert all("slim" in s["value"] and ":latest" not in s["value"] for s in stages)
    final = dockerfile.structure[dockerfile.structure.index(stages[-1]) :]
    instructions = {i["instruction"]: i["value"] for i in final}
    assert instructions["USER"] == "10001:10001"
    assert instructions["EXPOSE"] == "5000"
    assert "HEALTHCHECK" in instructions
    assert not any(i["instruction"] == "RUN" for i in final), "nothing built in the final stage"
    ignored = (ROOT / ".dockerignore").read_text()
    assert ignored.splitlines()[1] == "*"


def test_entrypoint_and_healthcheck_run_here(tmp_path: Path) -> None:
    """The image's ENTRYPOINT with the image's ENV (on a free port, with the metrics
    directory under a temporary /tmp), then its HEALTHCHECK command against it."""
    dockerfile = parsed()
    entrypoint = json.loads(
        next(i["value"] for i in dockerfile.structure if i["instruction"] == "ENTRYPOINT")
    )
    image_env = dockerfile.envs
    port = free_port()
    env = {
        **{name: value for name, value in image_env.items() if name != "PATH"},
        "PATH": os.environ["PATH"],
        "PROMETHEUS_MULTIPROC_DIR": str(
            tmp_path / image_env["PROMETHEUS_MULTIPROC_DIR"].lstrip("/")
        ),
        "PORT": str(port),
        "DATABASE_URL": image_env["DATABASE_URL"].replace("sqlite:///", f"sqlite:///{tmp_path}", 1),
    }
    executable = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin"
    process = subprocess.Popen(
        [str(executable / entrypoint[0]), *entrypoint[1:]],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def ready() -> bool:
            try:
                return requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1).ok
            except requests.RequestException:
                return False

        wait_until(ready, 20, "the image's entrypoint to serve")
        history = tmp_path / "data" / "prices.sqlite3"  # the image's /data volume
        wait_until(history.exists, 10, "the price history on the image's volume")
        healthcheck = json.loads(
            next(
                i["value"] for i in dockerfile.structure if i["instruction"] == "HEALTHCHECK"
            ).split("CMD", 1)[1]
        )
        command = [part.replace("127.0.0.1:5000", f"127.0.0.1:{port}") for part in healthcheck]
        command[0] = str(executable / command[0])
        started = time.monotonic()
        assert subprocess.run(command, timeout=10).returncode == 0
        assert time.monotonic() - started < 3
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0
