"""The chart's RBAC is enough, and every rule counts: the operator runs here as the chart's
ServiceAccount (a token from TokenRequest, nothing else in its kubeconfig).

* Some namespaces (the session cluster): the chart's Role + RoleBinding in the test namespace
  and its small ClusterRole; the operator watches that namespace. The end-to-end disk-space
  scenario, a SIGKILL + restart, a TTL deletion and an AgentTaskSchedule (tasks created, run
  and pruned) pass, and kopf logs no 403 at all; the token can do nothing else
  (``kubectl auth can-i``).
* All namespaces (a cluster of its own, so that no other test's task is picked up): the chart's
  default ClusterRole, the operator without ``--namespace``. The disk-space scenario passes;
  without ``create`` on ConfigMaps a task makes no progress, and with it back a task succeeds.

docs/install.md lists every rule and what breaks without it.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from localcluster import REPO, LocalCluster

import test_agenttask_e2e
import test_crash_resume
import test_schedule_e2e
from fakeopenai import FakeServer, completion
from kubehelpers import (
    api_client,
    create_task,
    eventually,
    get_task,
    new_namespace,
    settled,
    task_gone,
    wait_phase,
)
from operatorproc import OperatorProcess, operator_env
from packaging_helpers import (
    forbidden_lines,
    kubectl_apply,
    only,
    rbac_manifests,
    run,
    service_account_token,
    token_kubeconfig,
    tool_env,
)
from scenarios import DISK_INPUT, disk_model, three_step_model

pytestmark = pytest.mark.cluster

OPERATOR_NAMESPACE = "agenttask-system"


async def restricted_operator(
    lc: LocalCluster,
    api: client.ApiClient,
    objs: list[dict[str, Any]],
    tmp_path: Path,
    namespace: str,
    env: dict[str, str],
    *,
    all_namespaces: bool = False,
) -> OperatorProcess:
    """Apply the chart's RBAC objects; return an operator that authenticates as its SA only."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    kubectl_apply(lc, home, objs)
    sa = only(objs, "ServiceAccount")["metadata"]
    token = await service_account_token(api, sa["namespace"], sa["name"])
    kubeconfig = token_kubeconfig(lc, token, tmp_path / "operator.kubeconfig")
    user = yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]
    assert list(user) == ["token"]  # no client certificate: only the ServiceAccount's rights
    await rbac_in_effect(kubeconfig, namespace)
    log = tmp_path / "operator.log"
    return OperatorProcess(kubeconfig, namespace, log, env, all_namespaces=all_namespaces)


async def rbac_in_effect(kubeconfig: Path, namespace: str) -> None:
    """Wait until the API server's authorizer knows the new bindings (it lags under load)."""
    async with api_client(kubeconfig) as token_api:

        async def allowed() -> bool:
            try:
                await client.CustomObjectsApi(token_api).list_namespaced_custom_object(
                    "agenttask.dev", "v1alpha1", namespace, "agenttasks"
                )
                await client.ApiextensionsV1Api(token_api).list_custom_resource_definition()
            except ApiException as e:
                if e.status not in (403, 429):  # 429: a new CRD's storage still initialising
                    raise
                return False
            return True

        await eventually(allowed, within=30, what="the ServiceAccount's RBAC to take effect")


def assert_no_forbidden(op: OperatorProcess) -> None:
    lines = forbidden_lines(op)
    assert lines == [], "the operator was refused something:\n" + "\n".join(lines[:20])


# --- some namespaces: the session cluster ------------------------------------------------------


@pytest.fixture
async def chart_rbac_operator(
    cluster: LocalCluster,
    crd: Path,
    api: client.ApiClient,
    namespace: str,
    fake: FakeServer,
    workspace: Path,
    tmp_path: Path,
) -> AsyncIterator[OperatorProcess]:
    """The ``operator`` fixture, but as a release of the chart that watches ``namespace``."""
    release = f"op-{namespace}"  # its ClusterRole is cluster-wide: one per test
    objs = rbac_manifests(tmp_path, namespace, [namespace], release=release)
    env = operator_env(fake.base_url, workspace, tmp_path / "faults")
    op = await restricted_operator(cluster, api, objs, tmp_path, namespace, env)
    yield op
    op.stop()


async def test_disk_scenario_under_chart_rbac(
    api: client.ApiClient,
    namespace: str,
    fake: FakeServer,
    chart_rbac_operator: OperatorProcess,
    workspace: Path,
) -> None:
    await test_agenttask_e2e.test_disk_space_scenario_succeeds_and_really_cleans(
        api, namespace, fake, chart_rbac_operator, workspace
    )
    await settled(api, namespace, "disk")  # kopf's last bookkeeping (finalizer removal)
    assert_no_forbidden(chart_rbac_operator)


async def test_crash_resume_under_chart_rbac(
    api: client.ApiClient,
    namespace: str,
    fake: FakeServer,
    chart_rbac_operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    """SIGKILL once the model has answered and before any tool ran; the restart resumes."""
    op = chart_rbac_operator
    fake.llm = three_step_model
    fake.tools["echo"] = test_crash_resume.echo
    point = "after-append:LLM:1"
    op.start(AGENTTASK_FAULT_PAUSE=point)
    await create_task(api, namespace, "crash", test_crash_resume.spec_for(fake))
    await test_crash_resume.wait_file(tmp_path / "faults" / point.replace(":", "_"))
    op.kill()
    assert (len(fake.requests), len(fake.deliveries)) == (1, 0)
    op.start()
    deliveries = await test_crash_resume.check_outcome(api, namespace, fake)
    assert deliveries == {"call_a": 1, "call_b": 1, "call_c": 1}
    assert_no_forbidden(op)


async def test_two_replicas_under_chart_rbac(
    api: client.ApiClient,
    namespace: str,
    fake: FakeServer,
    chart_rbac_operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    """Two replicas, each with only the chart's ServiceAccount token: they hold their Leases
    (the chart's Lease Role), share the tasks, and one takes over the other's after a kill.
    """
    first = chart_rbac_operator
    second = OperatorProcess(first.kubeconfig, namespace, tmp_path / "operator-2.log", first.env)
    fake.llm = three_step_model
    fake.tools["echo"] = test_crash_resume.echo
    names = [f"crash-{i}" for i in range(6)]
    try:
        first.start(AGENTTASK_REPLICA_ID="replica-1", AGENTTASK_LEASE_SECONDS="4")
        second.start(AGENTTASK_REPLICA_ID="replica-2", AGENTTASK_LEASE_SECONDS="4")
        first.wait_started()
        second.wait_started()
        for name in names:
            await create_task(api, namespace, name, test_crash_resume.spec_for(fake))
        first.kill()  # whatever it held moves to the second once its Lease expired
        objs = [await wait_phase(api, namespace, n, within=90) for n in names]
    finally:
        second.stop()
    assert [o["status"]["phase"] for o in objs] == ["Succeeded"] * len(names)
    assert {o["status"]["owner"]["replica"] for o in objs} == {"replica-2"}
    assert "holding Lease" in first.output() and "holding Lease" in second.output()
    assert_no_forbidden(first)
    assert_no_forbidden(second)


DISK_SPEC: dict[str, Any] = {
    "input": DISK_INPUT,
    "model": {"name": "fake-model"},
    "tools": [{"name": "check_disk"}, {"name": "clean_logs"}],
}


async def test_ttl_deletion_under_chart_rbac(
    api: client.ApiClient,
    namespace: str,
    fake: FakeServer,
    chart_rbac_operator: OperatorProcess,
    workspace: Path,
) -> None:
    """A finished task whose TTL ran out is deleted by the operator (the ``delete`` verb)."""
    test_agenttask_e2e.make_logs(workspace)
    fake.llm = disk_model
    chart_rbac_operator.start()
    await create_task(api, namespace, "ttl", DISK_SPEC | {"ttlSecondsAfterFinished": 1})
    await eventually(
        lambda: task_gone(api, namespace, "ttl"), within=30, what="ttl to be deleted by its TTL"
    )
    assert len(fake.requests) == 3  # it did run to the end first
    assert_no_forbidden(chart_rbac_operator)


async def test_schedule_under_chart_rbac(
    api: client.ApiClient,
    namespace: str,
    fake: FakeServer,
    chart_rbac_operator: OperatorProcess,
) -> None:
    """A schedule's loop creates tasks, they run, the history limit deletes the older ones, and
    status and Events are written: the ``create`` verb on agenttasks, the schedules' rules.
    """
    fake.llm = lambda request: completion("done")
    chart_rbac_operator.start(AGENTTASK_SCHEDULE_SECONDS="1")  # test-only seconds field
    spec = {"schedule": "*/2 * * * * *", "successfulTasksHistoryLimit": 1}
    await test_schedule_e2e.create_schedule(api, namespace, "rbac", spec)
    seen: set[str] = set()

    async def pruned() -> bool:
        tasks = await test_schedule_e2e.tasks_of(api, namespace, "rbac")
        seen.update(t["metadata"]["name"] for t in tasks)
        done = [t for t in tasks if test_schedule_e2e.phase(t) == "Succeeded"]
        status = (await test_schedule_e2e.get_schedule(api, namespace, "rbac")).get("status")
        return len(seen) >= 3 and len(done) <= 1 and "lastSuccessfulTime" in (status or {})

    await eventually(pruned, within=60, what="three tasks, the older ones deleted")
    reasons = [r for r, _ in await test_schedule_e2e.events_of(api, namespace, "rbac")]
    assert "TaskCreated" in reasons
    await asyncio.sleep(1)
    assert_no_forbidden(chart_rbac_operator)


async def test_chart_rbac_grants_nothing_more(
    cluster: LocalCluster, chart_rbac_operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    env = tool_env(tmp_path, chart_rbac_operator.kubeconfig)

    def can(*args: str) -> bool:
        proc = run([str(cluster.kubectl), "auth", "can-i", *args], env, check=False)
        return proc.stdout.strip() == "yes"

    assert can("patch", "agenttasks.agenttask.dev", "-n", namespace)
    assert can("create", "agenttasks.agenttask.dev", "-n", namespace)  # schedules create them
    schedules = "agenttaskschedules.agenttask.dev"
    assert can("patch", schedules, "--subresource=status", "-n", namespace)
    assert not can("create", schedules, "-n", namespace)  # users declare them, not the operator
    assert not can("delete", schedules, "-n", namespace)
    assert not can("update", schedules, "-n", namespace)
    assert can("create", "configmaps", "-n", namespace)
    assert not can("update", "configmaps", "-n", namespace)  # the transcript is append-only
    assert not can("delete", "configmaps", "-n", namespace)
    assert can("get", "secrets", "-n", namespace)
    assert not can("list", "secrets", "-n", namespace)  # only by name, never enumerated
    assert not can("get", "pods", "-n", namespace)
    assert not can("update", "agenttasks.agenttask.dev", "-n", namespace)
    assert can("update", "leases.coordination.k8s.io", "-n", namespace)  # the release's own
    assert not can("update", "leases.coordination.k8s.io", "-n", "kube-system")
    # Concurrency limits: the Lease agenttask-slots of a watched namespace, no other.
    assert can("update", "leases.coordination.k8s.io/agenttask-slots", "-n", namespace)
    assert not can("update", "leases.coordination.k8s.io/agenttask-slots", "-n", "default")
    assert not can("list", "leases.coordination.k8s.io", "-n", "default")
    assert not can("create", "configmaps", "-n", "default")  # other namespaces: nothing
    assert not can("get", "secrets", "-n", "default")
    assert not can("list", "agenttasks.agenttask.dev", "--all-namespaces")
    assert not can("delete", "customresourcedefinitions.apiextensions.k8s.io")


# --- all namespaces: a cluster of its own ------------------------------------------------------


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A control plane where the cluster-wide operator finds no other test's AgentTasks."""
    with LocalCluster(tmp_path_factory.mktemp("rbac-cluster")) as lc:
        env = tool_env(lc.workdir, lc.kubeconfig)
        kubectl = str(lc.kubectl)
        run([kubectl, "apply", "-f", str(REPO / "crds")], env)
        run([kubectl, "create", "namespace", OPERATOR_NAMESPACE], env)
        crd = "crd/agenttasks.agenttask.dev"
        run([kubectl, "wait", "--for=condition=Established", "--timeout=60s", crd], env)
        yield lc


@pytest.fixture
async def own_api(own_cluster: LocalCluster) -> AsyncIterator[client.ApiClient]:
    async with api_client(own_cluster.kubeconfig) as c:
        yield c


@pytest.fixture
async def own_namespace(own_api: client.ApiClient) -> str:
    return await new_namespace(own_api)


@pytest.fixture
def default_rbac(own_cluster: LocalCluster, tmp_path: Path) -> list[dict[str, Any]]:
    """The chart's defaults (what deploy/ holds): ServiceAccount, ClusterRole, binding."""
    return rbac_manifests(tmp_path, OPERATOR_NAMESPACE, [])


@pytest.fixture
async def clusterwide_operator(
    own_cluster: LocalCluster,
    own_api: client.ApiClient,
    default_rbac: list[dict[str, Any]],
    own_namespace: str,
    fake: FakeServer,
    workspace: Path,
    tmp_path: Path,
) -> AsyncIterator[OperatorProcess]:
    env = operator_env(fake.base_url, workspace, tmp_path / "faults")
    env["POD_NAMESPACE"] = OPERATOR_NAMESPACE  # as the chart's Deployment sets it: its Lease
    op = await restricted_operator(
        own_cluster, own_api, default_rbac, tmp_path, own_namespace, env, all_namespaces=True
    )
    yield op
    op.stop()
    kubectl_apply(own_cluster, tmp_path / "home", default_rbac)  # undo any change of a test


async def test_disk_scenario_cluster_wide_under_default_rbac(
    own_api: client.ApiClient,
    own_namespace: str,
    fake: FakeServer,
    clusterwide_operator: OperatorProcess,
    workspace: Path,
) -> None:
    await test_agenttask_e2e.test_disk_space_scenario_succeeds_and_really_cleans(
        own_api, own_namespace, fake, clusterwide_operator, workspace
    )
    await settled(own_api, own_namespace, "disk")  # kopf's last bookkeeping (finalizer removal)
    assert_no_forbidden(clusterwide_operator)
    assert "agenttask-operator started" in clusterwide_operator.output()


async def transcript_configmaps(api: client.ApiClient, namespace: str, uid: str) -> list[str]:
    cms = await client.CoreV1Api(api).list_namespaced_config_map(
        namespace, label_selector=f"agenttask.dev/task-uid={uid}"
    )
    return [c.metadata.name for c in cms.items]


async def test_without_configmaps_create_a_task_makes_no_progress(
    own_cluster: LocalCluster,
    own_api: client.ApiClient,
    own_namespace: str,
    fake: FakeServer,
    default_rbac: list[dict[str, Any]],
    clusterwide_operator: OperatorProcess,
    workspace: Path,
    tmp_path: Path,
) -> None:
    api, ns = own_api, own_namespace
    test_agenttask_e2e.make_logs(workspace)
    fake.llm = disk_model
    # Take one verb away: create on ConfigMaps (the transcript's first chunk needs it).
    crippled = [copy.deepcopy(only(default_rbac, "ClusterRole"))]
    for rule in crippled[0]["rules"]:
        if "configmaps" in rule["resources"]:
            rule["verbs"] = [v for v in rule["verbs"] if v != "create"]
    kubectl_apply(own_cluster, tmp_path / "home", crippled)

    clusterwide_operator.start()
    task = await create_task(api, ns, "stuck", DISK_SPEC)

    async def asked_twice() -> bool:
        return len(fake.requests) >= 2

    # The model answers, the answer cannot be stored, the loop fails and starts over: the model
    # is asked the very same first question again (kopf retries a failed daemon after 5 s).
    await eventually(asked_twice, within=30, what="the model to be asked a second time")
    assert all(len(r["messages"]) == 1 for r in fake.requests), "it got past the first answer"
    assert await transcript_configmaps(api, ns, task["metadata"]["uid"]) == []
    status = (await get_task(api, ns, "stuck")).get("status") or {}
    assert status.get("phase") != "Succeeded"
    assert (status.get("transcript") or {}).get("entries", 0) == 0
    assert status.get("iterations", 0) <= 1
    assert fake.deliveries == [] and (workspace / "logs" / "app.log").exists()  # no tool ran
    assert "configmaps is forbidden" in clusterwide_operator.output()

    # Control: give the verb back (same operator process, same token): a task succeeds.
    await client.CustomObjectsApi(api).delete_namespaced_custom_object(
        "agenttask.dev", "v1alpha1", ns, "agenttasks", "stuck"
    )

    await eventually(lambda: task_gone(api, ns, "stuck"), within=30, what="stuck to be deleted")
    kubectl_apply(own_cluster, tmp_path / "home", default_rbac)
    fake.requests.clear()
    await create_task(api, ns, "fine", DISK_SPEC)
    obj = await wait_phase(api, ns, "fine", within=60)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    assert len(await transcript_configmaps(api, ns, obj["metadata"]["uid"])) >= 1
