"""The Kubernetes manifests: rendered by kustomize, valid for Kubernetes 1.31, valid CRDs,
clean under checkov, and carrying what a production rollout needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy import prometheusrule
from service.config import Settings
from service.database import sqlalchemy_url
from tests.deploy.conftest import (
    CRD_SCHEMAS,
    OVERLAYS,
    ROOT,
    container_environment,
    find,
    render,
    run,
    tool,
    write_documents,
)

BUILT_IN = {
    "Namespace",
    "ServiceAccount",
    "ConfigMap",
    "Secret",
    "Service",
    "Deployment",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "NetworkPolicy",
    "PersistentVolumeClaim",
}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {overlay: render(overlay) for overlay in OVERLAYS}


def test_every_built_in_kind_passes_kubernetes_validate_strict_for_1_31(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    for overlay, documents in rendered.items():
        kinds = {d["kind"] for d in documents}
        assert kinds <= BUILT_IN | set(CRD_SCHEMAS), kinds - BUILT_IN
        built_in = [d for d in documents if d["kind"] in BUILT_IN]
        paths = write_documents(built_in, tmp_path / overlay)
        result = run(
            tool("kubernetes-validate"), "--strict", "-k", "1.31.0", "--quiet", *map(str, paths)
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_strict_validation_rejects_an_unknown_field(tmp_path: Path) -> None:
    """The validator really validates: a misspelt field in a Service fails."""
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": 80, "targetPrt": 80}]},
    }
    path = write_documents([service], tmp_path)[0]
    result = run(tool("kubernetes-validate"), "--strict", "-k", "1.31.0", str(path))
    assert result.returncode != 0


def test_prometheus_operator_resources_pass_their_crd_schemas(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    for overlay, documents in rendered.items():
        custom = [d for d in documents if d["kind"] in CRD_SCHEMAS]
        assert {d["kind"] for d in custom} == {"ServiceMonitor", "PrometheusRule"}
        for document, path in zip(custom, write_documents(custom, tmp_path / overlay), strict=True):
            result = run(
                tool("check-jsonschema"),
                "--regex-variant",
                "python",
                "--schemafile",
                str(CRD_SCHEMAS[document["kind"]]),
                str(path),
            )
            assert result.returncode == 0, result.stdout + result.stderr


def test_checkov_reports_no_failed_check_on_the_rendered_overlays(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    for overlay, documents in rendered.items():
        directory = tmp_path / overlay
        write_documents(documents, directory)
        result = run(
            tool("checkov"),
            "--directory",
            str(directory),
            "--framework",
            "kubernetes",
            "--quiet",
            "--compact",
            "--skip-download",
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Failed checks: 0" in result.stdout


def test_the_prometheus_rule_is_generated_from_the_compose_rules() -> None:
    committed = (ROOT / "k8s" / "base" / "prometheusrule.yaml").read_text()
    assert committed == prometheusrule.render(), "stale PrometheusRule: run `make manifests`"
    rules = yaml.safe_load((ROOT / "deploy/prometheus/rules/crypto-service.rules.yml").read_text())
    assert yaml.safe_load(committed)["spec"]["groups"] == rules["groups"]


def test_prod_deployment_rolls_out_safely_and_runs_hardened(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    documents = rendered["prod"]
    deployment = find(documents, "Deployment", "crypto-service")
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = spec["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} == {
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    }
    container = pod["containers"][0]
    assert container["command"] == ["crypto-service"] and "args" in container
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/tmp", "/var/run/crypto-service/metrics"} <= mounts
    assert all("emptyDir" in v for v in pod["volumes"])
    env = container_environment(documents, "crypto-service")
    assert env["PROMETHEUS_MULTIPROC_DIR"] == "/var/run/crypto-service/metrics"
    assert env["RATE_LIMIT_STORAGE_URI"].startswith("redis://crypto-service-redis")
    # API keys come from the Secret only.
    configmaps = [d for d in documents if d["kind"] == "ConfigMap"]
    assert all("API_KEYS" not in d.get("data", {}) for d in configmaps)
    assert {
        "name": "API_KEYS",
        "valueFrom": {
            "secretKeyRef": {
                "name": find(documents, "Secret", "crypto-service-api-keys")["metadata"]["name"],
                "key": "API_KEYS",
            }
        },
    } in container["env"]


def test_prod_has_the_surrounding_resources(rendered: dict[str, list[dict[str, Any]]]) -> None:
    documents = rendered["prod"]
    service = find(documents, "Service", "crypto-service")
    assert service["spec"]["ports"][0]["name"] == "http"
    hpa = find(documents, "HorizontalPodAutoscaler", "crypto-service")
    assert hpa["apiVersion"] == "autoscaling/v2" and hpa["spec"]["minReplicas"] == 3
    find(documents, "PodDisruptionBudget", "crypto-service")
    assert (
        find(documents, "ServiceAccount", "crypto-service")["automountServiceAccountToken"] is False
    )
    redis_policy = find(documents, "NetworkPolicy", "crypto-service-redis")["spec"]
    assert redis_policy["ingress"][0]["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "crypto-service"}}}
    ]
    redis = find(documents, "Deployment", "crypto-service-redis")["spec"]["template"]["spec"]
    assert redis["securityContext"]["runAsNonRoot"] is True
    assert redis["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    find(documents, "Service", "crypto-service-redis")
    monitor = find(documents, "ServiceMonitor", "crypto-service")
    assert monitor["spec"]["endpoints"][0]["port"] == "http"
    dashboards = [
        d
        for d in documents
        if d["kind"] == "ConfigMap"
        and d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
    ]
    assert len(dashboards) == 1
    generated = (ROOT / "grafana" / "dashboards" / "crypto-service.json").read_text()
    assert dashboards[0]["data"]["crypto-service.json"] == generated
    assert secret_is_marked_as_example()


def secret_is_marked_as_example() -> bool:
    text = (ROOT / "k8s" / "base" / "secret.example.yaml").read_text()
    return "EXAMPLE ONLY" in text and "replace-me" in text


def test_dev_is_one_replica_on_the_embedded_limiter(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    documents = rendered["dev"]
    assert find(documents, "Deployment", "crypto-service")["spec"]["replicas"] == 1
    env = container_environment(documents, "crypto-service")
    assert env["RATE_LIMIT_STORAGE_URI"] == "memory://" and env["WORKERS"] == "1"
    assert not [d for d in documents if "redis" in d["metadata"]["name"]]
    assert not [d for d in documents if d["kind"] == "HorizontalPodAutoscaler"]


@pytest.mark.parametrize("target", ["base", *OVERLAYS])
def test_each_kustomization_applied_alone_keeps_the_limit_exact(target: str) -> None:
    """memory:// counts per process: a target using it runs one replica of one worker that
    is never recycled, and the service accepts its configuration."""
    documents = render(target)
    env = container_environment(documents, "crypto-service")
    settings = Settings.from_env(env)  # raises ConfigError on an inconsistent combination
    if not settings.shared_limit_storage:
        assert find(documents, "Deployment", "crypto-service")["spec"]["replicas"] == 1
        assert settings.workers == 1 and settings.max_requests == 0
        assert not [d for d in documents if d["kind"] == "HorizontalPodAutoscaler"]


def history_volume_is_writable(documents: list[dict[str, Any]]) -> bool:
    """/data (the image's SQLite history) mounted in the app and its init container."""
    pod = find(documents, "Deployment", "crypto-service")["spec"]["template"]["spec"]
    return all(
        "/data" in {m["mountPath"] for m in c["volumeMounts"]}
        for c in [*pod["containers"], *pod["initContainers"]]
    )


def test_base_keeps_the_history_in_the_pods_own_sqlite_file(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    documents = render("base")
    env = container_environment(documents, "crypto-service")
    assert "DATABASE_URL" not in env  # no Secret: the image's default
    assert Settings.from_env(env).database_url == "sqlite:///data/prices.sqlite3"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "DATABASE_URL=sqlite:////data/prices.sqlite3" in dockerfile
    assert history_volume_is_writable(documents)


@pytest.mark.parametrize("target", ["base", *OVERLAYS])
def test_the_schema_is_migrated_before_the_app_starts_with_the_apps_database(
    target: str,
) -> None:
    documents = render(target)
    pod = find(documents, "Deployment", "crypto-service")["spec"]["template"]["spec"]
    (migrate,) = pod["initContainers"]
    assert [*migrate["command"], *migrate["args"]] == [
        "crypto-service", "db", "upgrade", "--if-reachable"
    ]  # fmt: skip
    assert migrate["image"] == pod["containers"][0]["image"]
    app = container_environment(documents, "crypto-service")
    init = container_environment(documents, "crypto-service", init=True)
    assert init.get("DATABASE_URL") == app.get("DATABASE_URL")
    assert migrate["securityContext"] == pod["containers"][0]["securityContext"]
    assert history_volume_is_writable(documents)


def test_dev_runs_one_postgresql_that_only_the_app_reaches(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    documents = rendered["dev"]
    url = sqlalchemy_url(container_environment(documents, "crypto-service")["DATABASE_URL"])
    assert url.host is not None
    service = find(documents, "Service", url.host)
    assert [p["port"] for p in service["spec"]["ports"]] == [url.port]
    postgres = find(documents, "Deployment", url.host)["spec"]["template"]
    assert service["spec"]["selector"].items() <= postgres["metadata"]["labels"].items()
    env = container_environment(documents, url.host)
    assert (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_DB"]) == (
        url.username, url.password, url.database
    )  # fmt: skip
    policy = find(documents, "NetworkPolicy", url.host)["spec"]
    assert policy["ingress"] == [
        {
            "from": [
                {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "crypto-service"}}}
            ],
            "ports": [{"port": url.port, "protocol": "TCP"}],
        }
    ]
    app_policy = find(documents, "NetworkPolicy", "crypto-service")["spec"]
    assert {"ports": [{"port": url.port, "protocol": "TCP"}]} in app_policy["egress"]


def test_prod_requires_the_shared_history_database(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    documents = rendered["prod"]
    pod = find(documents, "Deployment", "crypto-service")["spec"]["template"]["spec"]
    references = [
        entry["valueFrom"]["secretKeyRef"]
        for container in [*pod["containers"], *pod["initContainers"]]
        for entry in container["env"]
        if entry["name"] == "DATABASE_URL"
    ]
    assert (
        references
        == [{"name": "crypto-service-database", "key": "DATABASE_URL", "optional": False}] * 2
    )
    url = container_environment(documents, "crypto-service")["DATABASE_URL"]
    assert sqlalchemy_url(url).drivername.startswith("postgresql")
    text = (ROOT / "k8s" / "overlays" / "prod" / "database-secret.example.yaml").read_text()
    assert "EXAMPLE ONLY" in text and "replace-me" in text


def token_secret_reference(documents: list[dict[str, Any]]) -> dict[str, Any]:
    pod = find(documents, "Deployment", "crypto-service")["spec"]["template"]["spec"]
    (entry,) = [e for e in pod["containers"][0]["env"] if e["name"] == "TOKEN_SECRET"]
    reference: dict[str, Any] = entry["valueFrom"]["secretKeyRef"]
    return reference


def test_prod_replicas_share_one_token_secret(rendered: dict[str, list[dict[str, Any]]]) -> None:
    secret = {"name": "crypto-service-api-keys", "key": "TOKEN_SECRET"}
    assert token_secret_reference(rendered["prod"]) == {**secret, "optional": False}
    assert token_secret_reference(rendered["dev"]) == {**secret, "optional": True}
    example = find(rendered["prod"], "Secret", "crypto-service-api-keys")["stringData"]
    assert len(example["TOKEN_SECRET"]) >= 32 and "replace-me" in example["TOKEN_SECRET"]
