"""Who may decide a tool call, as a real API server enforces it: the chart's admission policy on
AgentToolApprovals (spec.decidedBy must be the requester's own user name) and its approver
ClusterRole (create approvals, read tasks, nothing else).

Each request is made with the requester's own credentials: ServiceAccount tokens from
TokenRequest for ``reviewer`` (the approver ClusterRole, bound by a RoleBinding in the test's
namespace) and ``outsider`` (nothing), the admin's system:masters client certificate for
``admin``. The policy is cluster-wide and applies to everyone, so it is installed on a control
plane of this module's own: the session cluster's other tests create approvals in any name.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from localcluster import REPO, LocalCluster

from kubehelpers import GROUP, VERSION, api_client, create_task, eventually, new_namespace
from packaging_helpers import (
    RELEASE,
    allowed_once_bound,
    approver_binding,
    docs,
    helm_template,
    kubectl_apply,
    run,
    service_account_token,
    token_kubeconfig,
    tool_env,
)

pytestmark = pytest.mark.cluster

APPROVALS = "agenttoolapprovals"
TASKS = "agenttasks"
MERGE = "application/merge-patch+json"
POLICY = f"{RELEASE}-approval-decided-by"
APPROVER_ROLE = f"{RELEASE}-approver"
TEMPLATES = ("templates/validatingadmissionpolicy.yaml", "templates/approver-clusterrole.yaml")
DIGEST = "sha256:" + "ab" * 32
TASK_SPEC: dict[str, Any] = {"input": "hello", "model": {"name": "m"}}
RULE = "spec.decidedBy must be your own user name as the API server knows it"


def approval(decided_by: str, name: str | None = None) -> dict[str, Any]:
    """An AgentToolApproval of task ``t`` (which need not exist: admission does not look)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AgentToolApproval",
        "metadata": {"name": name or f"a-{uuid.uuid4().hex[:8]}"},
        "spec": {
            "task": "t",
            "toolCallId": "call_1",
            "argumentsDigest": DIGEST,
            "decision": "Approve",
            "reason": "looks right",
            "decidedBy": decided_by,
        },
    }


async def create_approval(
    api: client.ApiClient, namespace: str, decided_by: str, name: str | None = None
) -> dict[str, Any]:
    obj: dict[str, Any] = await client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, APPROVALS, approval(decided_by, name)
    )
    return obj


async def patch(
    api: client.ApiClient, namespace: str, plural: str, name: str, body: dict[str, Any]
) -> dict[str, Any]:
    """A merge patch of an object (``status`` in ``body``: of its status subresource)."""
    co = client.CustomObjectsApi(api)
    args = (GROUP, VERSION, namespace, plural, name, body)
    if "status" in body:
        obj: dict[str, Any] = await co.patch_namespaced_custom_object_status(
            *args, _content_type=MERGE
        )
    else:
        obj = await co.patch_namespaced_custom_object(*args, _content_type=MERGE)
    return obj


async def refusal(call: Awaitable[Any]) -> tuple[int, dict[str, Any]]:
    """Await ``call``, which must fail: its HTTP status and the Status object it returned."""
    with pytest.raises(ApiException) as err:
        await call
    body: dict[str, Any] = json.loads(err.value.body or "{}")
    return err.value.status, body


# --- the control plane, with the chart's objects ----------------------------------------------


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A control plane with the CRDs and the chart's admission policy + approver ClusterRole."""
    with LocalCluster(tmp_path_factory.mktemp("approval-cluster")) as lc:
        home = lc.workdir
        env = tool_env(home, lc.kubeconfig)
        kubectl = str(lc.kubectl)
        group = "/apis/admissionregistration.k8s.io/v1"
        proc = run([kubectl, "get", "--raw", group], env, check=False)
        served = [r["name"] for r in json.loads(proc.stdout or "{}").get("resources", [])]
        if "validatingadmissionpolicies" not in served:
            pytest.fail(
                f"the API server does not serve validatingadmissionpolicies in {group} (it "
                f"serves {served}; {proc.stderr.strip()}): check hack/localcluster.py"
            )
        crds = str(REPO / "crds")
        run([kubectl, "apply", "-f", crds], env)
        run([kubectl, "wait", "--for=condition=Established", "--timeout=60s", "-f", crds], env)
        objs = docs(helm_template(home, "agenttask-system", show_only=TEMPLATES))
        assert sorted((o["kind"], o["metadata"]["name"]) for o in objs) == [
            ("ClusterRole", APPROVER_ROLE),
            ("ValidatingAdmissionPolicy", POLICY),
            ("ValidatingAdmissionPolicyBinding", POLICY),
        ]
        kubectl_apply(lc, home, objs)
        yield lc


@pytest.fixture
async def admin(own_cluster: LocalCluster) -> AsyncIterator[client.ApiClient]:
    """The admin (client certificate, group system:masters), once the policy is in effect."""
    async with api_client(own_cluster.kubeconfig) as api:
        await policy_in_effect(api)
        yield api


async def policy_in_effect(api: client.ApiClient) -> None:
    """The API server loads policies asynchronously: wait until a violating create is refused."""
    namespace = "default"

    async def refused() -> bool:
        try:
            obj = await create_approval(api, namespace, "nobody-at-all")
        except ApiException as e:
            if e.status == 403 and POLICY in (e.body or ""):
                return True
            if e.status in (404, 429):  # the new CRD's endpoint is not ready yet
                return False
            raise
        await client.CustomObjectsApi(api).delete_namespaced_custom_object(
            GROUP, VERSION, namespace, APPROVALS, obj["metadata"]["name"]
        )
        return False

    await eventually(refused, within=30, what=f"the admission policy {POLICY} to take effect")


@dataclass
class Users:
    namespace: str
    reviewer: client.ApiClient
    reviewer_name: str
    reviewer_kubeconfig: Path
    outsider: client.ApiClient
    outsider_name: str


@pytest.fixture
async def users(
    own_cluster: LocalCluster, admin: client.ApiClient, tmp_path: Path
) -> AsyncIterator[Users]:
    """A fresh namespace with ServiceAccounts ``reviewer`` (the approver ClusterRole through a
    RoleBinding there) and ``outsider`` (no rights), each with an API client on its own token."""
    ns = await new_namespace(admin)
    core = client.CoreV1Api(admin)
    for name in ("reviewer", "outsider"):
        await core.create_namespaced_service_account(
            ns, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
        )
    kubectl_apply(own_cluster, tmp_path, [approver_binding(ns, APPROVER_ROLE, "reviewer")])
    kubeconfigs = {}
    for name in ("reviewer", "outsider"):
        token = await service_account_token(admin, ns, name)
        kubeconfigs[name] = token_kubeconfig(own_cluster, token, tmp_path / f"{name}.kubeconfig")
    async with contextlib.AsyncExitStack() as stack:
        reviewer = await stack.enter_async_context(api_client(kubeconfigs["reviewer"]))
        outsider = await stack.enter_async_context(api_client(kubeconfigs["outsider"]))

        async def bound() -> bool:
            return await allowed_once_bound(
                lambda: client.CustomObjectsApi(reviewer).list_namespaced_custom_object(
                    GROUP, VERSION, ns, APPROVALS
                )
            )

        await eventually(bound, within=30, what="the reviewer's RoleBinding to take effect")
        yield Users(
            namespace=ns,
            reviewer=reviewer,
            reviewer_name=f"system:serviceaccount:{ns}:reviewer",
            reviewer_kubeconfig=kubeconfigs["reviewer"],
            outsider=outsider,
            outsider_name=f"system:serviceaccount:{ns}:outsider",
        )


# --- the tests ---------------------------------------------------------------------------------


async def test_reviewer_decides_in_own_name(own_cluster: LocalCluster, users: Users) -> None:
    # The user name the docs tell reviewers to look up is the one the policy compares with.
    whoami = run(
        [str(own_cluster.kubectl), "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"],
        tool_env(users.reviewer_kubeconfig.parent, users.reviewer_kubeconfig),
    ).stdout
    assert whoami == users.reviewer_name
    created = await create_approval(users.reviewer, users.namespace, whoami, "mine")
    assert created["spec"]["decidedBy"] == users.reviewer_name
    co = client.CustomObjectsApi(users.reviewer)
    got = await co.get_namespaced_custom_object(GROUP, VERSION, users.namespace, APPROVALS, "mine")
    assert got["metadata"]["uid"] == created["metadata"]["uid"]
    listed = await co.list_namespaced_custom_object(GROUP, VERSION, users.namespace, APPROVALS)
    assert [o["metadata"]["name"] for o in listed["items"]] == ["mine"]


async def test_reviewer_cannot_decide_in_another_name(users: Users) -> None:
    status, body = await refusal(
        create_approval(users.reviewer, users.namespace, "someone-else", "forged")
    )
    assert status == 403 and body["reason"] == "Forbidden", body
    message = body["message"]
    assert message == (
        f'agenttoolapprovals.agenttask.dev "forged" is forbidden: ValidatingAdmissionPolicy '
        f"'{POLICY}' with binding '{POLICY}' denied request: {RULE} "
        f"('{users.reviewer_name}'; see `kubectl auth whoami`), not 'someone-else'"
    ), message
    # Nothing was stored: the reviewer finds no such approval.
    status, _ = await refusal(
        client.CustomObjectsApi(users.reviewer).get_namespaced_custom_object(
            GROUP, VERSION, users.namespace, APPROVALS, "forged"
        )
    )
    assert status == 404


async def test_reviewer_reads_tasks_but_cannot_change_them_or_decisions(
    admin: client.ApiClient, users: Users
) -> None:
    ns = users.namespace
    await create_task(admin, ns, "t", TASK_SPEC)
    co = client.CustomObjectsApi(users.reviewer)
    task = await co.get_namespaced_custom_object(GROUP, VERSION, ns, TASKS, "t")
    assert task["spec"]["input"] == "hello"
    listed = await co.list_namespaced_custom_object(GROUP, VERSION, ns, TASKS)
    assert [o["metadata"]["name"] for o in listed["items"]] == ["t"]

    await create_approval(users.reviewer, ns, users.reviewer_name, "decided")
    new_task = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AgentTask",
        "metadata": {"name": "mine"},
        "spec": TASK_SPEC,
    }
    label = {"metadata": {"labels": {"x": "y"}}}
    # No editing of tasks; a decision, once made, is the reviewer's to read, not to change or
    # to take back; and nothing in other namespaces.
    refused: dict[str, Callable[[], Awaitable[Any]]] = {
        "create task": lambda: co.create_namespaced_custom_object(
            GROUP, VERSION, ns, TASKS, new_task
        ),
        "patch task": lambda: patch(users.reviewer, ns, TASKS, "t", label),
        "patch task status": lambda: patch(
            users.reviewer, ns, TASKS, "t", {"status": {"phase": "Failed"}}
        ),
        "delete task": lambda: co.delete_namespaced_custom_object(GROUP, VERSION, ns, TASKS, "t"),
        "patch approval": lambda: patch(users.reviewer, ns, APPROVALS, "decided", label),
        "patch approval status": lambda: patch(
            users.reviewer, ns, APPROVALS, "decided", {"status": {"observedGeneration": 1}}
        ),
        "delete approval": lambda: co.delete_namespaced_custom_object(
            GROUP, VERSION, ns, APPROVALS, "decided"
        ),
        "list tasks elsewhere": lambda: co.list_namespaced_custom_object(
            GROUP, VERSION, "default", TASKS
        ),
        "approve elsewhere": lambda: co.create_namespaced_custom_object(
            GROUP, VERSION, "default", APPROVALS, approval(users.reviewer_name)
        ),
    }
    for what, call in refused.items():
        status, body = await refusal(call())
        assert status == 403, (what, body)
        assert f'User "{users.reviewer_name}" cannot' in body["message"], (what, body)


async def test_outsider_cannot_create_approvals(users: Users) -> None:
    # Even in its own name: RBAC refuses before the admission policy is asked.
    status, body = await refusal(
        create_approval(users.outsider, users.namespace, users.outsider_name, "outside")
    )
    assert status == 403 and body["reason"] == "Forbidden", body
    assert body["message"] == (
        f'agenttoolapprovals.agenttask.dev is forbidden: User "{users.outsider_name}" cannot '
        f'create resource "agenttoolapprovals" in API group "agenttask.dev" in the namespace '
        f'"{users.namespace}"'
    ), body


async def test_admin_cannot_decide_in_another_name(admin: client.ApiClient, users: Users) -> None:
    """The policy has no exceptions: system:masters passes RBAC, not the policy."""
    status, body = await refusal(
        create_approval(admin, users.namespace, users.reviewer_name, "forged-by-admin")
    )
    assert status == 403 and body["reason"] == "Forbidden", body
    assert (
        f"{RULE} ('admin'; see `kubectl auth whoami`), not '{users.reviewer_name}'"
        in body["message"]
    ), body


async def test_spec_is_immutable_but_metadata_and_status_are_not(
    admin: client.ApiClient, users: Users
) -> None:
    """What the operator does later (ownerReferences, status) passes; a changed decision not."""
    ns = users.namespace
    task = await create_task(admin, ns, "t", TASK_SPEC)
    await create_approval(users.reviewer, ns, users.reviewer_name, "decided")
    status, body = await refusal(
        patch(admin, ns, APPROVALS, "decided", {"spec": {"decision": "Deny"}})
    )
    assert status == 422, body
    assert "spec is immutable (a decision is made once" in body["message"], body
    # Not even in the admin's own name: the policy checks only CREATE, the CRD checks the rest.
    status, body = await refusal(
        patch(admin, ns, APPROVALS, "decided", {"spec": {"decidedBy": "admin"}})
    )
    assert status == 422 and "spec is immutable" in body["message"], body

    owner = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AgentTask",
        "name": "t",
        "uid": task["metadata"]["uid"],
    }
    await patch(admin, ns, APPROVALS, "decided", {"metadata": {"ownerReferences": [owner]}})
    accepted = {
        "type": "Accepted",
        "status": "True",
        "reason": "Applied",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    obj = await patch(admin, ns, APPROVALS, "decided", {"status": {"conditions": [accepted]}})
    assert obj["metadata"]["ownerReferences"][0]["uid"] == owner["uid"]
    assert obj["status"]["conditions"] == [accepted]
    assert obj["spec"]["decidedBy"] == users.reviewer_name


def test_values_turn_the_policy_and_the_role_off(tmp_path: Path) -> None:
    def kinds(values: dict[str, Any]) -> list[str]:
        return sorted(o["kind"] for o in docs(helm_template(tmp_path, "ops", values)))

    everything = kinds({})
    assert {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} <= set(everything)
    assert everything.count("ClusterRole") == 2
    off = {"approvals": {"admissionPolicy": {"enabled": False}, "approverRole": {"enabled": False}}}
    without = kinds(off)
    assert "ValidatingAdmissionPolicy" not in without
    assert "ValidatingAdmissionPolicyBinding" not in without
    assert without.count("ClusterRole") == 1
