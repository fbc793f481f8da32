"""``make demo`` (hack/demo.py) runs the disk-space scenario end to end and succeeds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from localcluster import REPO, LocalCluster

pytestmark = pytest.mark.cluster


def test_demo_succeeds_with_the_bundled_model(
    cluster: LocalCluster, crd: Path, namespace: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AGENTTASK_"))}
    env |= {
        "KUBECONFIG": str(cluster.kubeconfig),
        "DEMO_NAMESPACE": namespace,
        "DEMO_TIMEOUT": "120",
    }
    proc = subprocess.run(
        [sys.executable, str(REPO / "hack" / "demo.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "BUNDLED DEMO MODEL, a scripted stand-in, not an LLM" in out
    assert "now: running tool check_disk" in out
    assert "now: running tool clean_logs" in out
    assert "phase=Succeeded iterations=3" in out
    assert (
        "demo: result: Your logs were using 3.7 MiB. I deleted 4 log files and freed 3.7 MiB" in out
    )
    assert "demo: logs left in the workspace: 0 bytes" in out
