"""Deploy artefacts as the ecosystem's validators see them: rendered overlays, split per
document, and the validators themselves (from .tools/, else PATH)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import redis_server, redis_storage  # noqa: F401 (fixtures)

ROOT = Path(__file__).parents[2]
OVERLAYS = ("dev", "prod")
SCHEMAS = Path(__file__).parent / "schemas"
CRD_SCHEMAS = {
    "ServiceMonitor": SCHEMAS / "servicemonitor_v1.json",
    "PrometheusRule": SCHEMAS / "prometheusrule_v1.json",
    "PodMonitor": SCHEMAS / "podmonitor_v1.json",
}


def tool(name: str) -> str:
    """A validator from `make tools` (.tools/bin), else from PATH; missing skips, or fails
    under REQUIRE_INTEGRATION=1."""
    local = ROOT / ".tools" / "bin" / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found:
        return found
    message = f"{name} is not installed: run `make tools`"
    if os.environ.get("REQUIRE_INTEGRATION") == "1":
        pytest.fail(message)
    pytest.skip(message)


def run(*command: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=cwd)


def render(overlay: str) -> list[dict[str, Any]]:
    """An overlay's documents; ``render("base")`` renders the base alone."""
    path = ROOT / "k8s" / ("base" if overlay == "base" else f"overlays/{overlay}")
    result = run(tool("kubectl"), "kustomize", str(path))
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def write_documents(documents: list[dict[str, Any]], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, document in enumerate(documents):
        path = directory / f"{index:02d}-{document['kind']}-{document['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(document))
        paths.append(path)
    return paths


def find(documents: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def container_environment(
    documents: list[dict[str, Any]], deployment: str, init: bool = False
) -> dict[str, str]:
    """The app container's (or its first init container's) environment as the kubelet
    would build it: envFrom ConfigMaps and Secrets first, then env entries (values or key
    references) over them; an optional reference to a Secret that is not there is left
    out, a required one fails."""
    spec = find(documents, "Deployment", deployment)["spec"]["template"]["spec"]
    container = spec["initContainers" if init else "containers"][0]

    def data_of(kind: str, name: str, optional: bool = False) -> dict[str, str]:
        if optional and not any(
            d["kind"] == kind and d["metadata"]["name"] == name for d in documents
        ):
            return {}
        source = find(documents, kind, name)
        return {**source.get("data", {}), **source.get("stringData", {})}

    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(data_of("ConfigMap", source["configMapRef"]["name"]))
        if "secretRef" in source:
            env.update(data_of("Secret", source["secretRef"]["name"]))
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
            continue
        reference = entry["valueFrom"]
        if "configMapKeyRef" in reference:
            ref = reference["configMapKeyRef"]
            env[entry["name"]] = data_of("ConfigMap", ref["name"])[ref["key"]]
        else:
            ref = reference["secretKeyRef"]
            found = data_of("Secret", ref["name"], ref.get("optional", False))
            if ref["key"] in found or not ref.get("optional", False):
                env[entry["name"]] = found[ref["key"]]
    return env
