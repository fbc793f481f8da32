"""Human approval and unknown outcomes, end to end: real API server, real operator, our ledger
MCP server (which records every effect it really executed, with its idempotency key).

- a destructive MCP tool waits for an AgentToolApproval: Approve runs it once, Deny gives the
  model an error and runs nothing, a decision with another digest is refused (marked on the
  approval) and never applied, a timeout denies, an operator restarted while a call waits
  carries on from the stored request;
- the operator SIGKILLed while a call runs: ``Redeliver`` delivers it once more under the same
  key, ``AskApproval`` waits and runs it again only once approved, ``Fail`` ends the task
  ``ToolOutcomeUnknown``.

Approvals are created here as the admin of the test cluster (user ``admin``), whose own name
is therefore ``decidedBy``, and once by a ServiceAccount with only the chart's approver role;
tests/test_approval_admission.py checks the admission policy and the approver's RBAC.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from localcluster import LocalCluster

from fakeopenai import FakeServer, Reply, completion, tool_messages
from kubehelpers import (
    api_client,
    create_object,
    create_task,
    event_reasons,
    eventually,
    get_object,
    get_task,
    transcript,
    wait_phase,
)
from mcpservers import LedgerServer
from operatorproc import OperatorProcess
from packaging_helpers import (
    allowed_once_bound,
    approver_binding,
    docs,
    helm_template,
    kubectl_apply,
    service_account_token,
    token_kubeconfig,
)
from test_mcp_task import tool_server

pytestmark = pytest.mark.cluster

ADMIN = "admin"  # the test cluster's admin client certificate (CN=admin)
APPROVER_TEMPLATE = ("templates/approver-clusterrole.yaml",)


def one_call(name: str, arguments: dict[str, Any], call_id: str = "call_1") -> Any:
    """A model that asks for one tool call, then answers with what the tool said."""

    def model(req: dict[str, Any]) -> Reply:
        done = tool_messages(req)
        if not done:
            return completion(tool_calls=[(call_id, name, arguments)])
        return completion("tool said: " + done[0]["content"])

    return model


def ledger_task(**entry: Any) -> dict[str, Any]:
    return {
        "input": "change things",
        "model": {"name": "m"},
        "tools": [{"name": "ledger", "toolServerRef": {"name": "ledger"}, **entry}],
    }


async def waiting(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    """Wait until the task waits for a decision; its status.approval."""

    async def check() -> dict[str, Any] | None:
        st = (await get_task(api, namespace, name)).get("status") or {}
        rec = st.get("approval") or {}
        if st.get("phase") == "WaitingForApproval" and "decision" not in rec:
            return st
        return None

    st = await eventually(check, within=60, what=f"{name} WaitingForApproval")
    rec: dict[str, Any] = st["approval"]
    return rec


async def decide(
    api: client.ApiClient,
    namespace: str,
    name: str,
    task: str,
    rec: dict[str, Any],
    decision: str = "Approve",
    *,
    digest: str | None = None,
    reason: str = "reviewed",
) -> None:
    spec = {
        "task": task,
        "toolCallId": rec["toolCallId"],
        "argumentsDigest": digest or rec["argumentsDigest"],
        "decision": decision,
        "reason": reason,
        "decidedBy": ADMIN,
    }
    await create_object(api, namespace, "agenttoolapprovals", "AgentToolApproval", name, spec)


async def accepted(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    """The approval's Accepted condition, once the operator marked it."""

    async def check() -> dict[str, Any] | None:
        obj = await get_object(api, namespace, "agenttoolapprovals", name)
        conds = (obj.get("status") or {}).get("conditions") or []
        return next((c for c in conds if c["type"] == "Accepted"), None)

    cond: dict[str, Any] = await eventually(check, within=30, what=f"{name} marked")
    return cond


async def test_approve_runs_a_destructive_call_once_and_records_who(
    api: client.ApiClient,
    namespace: str,
    fake: FakeServer,
    ledger: LedgerServer,
    operator: OperatorProcess,
) -> None:
    operator.start()
    server = await tool_server(api, namespace, "ledger", ledger.url)
    assert {t["name"]: t["destructiveHint"] for t in server["status"]["tools"]}["apply_change"]
    fake.llm = one_call("apply_change", {"change": "scale to 3"})
    await create_task(api, namespace, "scale", ledger_task())
    rec = await waiting(api, namespace, "scale")
    assert (rec["toolName"], rec["purpose"]) == ("apply_change", "Run")
    assert json.loads(rec["arguments"]) == {"change": "scale to 3"}
    await event_reasons(api, namespace, "scale", "ApprovalRequested")
    assert ledger.entries() == []  # nothing ran before the decision
    obj = await get_task(api, namespace, "scale")
    assert obj["status"]["conditions"][0]["reason"] == "ApprovalPending"

    await decide(api, namespace, "ok-scale", "scale", rec, reason="capacity ticket 42")
    obj = await wait_phase(api, namespace, "scale")
    st = obj["status"]
    assert st["phase"] == "Succeeded", st
    uid = obj["metadata"]["uid"]
    assert [(e["change"], e["metaKey"]) for e in ledger.entries()] == [
        ("scale to 3", f"{uid}:call_1")
    ]
    assert (st["approval"]["decision"], st["approval"]["decidedBy"]) == ("Approve", ADMIN)
    assert st["approval"]["approvalName"] == "ok-scale"
    entries = await transcript(api, namespace, uid)
    assert entries[1]["approval"] == {
        "decision": "Approve",
        "decidedBy": ADMIN,
        "reason": "capacity ticket 42",
        "approval": "ok-scale",
    }
    cond = await accepted(api, namespace, "ok-scale")
    assert (cond["status"], cond["reason"]) == ("True", "Applied")
    await event_reasons(api, namespace, "scale", "ApprovalGranted")


async def test_deny_tells_the_model_and_runs_nothing(
    api: client.ApiClient,
    namespace: str,
    fake: FakeServer,
    ledger: LedgerServer,
    operator: OperatorProcess,
) -> None:
    operator.start()
    await tool_server(api, namespace, "ledger", ledger.url)
    fake.llm = one_call("apply_change", {"change": "drop table"})
    await create_task(api, namespace, "drop", ledger_task())
    rec = await waiting(api, namespace, "drop")
    await decide(api, namespace, "no-drop", "drop", rec, "Deny", reason="never in prod")
    st = (await wait_phase(api, namespace, "drop"))["status"]
    assert st["phase"] == "Succeeded", st
    assert "denied by admin: never in prod" in st["result"]
    assert ledger.entries() == []
    await event_reasons(api, namespace, "drop", "ApprovalDenied")


async def test_a_decision_for_other_arguments_is_refused_then_the_right_one_applies(
    api: client.ApiClient,
    namespace: str,
    fake: FakeServer,
    ledger: LedgerServer,
    operator: OperatorProcess,
) -> None:
    operator.start()
    await tool_server(api, namespace, "ledger", ledger.url)
    fake.llm = one_call("apply_change", {"change": "scale to 300"})
    await create_task(api, namespace, "big", ledger_task())
    rec = await waiting(api, namespace, "big")
    other = "sha256:" + "0" * 64  # reviewed something else
    await decide(api, namespace, "wrong", "big", rec, digest=other)
    cond = await accepted(api, namespace, "wrong")
    assert (cond["status"], cond["reason"]) == ("False", "ArgumentsDigestMismatch")
    assert rec["argumentsDigest"] in cond["message"]
    st = (await get_task(api, namespace, "big"))["status"]
    assert st["phase"] == "WaitingForApproval" and "decision" not in st["approval"]
    assert ledger.entries() == []
    await event_reasons(api, namespace, "big", "ApprovalRefused")
    await decide(api, namespace, "right", "big", rec)
    st = (await wait_phase(api, namespace, "big"))["status"]
    assert st["phase"] == "Succeeded", st
    assert len(ledger.entries()) == 1


async def test_no_decision_in_time_denies(
    api: client.ApiClient,
    namespace: str,
    fake: FakeServer,
    ledger: LedgerServer,
    operator: OperatorProcess,
) -> None:
    operator.start()
    await tool_server(api, namespace, "ledger", ledger.url)
    fake.llm = one_call("apply_change", {"change": "x"})
    spec = ledger_task() | {"approval": {"timeoutSeconds": 2}}
    await create_task(api, namespace, "late", spec)
    st = (await wait_phase(api, namespace, "late", within=60))["status"]
    assert st["phase"] == "Succeeded", st
    assert (
        "denied by agenttask-operator: no decision within approval.timeoutSeconds=2"
        in (st["result"])
    )
    assert st["approval"]["decidedBy"] == "agenttask-operator"
    assert ledger.entries() == []


async def test_a_restart_while_waiting_keeps_the_request(
    api: client.ApiClient,
    namespace: str,
    fake: FakeServer,
    ledger: LedgerServer,
    operator: OperatorProcess,
) -> None:
    operator.start()
    await tool_server(api, namespace, "ledger", ledger.url)
    fake.llm = one_call("apply_change", {"change": "y"})
    await create_task(api, namespace, "wait", ledger_task())
    rec = await waiting(api, namespace, "wait")
    operator.kill()
    await decide(api, namespace, "ok", "wait", rec)  # decided while no operator runs
    operator.start()
    st = (await wait_phase(api, namespace, "wait"))["status"]
    assert st["phase"] == "Succeeded", st
    assert st["approval"]["requestedAt"] == rec["requestedAt"]  # the same request, not a new one
    assert len(ledger.entries()) == 1
    assert len(fake.requests) == 2  # the model was not asked again


async def kill_during_slow_change(
    api: client.ApiClient,
    namespace: str,
    fake: FakeServer,
    ledger: LedgerServer,
    operator: OperatorProcess,
    name: str,
    **entry: Any,
) -> str:
    """Start a task whose one call (``slow_change``, 3 s) is in flight when the operator is
    SIGKILLed; the call still completes on the server. Restart; return the task's uid.
    """
    operator.start()
    await tool_server(api, namespace, "ledger", ledger.url)
    fake.llm = one_call("slow_change", {"change": "migrate", "seconds": 3})
    await create_task(api, namespace, name, ledger_task(approval="Never", **entry))

    async def started() -> bool:
        return len(ledger.started_calls()) == 1

    await eventually(started, within=60, what="slow_change in flight")
    operator.kill()

    async def finished() -> bool:
        return len(ledger.entries()) == 1  # the effect happened, though nobody heard of it

    await eventually(finished, within=30, what="the first call's effect")
    operator.start()
    return str((await get_task(api, namespace, name))["metadata"]["uid"])


async def test_unknown_outcome_redeliver_delivers_once_more_under_the_same_key(
    api: client.ApiClient,
    namespace: str,
    fake: FakeServer,
    ledger: LedgerServer,
    operator: OperatorProcess,
) -> None:
    uid = await kill_during_slow_change(
        api, namespace, fake, ledger, operator, "redo", onUnknownOutcome="Redeliver"
    )
    st = (await wait_phase(api, namespace, "redo"))["status"]
    assert st["phase"] == "Succeeded", st
    keys = [e["metaKey"] for e in ledger.entries()]
    assert keys == [f"{uid}:call_1", f"{uid}:call_1"]  # the server can tell it is the same call


async def test_unknown_outcome_ask_approval_waits_then_runs_again_once_approved(
    api: client.ApiClient,
    namespace: str,
    fake: FakeServer,
    ledger: LedgerServer,
    operator: OperatorProcess,
) -> None:
    # slow_change is destructive and not idempotent: AskApproval is its default.
    uid = await kill_during_slow_change(api, namespace, fake, ledger, operator, "ask")
    rec = await waiting(api, namespace, "ask")
    assert rec["purpose"] == "Rerun"
    obj = await get_task(api, namespace, "ask")
    assert obj["status"]["resolvedTools"][0]["onUnknownOutcome"] == "AskApproval"
    assert len(ledger.entries()) == 1  # not run again on its own
    await decide(api, namespace, "rerun", "ask", rec, reason="checked: it did not apply")
    st = (await wait_phase(api, namespace, "ask"))["status"]
    assert st["phase"] == "Succeeded", st
    assert [e["metaKey"] for e in ledger.entries()] == [f"{uid}:call_1"] * 2
    assert st.get("interruptions") is None  # committed: the step's count is gone


async def test_unknown_outcome_fail_ends_the_task(
    api: client.ApiClient,
    namespace: str,
    fake: FakeServer,
    ledger: LedgerServer,
    operator: OperatorProcess,
) -> None:
    await kill_during_slow_change(
        api, namespace, fake, ledger, operator, "stop", onUnknownOutcome="Fail"
    )
    st = (await wait_phase(api, namespace, "stop"))["status"]
    assert (st["phase"], st["reason"]) == ("Failed", "ToolOutcomeUnknown"), st
    assert "tool call 'slow_change' (call_1)" in st["error"]
    assert len(ledger.entries()) == 1  # never delivered again


async def test_a_reviewer_with_only_the_approver_role_approves(
    api: client.ApiClient,
    cluster: LocalCluster,
    namespace: str,
    fake: FakeServer,
    ledger: LedgerServer,
    operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    """The chart's approver ClusterRole, bound in the namespace, is all a reviewer needs; the
    task records the reviewer's own user name (a ServiceAccount here).
    """
    objs = docs(helm_template(tmp_path, "agenttask-system", show_only=APPROVER_TEMPLATE))
    binding = approver_binding(namespace, objs[0]["metadata"]["name"], "reviewer")
    sa = client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="reviewer"))
    await client.CoreV1Api(api).create_namespaced_service_account(namespace, sa)
    kubectl_apply(cluster, tmp_path, [*objs, binding])
    token = await service_account_token(api, namespace, "reviewer")
    kubeconfig = token_kubeconfig(cluster, token, tmp_path / "reviewer.kubeconfig")
    me = f"system:serviceaccount:{namespace}:reviewer"

    operator.start()
    await tool_server(api, namespace, "ledger", ledger.url)
    fake.llm = one_call("apply_change", {"change": "z"})
    await create_task(api, namespace, "rev", ledger_task())
    rec = await waiting(api, namespace, "rev")
    async with api_client(kubeconfig) as reviewer:
        body = {
            "apiVersion": "agenttask.dev/v1alpha1",
            "kind": "AgentToolApproval",
            "metadata": {"name": "by-reviewer"},
            "spec": {
                "task": "rev",
                "toolCallId": rec["toolCallId"],
                "argumentsDigest": rec["argumentsDigest"],
                "decision": "Approve",
                "decidedBy": me,
            },
        }
        custom = client.CustomObjectsApi(reviewer)

        async def created() -> bool:
            return await allowed_once_bound(
                lambda: custom.create_namespaced_custom_object(
                    "agenttask.dev", "v1alpha1", namespace, "agenttoolapprovals", body
                )
            )

        await eventually(created, within=30, what="the reviewer's approval")
        with pytest.raises(ApiException) as refused:  # but it cannot touch the task itself
            await custom.patch_namespaced_custom_object(
                "agenttask.dev", "v1alpha1", namespace, "agenttasks", "rev",
                {"spec": {"suspend": True}},
            )  # fmt: skip
        assert refused.value.status == 403
    st = (await wait_phase(api, namespace, "rev"))["status"]
    assert st["phase"] == "Succeeded", st
    assert st["approval"]["decidedBy"] == me
    assert len(ledger.entries()) == 1
