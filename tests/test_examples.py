"""Every manifest in examples/ is accepted by the real API server (server-side dry run)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from localcluster import REPO, LocalCluster

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
    proc = subprocess.run(
        [str(cluster.kubectl), "apply", "--dry-run=server", "-n", namespace, "-f", str(path)],
        env={
            "KUBECONFIG": str(cluster.kubeconfig),
            "PATH": "/usr/bin:/bin",
            "HOME": str(cluster.workdir),
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "(server dry run)" in proc.stdout
