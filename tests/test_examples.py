"""Every manifest in examples/ is accepted by the real API server (server-side dry run)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from localcluster import REPO, LocalCluster

from kubehelpers import kubectl

pytestmark = pytest.mark.cluster

EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


def test_there_are_examples() -> None:
    assert {p.name for p in EXAMPLES} >= {
        "disk-cleanup.yaml",
        "http-tools.yaml",
        "retry-deadline.yaml",
        "secret-api-key.yaml",
    }


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_is_valid(cluster: LocalCluster, crd: Path, namespace: str, path: Path) -> None:
    proc = kubectl(cluster, "apply", "--dry-run=server", "-n", namespace, "-f", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "(server dry run)" in proc.stdout


@pytest.mark.parametrize("name", ["argocd-application.yaml", "flux-helmrelease.yaml"])
def test_gitops_examples_point_at_the_chart(name: str) -> None:
    docs = list(yaml.safe_load_all((REPO / "examples" / "gitops" / name).read_text()))
    text = str(docs)
    assert "charts/agenttask-operator" in text
    assert (REPO / "charts" / "agenttask-operator" / "Chart.yaml").exists()
    values = next(d for d in docs if d["kind"] in ("Application", "HelmRelease"))
    spec = values["spec"]
    chart_values = spec.get("values") or spec["source"]["helm"]["valuesObject"]
    chart_defaults = yaml.safe_load((REPO / "charts/agenttask-operator/values.yaml").read_text())
    assert set(chart_values) <= set(chart_defaults)  # only values the chart knows
