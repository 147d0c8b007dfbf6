"""The compose file and the GitHub workflows against their published JSON schemas
(check-jsonschema's vendored copies), plus checkov and the policies we hold them to."""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.deploy.conftest import ROOT, run, tool

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def test_compose_file_follows_the_compose_specification() -> None:
    result = run(
        tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", "deploy/compose.yaml"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    services = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())["services"]
    assert services["crypto-service"]["deploy"]["replicas"] == 2
    assert services["crypto-service"]["environment"]["RATE_LIMIT_STORAGE_URI"].startswith(
        "redis://redis"
    )
    assert {"redis", "prometheus", "grafana", "crypto-poll", "postgres"} <= set(services)
    # Both replicas write one history, on PostgreSQL, migrated before either starts.
    service = services["crypto-service"]
    assert service["environment"]["DATABASE_URL"].startswith("postgresql://prices:")
    assert "@postgres:5432/prices" in service["environment"]["DATABASE_URL"]
    assert service["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["migrate"]["environment"] == {
        "DATABASE_URL": service["environment"]["DATABASE_URL"]
    }
    mounts = " ".join(services["grafana"]["volumes"] + services["prometheus"]["volumes"])
    assert "../grafana/provisioning" in mounts and "./prometheus" in mounts


def test_workflows_follow_the_github_workflow_schema() -> None:
    assert WORKFLOWS
    result = run(
        tool("check-jsonschema"),
        "--builtin-schema",
        "vendor.github-workflows",
        *map(str, WORKFLOWS),
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_checkov_reports_no_failed_workflow_check() -> None:
    result = run(
        tool("checkov"),
        "--directory",
        ".github/workflows",
        "--framework",
        "github_actions",
        "--quiet",
        "--compact",
        "--skip-download",
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflows_are_least_privilege_pinned_and_bounded() -> None:
    for path in WORKFLOWS:
        workflow: dict[str, Any] = yaml.safe_load(path.read_text())
        assert workflow["permissions"] == {"contents": "read"}, path.name
        jobs = workflow["jobs"]
        assert {"lint", "test", "manifests", "image"} <= set(jobs)
        for name, job in jobs.items():
            assert 0 < job["timeout-minutes"] <= 60, name
            for step in job["steps"]:
                if "uses" in step:
                    assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", step["uses"]), step["uses"]
    image_job = yaml.safe_load(WORKFLOWS[0].read_text())["jobs"]["image"]
    script = " ".join(step.get("run", "") for step in image_job["steps"])
    assert "docker build" in script and "/crypto-price" in script and "/metrics" in script
