"""Shared fixtures: the session's real local control plane (see hack/localcluster.py)."""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from kubernetes_asyncio import client, config

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "hack"))

from localcluster import LocalCluster  # noqa: E402

FAILED_LOGS = REPO / ".cache" / "test-logs"


def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> None:
    """Remember whether any test failed, so that the cluster's logs are kept."""
    if call.excinfo is not None and call.when in ("setup", "call"):
        item.session.stash[_failed] = True


_failed = pytest.StashKey[bool]()


@pytest.fixture(scope="session")
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    """Start etcd + kube-apiserver + kube-controller-manager once per test session."""
    workdir = tmp_path_factory.mktemp("cluster")
    lc = LocalCluster(workdir)
    with lc:
        yield lc
    if request.session.stash.get(_failed, False) or os.environ.get("KEEP_CLUSTER_LOGS"):
        dest = FAILED_LOGS / time.strftime("%Y%m%d-%H%M%S")
        shutil.copytree(lc.logs, dest)
        sys.stderr.write(f"\ncontrol-plane logs kept in {dest}\n")


@pytest.fixture
async def api(cluster: LocalCluster) -> AsyncIterator[client.ApiClient]:
    """An admin API client (kubernetes_asyncio) for the session's cluster."""
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(cluster.kubeconfig), client_configuration=cfg)
    async with client.ApiClient(cfg) as c:
        yield c
