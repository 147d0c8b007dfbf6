"""The gunicorn config: loading it exports the metrics directory before anything imports
prometheus-client, which chooses its file-backed values when first imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PROBE = (
    "import json, os, sys\n"
    "import service.gunicorn_conf as conf\n"
    "print(json.dumps({'imported': 'prometheus_client' in sys.modules,"
    " 'exported': os.environ.get('PROMETHEUS_MULTIPROC_DIR'),"
    " 'settings': conf.settings.metrics_dir}))\n"
)


def load_config(**env: str) -> dict[str, object]:
    base = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[2],
    )
    assert result.returncode == 0, result.stderr
    loaded: dict[str, object] = json.loads(result.stdout)
    return loaded


def test_loading_the_config_exports_a_fresh_directory_before_prometheus_client() -> None:
    loaded = load_config()
    assert loaded["imported"] is False, "prometheus_client was imported by the gunicorn config"
    assert isinstance(loaded["exported"], str) and Path(loaded["exported"]).is_dir()
    assert loaded["settings"] == loaded["exported"]


def test_a_configured_directory_is_the_one_used(tmp_path: Path) -> None:
    loaded = load_config(PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    assert loaded["exported"] == loaded["settings"] == str(tmp_path)
    assert loaded["imported"] is False


WORKER_PROBE = (
    "import gc, json\n"
    "import service.gunicorn_conf as conf\n"
    "from service.app import create_app\n"
    "class Worker:\n"
    "    wsgi = create_app()\n"
    "    def handle_exit(self, signum, frame): pass\n"
    "before = gc.get_freeze_count()\n"
    "conf.post_worker_init(Worker())\n"
    "print(json.dumps({'before': before, 'after': gc.get_freeze_count()}))\n"
)


def test_a_worker_freezes_what_it_built_before_it_serves(tmp_path: Path) -> None:
    """Out of the collector's way: a full collection walked the whole app (bench/NOTES.md)."""
    result = subprocess.run(
        [sys.executable, "-c", WORKER_PROBE],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "LOG_LEVEL": "warning",
             "DATABASE_URL": f"sqlite:///{tmp_path}/h.sqlite3"},
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout.splitlines()[-1])
    assert counts["before"] == 0 and counts["after"] > 10_000  # the app's objects
