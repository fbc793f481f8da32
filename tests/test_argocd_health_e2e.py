"""The Argo CD health check of AgentTask on tasks the operator really ran, in every phase it
reaches: not picked up yet, Pending (queued), Running, WaitingForApproval, Suspended,
Succeeded, Failed — each object as the API server returns it, run through the Lua as Argo CD
runs it (tests/argocdlua.py). Hand-made objects: tests/unit/test_argocd_health.py.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from argocdlua import health
from fakeopenai import FakeServer, Reply, completion, error, tool_messages
from kubehelpers import create_object, create_task, get_task, wait_phase
from mcpservers import LedgerServer
from operatorproc import OperatorProcess
from test_logs import served

pytestmark = pytest.mark.cluster

SCRIPT = (Path(__file__).resolve().parents[1] / "examples/gitops/agenttask-health.lua").read_text()


def model(request: dict[str, Any]) -> Reply:
    """By the task's input: ``refuse`` gets a 401; ``approve`` calls the ledger's
    apply_change (needs a person); ``busy``/``queued`` call the hanging HTTP tool; others answer.
    """
    user = next(m["content"] for m in request["messages"] if m["role"] == "user")
    if user == "refuse":
        return error(401, "Incorrect API key provided")
    if tool_messages(request):
        return completion("done")
    if user == "approve":
        return completion(tool_calls=[("call_x", "apply_change", {"change": "scale to 3"})])
    if user in ("busy", "queued"):
        return completion(tool_calls=[("call_h", "hang", {})])
    return completion("ok")


async def test_health_of_real_tasks_in_every_phase(
    api: client.ApiClient,
    namespace: str,
    fake: FakeServer,
    ledger: LedgerServer,
    operator: OperatorProcess,
) -> None:
    release = threading.Event()
    fake.llm = model
    fake.tools["hang"] = lambda call, n: Reply(body={"ok": True}, until=release.is_set, delay=120)
    hang = {
        "name": "hang",
        "description": "hangs",
        "parameters": {"type": "object"},
        "http": {"url": fake.tool_url("hang")},
    }
    m = {"name": "m"}
    await served(api, namespace)
    await create_task(api, namespace, "early", {"input": "x", "model": m})
    samples: dict[str, dict[str, Any]] = {"early": await get_task(api, namespace, "early")}

    operator.start()
    await create_object(api, namespace, "agenttoolservers", "AgentToolServer", "ledger",
                        {"url": ledger.url})  # fmt: skip
    await create_object(api, namespace, "agentmodels", "AgentModel", "one",
                        {"model": "m", "maxConcurrentTasks": 1})  # fmt: skip
    ledger_tool = {"name": "ledger", "toolServerRef": {"name": "ledger", "tools": ["apply_change"]}}
    one = {"modelRef": {"name": "one"}}
    await create_task(api, namespace, "ok", {"input": "ok", "model": m})
    await create_task(api, namespace, "refused", {"input": "refuse", "model": m})
    await create_task(api, namespace, "paused", {"input": "x", "model": m, "suspend": True})
    await create_task(api, namespace, "approve", {"input": "approve", "model": m,
                                                  "tools": [ledger_tool]})  # fmt: skip
    await create_task(api, namespace, "busy", {"input": "busy", "model": one, "tools": [hang]})
    samples["ok"] = await wait_phase(api, namespace, "ok")
    samples["refused"] = await wait_phase(api, namespace, "refused")
    samples["paused"] = await wait_phase(api, namespace, "paused", ("Suspended",))
    samples["approve"] = await wait_phase(api, namespace, "approve", ("WaitingForApproval",))
    samples["busy"] = await wait_phase(api, namespace, "busy", ("Running",), within=60)
    await create_task(api, namespace, "queued", {"input": "queued", "model": one, "tools": [hang]})
    samples["queued"] = await wait_phase(api, namespace, "queued", ("Pending",))
    release.set()

    seen = {name: health(SCRIPT, obj) for name, obj in samples.items()}
    status = {name: h["status"] for name, h in seen.items()}
    assert status == {
        "early": "Progressing",
        "ok": "Healthy",
        "refused": "Degraded",
        "paused": "Suspended",
        "approve": "Progressing",
        "busy": "Progressing",
        "queued": "Progressing",
    }, seen
    refused = samples["refused"]["status"]
    assert seen["refused"]["message"] == f"ModelAuthFailed: {refused['message']}"
    assert "HTTP 401" in seen["refused"]["message"]
    assert seen["early"]["message"] == "Waiting for the operator to pick up the task"
    assert seen["approve"]["message"].startswith("WaitingForApproval: ")
    assert seen["queued"]["message"].startswith("Pending: ")
    assert "maxConcurrentTasks" in seen["queued"]["message"] or "one" in seen["queued"]["message"]
    assert seen["busy"]["message"].startswith("Running")
    assert seen["paused"]["message"] == samples["paused"]["status"]["message"]
