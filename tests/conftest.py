"""Shared fixtures: the session's real local control plane (see hack/localcluster.py)."""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from kubernetes_asyncio import client
from localcluster import REPO, LocalCluster

from fakeopenai import FakeServer
from kubehelpers import VERSION, api_client, kubectl, new_namespace
from mcpservers import everything, ledger, time_server  # noqa: F401 - fixtures
from operatorproc import OperatorProcess, operator_env

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
    async with api_client(cluster.kubeconfig) as c:
        yield c


@pytest.fixture
async def namespace(api: client.ApiClient) -> str:
    """A fresh namespace per test (left behind: the session's cluster goes away anyway)."""
    return await new_namespace(api)


@pytest.fixture(scope="session")
def crd(cluster: LocalCluster) -> Path:
    """Every CRD of crds/ (AgentTask, AgentModel, …), applied with kubectl and Established."""
    crds = str(REPO / "crds")
    for args in (
        ("apply", "-f", crds),
        ("wait", "--for=condition=Established", "--timeout=60s", "-f", crds),
    ):
        proc = kubectl(cluster, *args)
        assert proc.returncode == 0, proc.stderr
    # Established is not watchable yet: a new kind's watch cache answers 429 "storage is
    # (re)initializing" for a moment, which a test's own watch (unlike kopf's) does not retry.
    for f in sorted((REPO / "crds").glob("*.yaml")):
        group, plural = f.stem.split("_", 1)
        watch = f"/apis/{group}/{VERSION}/{plural}?watch=1&timeoutSeconds=1"
        deadline = time.monotonic() + 60
        while (proc := kubectl(cluster, "get", "--raw", watch)).returncode != 0:
            assert time.monotonic() < deadline, proc.stderr
            time.sleep(0.2)
    return REPO / "crds"


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    """A fresh fake OpenAI + HTTP-tool server."""
    server = FakeServer().start()
    yield server
    server.stop()


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """The operator's workspace for built-in tools."""
    ws = tmp_path / "workspace"
    ws.mkdir()
    return ws


@pytest.fixture
def operator(
    request: pytest.FixtureRequest,
    cluster: LocalCluster,
    crd: Path,
    namespace: str,
    fake: FakeServer,
    workspace: Path,
    tmp_path: Path,
) -> Iterator[OperatorProcess]:
    """The operator as a subprocess watching the test's namespace, talking to ``fake``."""
    env = operator_env(fake.base_url, workspace, tmp_path / "faults")
    proc = OperatorProcess(cluster.kubeconfig, namespace, tmp_path / "operator.log", env)
    yield proc
    proc.stop()
    if request.session.stash.get(_failed, False):
        dest = FAILED_LOGS / f"operator-{request.node.name}.log"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(proc.log, dest)
