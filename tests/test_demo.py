"""``make demo`` (hack/demo.py) runs the disk-space scenario end to end, also twice in a row."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from kubernetes_asyncio import client
from localcluster import REPO, LocalCluster

from kubehelpers import get_task, transcript

pytestmark = pytest.mark.cluster


def run_demo(cluster: LocalCluster, namespace: str) -> str:
    """Run hack/demo.py as ``make demo`` does (bundled model); its output, once it succeeded."""
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
    return out


def test_demo_succeeds_with_the_bundled_model(
    cluster: LocalCluster, crd: Path, namespace: str
) -> None:
    run_demo(cluster, namespace)


async def test_demo_runs_twice_in_a_row(
    cluster: LocalCluster, crd: Path, namespace: str, api: client.ApiClient
) -> None:
    """Run it again at once, as people do.

    The second run deletes the finished task and creates it again straight away: the old
    incarnation's transcript ConfigMaps, not yet garbage-collected, must not get in the way.
    """
    uids: list[str] = []
    for _ in range(2):
        await asyncio.to_thread(run_demo, cluster, namespace)
        obj = await get_task(api, namespace, "disk-cleanup")
        uids.append(obj["metadata"]["uid"])
        entries = await transcript(api, namespace, uids[-1])
        assert [e["kind"] for e in entries] == ["LLM", "Tool", "LLM", "Tool", "LLM"]
    assert uids[0] != uids[1]
