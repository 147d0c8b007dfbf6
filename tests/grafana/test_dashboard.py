"""The committed dashboard is exactly what the code generates, and is importable."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from grafana import dashboard


def committed() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(dashboard.OUTPUT.read_text())
    return document


def all_panels(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(row title, panel) for every non-row panel, nested or not."""
    row = ""
    for panel in document["panels"]:
        if panel["type"] == "row":
            row = panel["title"]
            for nested in panel.get("panels", []):
                yield row, nested
        else:
            yield row, panel


def test_committed_json_is_what_the_code_generates() -> None:
    assert dashboard.OUTPUT.read_text() == dashboard.render(), (
        "grafana/dashboards/crypto-service.json is stale: run `make dashboard`"
    )


def test_dashboard_has_a_fixed_uid_and_the_variables_operators_need() -> None:
    document = committed()
    assert document["uid"] == "crypto-service"
    variables = {v["name"]: v for v in document["templating"]["list"]}
    assert list(variables) == ["datasource", "namespace", "job", "instance", "symbol"]
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "job", "instance", "symbol"):
        assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*"


def test_every_query_uses_the_datasource_variable_and_kubernetes_panels_are_apart() -> None:
    panels = list(all_panels(committed()))
    assert len(panels) >= 14
    for row, panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        kubernetes_only = any(
            word in target["expr"]
            for target in panel["targets"]
            for word in ("container_", "kube_")
        )
        assert kubernetes_only == (row == dashboard.KUBERNETES_ROW), panel["title"]
    titles = {panel["title"] for _, panel in panels}
    for wanted in (
        "Requests per second by route and status",
        "Polls per price change, by symbol",
        "Latency p50 / p95 / p99",
        "5xx ratio",
        "Targets up",
        "Current price",
    ):
        assert wanted in titles
