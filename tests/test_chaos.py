"""Chaos on several replicas (see ``tests/chaos.py``): small in ``make test``, full in
``make chaos`` (marker ``chaos``, deselected by default).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from kubernetes_asyncio import client
from localcluster import REPO, LocalCluster

from chaos import Chaos, Plan, dump
from fakeopenai import FakeServer

pytestmark = pytest.mark.cluster

SMALL = Plan(tasks=20, replicas=2, kills=5, freeze_seconds=3.0, lease_seconds=6.0, within=240)
FULL = Plan(
    tasks=int(os.environ.get("CHAOS_TASKS", "200")),
    replicas=3,
    kills=30,
    freeze_seconds=8.0,
    lease_seconds=15.0,
    within=900,
)


async def run(
    cluster: LocalCluster,
    api: client.ApiClient,
    namespace: str,
    fake: FakeServer,
    tmp_path: Path,
    plan: Plan,
    out: Path | None = None,
) -> None:
    report = await Chaos(cluster, api, namespace, fake, tmp_path, plan).run()
    print("\n" + report.figures())
    dump(report, out or tmp_path / "chaos.json")
    assert report.problems == [], report.figures()
    assert report.disruptions and sum(report.faults.values()) > 0
    assert len([r for r in report.owners if r != "-"]) >= 2, "only one replica ran tasks"


async def test_small_chaos(
    cluster: LocalCluster, crd: Path, api: client.ApiClient, namespace: str, fake: FakeServer,
    tmp_path: Path,
) -> None:  # fmt: skip
    """20 tasks, 2 replicas, 5 SIGKILLs, a 3 s API-server freeze, a replica away and back."""
    await run(cluster, api, namespace, fake, tmp_path, SMALL)


@pytest.mark.chaos
@pytest.mark.timeout(3600)
async def test_full_chaos(
    cluster: LocalCluster, crd: Path, api: client.ApiClient, namespace: str, fake: FakeServer,
    tmp_path: Path,
) -> None:  # fmt: skip
    """``make chaos``: 200 tasks, 3 replicas, 30 SIGKILLs, an 8 s freeze, one replica away."""
    out = REPO / ".cache" / "chaos.json"
    out.parent.mkdir(exist_ok=True)
    await run(cluster, api, namespace, fake, tmp_path, FULL, out)
