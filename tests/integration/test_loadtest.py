"""The locust polling load runs headless against the service and reports its summary."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from tests.integration.conftest import ServiceFactory

LOCUSTFILE = Path(__file__).parents[2] / "loadtest" / "locustfile.py"
KEYS = "loadtest-key-00000000001,loadtest-key-00000000002"


def test_locust_pollers_poll_on_the_tick_with_etags(
    start_service: ServiceFactory, tmp_path: Path
) -> None:
    service = start_service(
        PRICE_TICK_SECONDS="1", API_KEYS=",".join(f"{k}=100000/minute" for k in KEYS.split(","))
    )
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "locust"),
            "-f",
            str(LOCUSTFILE),
            "--headless",
            "--host",
            service.url,
            "--users",
            "12",
            "--spawn-rate",
            "12",
            "--run-time",
            "6s",
            "--only-summary",
            "--csv",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "CRYPTO_API_KEYS": KEYS, "CRYPTO_INTERVAL": "0.5"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with (tmp_path / "run_stats.csv").open() as handle:
        rows = {row["Name"]: row for row in csv.DictReader(handle)}
    aggregated = rows["Aggregated"]
    assert int(aggregated["Request Count"]) > 20
    assert int(aggregated["Failure Count"]) == 0
    assert {"/crypto-price", "/v1/prices"} <= set(rows)
    polled = service.metric("polls_total", outcome="not_modified") + service.metric(
        "polls_total", outcome="fresh"
    )
    assert polled > 0
