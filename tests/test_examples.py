"""Every manifest in examples/ is accepted by the real API server (server-side dry run), and the
GitOps examples point at the chart and at a folder of AgentTaskSchedules that applies.
"""

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
        "schedule.yaml",
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


AGENTS = REPO / "examples" / "gitops" / "agents"


def test_gitops_schedules_folder_applies(
    cluster: LocalCluster, crd: Path, namespace: str, tmp_path: Path
) -> None:
    """examples/gitops/agents/ (what the GitOps tool applies) is valid, in any namespace."""
    built = kubectl(cluster, "kustomize", str(AGENTS))
    assert built.returncode == 0, built.stderr
    docs = [d for d in yaml.safe_load_all(built.stdout) if d]
    assert {d["kind"] for d in docs} == {"AgentTaskSchedule"} and len(docs) >= 2
    for d in docs:
        d["metadata"]["namespace"] = namespace
    stream = tmp_path / "agents.yaml"
    stream.write_text(yaml.safe_dump_all(docs))
    proc = kubectl(cluster, "apply", "--dry-run=server", "-f", str(stream))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("(server dry run)") == len(docs)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("schedules-argocd-application.yaml", "Application"),
        ("schedules-flux-kustomization.yaml", "Kustomization"),
    ],
)
def test_gitops_schedule_examples_apply_a_folder_like_agents(name: str, kind: str) -> None:
    docs = list(yaml.safe_load_all((REPO / "examples" / "gitops" / name).read_text()))
    app = next(d for d in docs if d["kind"] == kind)
    path = app["spec"].get("path") or app["spec"]["source"]["path"]
    assert path.strip("./") == AGENTS.name
    if kind == "Kustomization":
        assert app["spec"]["prune"] is True
    else:
        assert app["spec"]["syncPolicy"]["automated"]["prune"] is True
