"""The scrape config and rules pass promtool, and the rule unit tests pass."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.integration.conftest import require_binary

PROMETHEUS_DIR = Path(__file__).parents[2] / "deploy" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("promtool"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=PROMETHEUS_DIR,
    )


def test_scrape_config_and_rules_are_valid() -> None:
    config = promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr
    rules = promtool("check", "rules", *map(str, sorted(PROMETHEUS_DIR.glob("rules/*.yml"))))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS: 12 rules found" in rules.stdout


def test_every_alert_fires_and_stays_quiet_as_its_unit_tests_say() -> None:
    tests = sorted(str(p) for p in PROMETHEUS_DIR.glob("tests/*.yml"))
    assert tests
    result = promtool("test", "rules", *tests)
    assert result.returncode == 0, result.stdout + result.stderr
    text = (PROMETHEUS_DIR / "tests" / "crypto-service.rules.test.yml").read_text()
    for alert in (
        "ServiceDown",
        "HighErrorRate",
        "HighLatencyP99",
        "RateLimitingSurge",
        "PriceFeedStale",
        "RateLimitStorageErrors",
        "HistoryRecorderLagging",
        "ApiKeysStale",
    ):
        assert f"alertname: {alert}" in text
