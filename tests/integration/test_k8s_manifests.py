"""The Kubernetes manifests, offline: every overlay renders (kubectl kustomize, from the lock) and
validates against the Kubernetes 1.37 schemas (kubernetes-validate, strict), and the rules the
manifests promise hold: requests, limits and probes everywhere, the matcher Guaranteed with an integer
CPU, no secret in git for production, the local overlay's memory under the source project's 8.3 GB,
dashboards and alerts that use only metrics the code exports, runbooks for every alert."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from perpline import REPO_ROOT

K8S = REPO_ROOT / "k8s"
BIN = Path(sys.executable).parent
OVERLAYS = ("local", "production")


def render(overlay: str) -> list[dict[str, Any]]:
    out = subprocess.run([str(BIN / "kubectl"), "kustomize", str(K8S / "overlays" / overlay)], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(d["kind"], d["metadata"]["name"], d["spec"]["template"]["spec"]) for d in docs
            if d["kind"] in ("Deployment", "StatefulSet", "Job")]


def memory_bytes(text: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    return int(float(text[:-2]) * units[text[-2:]]) if text[-2:] in units else int(text)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates(overlay: str, tmp_path: Path) -> None:
    docs = render(overlay)
    rendered = tmp_path / f"{overlay}.yaml"
    rendered.write_text(yaml.safe_dump_all(docs))
    done = subprocess.run([str(BIN / "kubernetes-validate"), "--strict", "--quiet", str(rendered)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    kinds = {d["kind"] for d in docs}
    assert {"StatefulSet", "Deployment", "Job", "Service", "Ingress", "HorizontalPodAutoscaler", "PodDisruptionBudget",
            "NetworkPolicy", "ConfigMap"} <= kinds
    for kind, name, spec in pod_specs(docs):
        for container in spec["containers"]:
            resources = container.get("resources", {})
            assert resources.get("requests") and resources.get("limits"), (name, "resources")
            if kind != "Job":
                assert container.get("readinessProbe") and container.get("livenessProbe"), (name, "probes")
    matcher = next(spec for kind, name, spec in pod_specs(docs) if name == "matcher")["containers"][0]["resources"]
    assert matcher["requests"] == matcher["limits"] and re.fullmatch(r"\d+", str(matcher["limits"]["cpu"]))
    if overlay == "production":
        assert not [d for d in docs if d["kind"] == "Secret"]  # referenced, never committed
    if overlay == "local":
        requested = sum(memory_bytes(c["resources"]["requests"]["memory"]) for kind, _, spec in pod_specs(docs)
                        if kind != "Job" for c in spec["containers"])
        print(f"local overlay requests {requested / 2**30:.2f} GiB of memory")
        assert requested < 4 * 2**30  # the source project's kind setup needs about 8.3 GB


def exported_metrics() -> set[str]:
    names = set()
    for path in (REPO_ROOT / "perpline").rglob("*.py"):
        names |= set(re.findall(r'(?:Counter|Gauge|Histogram)\(\s*"(perpline_[a-z0-9_]+)"', path.read_text()))
    return names


def used_metrics(expr: str) -> set[str]:
    found = set(re.findall(r"\b(perpline_[a-z0-9_]+?)(?:_bucket|_count|_sum)?\b", expr))
    return {re.sub(r"_(bucket|count|sum)$", "", name) for name in found}


def test_dashboards_and_alerts_use_exported_metrics_and_have_runbooks() -> None:
    exported = exported_metrics()
    boards = list((K8S / "base" / "dashboards").glob("*.json"))
    assert len(boards) == 5
    for board in boards:
        panels = json.loads(board.read_text())["panels"]
        assert len(panels) >= 4, board.name
        for p in panels:
            for target in p["targets"]:
                assert used_metrics(target["expr"]) <= exported, (board.name, target["expr"])
    rules = yaml.safe_load((K8S / "base" / "alerts" / "perpline.rules.yaml").read_text())["groups"][0]["rules"]
    runbooks = (REPO_ROOT / "docs" / "runbooks.md").read_text()
    for rule in rules:
        assert used_metrics(rule["expr"]) <= exported | {"kafka_consumergroup_lag"}, rule["alert"]
        anchor = rule["annotations"]["runbook_url"].split("#")[1]
        assert f"## {anchor.replace('-', ' ')}" in runbooks.lower(), rule["alert"]
    app = yaml.safe_load((K8S / "argocd" / "application.yaml").read_text())
    assert app["spec"]["source"]["path"] == "k8s/overlays/production"
