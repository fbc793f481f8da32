"""The operator's own log: JSON lines that say which task and step they are about, and levels
that mean something — real API server, real operator subprocess (``--log-format json -v``).

A normal life — tasks that succeed (built-in tools, parallel HTTP tool calls), a TTL deletion,
an operator stopped (SIGTERM) while a tool runs and started again, a running task deleted —
logs no WARNING and no ERROR line at all, at debug level too.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from kubernetes_asyncio import client

from fakeopenai import FakeServer, Reply, completion, tool_messages
from kubehelpers import GROUP, PLURAL, VERSION, create_task, eventually, get_task, wait_phase
from operatorproc import OperatorProcess
from scenarios import DISK_INPUT, disk_model, three_step_model

pytestmark = pytest.mark.cluster

PLURALS = ("agenttasks", "agentmodels", "agenttoolservers", "agenttoolapprovals",
           "agenttaskschedules")  # fmt: skip


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line the operator wrote, parsed (the test's own start markers left out)."""
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("=====")]
    return [json.loads(line) for line in lines]  # any line that is not JSON fails here


async def served(api: client.ApiClient, namespace: str) -> None:
    """Wait until the API server serves every kind of ours: right after a CRD is created it
    answers 429 "storage is (re)initializing" for a moment, which kopf logs as a WARNING.
    """
    co = client.CustomObjectsApi(api)
    for plural in PLURALS:

        async def listed(plural: str = plural) -> bool:
            try:
                await co.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
            except client.ApiException:
                return False
            return True

        await eventually(listed, within=30, what=f"{plural} to be served")


def model(request: dict[str, Any]) -> Reply:
    """The disk task's script for its input, three tool steps for any other."""
    user = next(m["content"] for m in request["messages"] if m["role"] == "user")
    if user == DISK_INPUT:
        return disk_model(request)
    if user == "wait":
        if tool_messages(request):
            return completion("waited")
        return completion(tool_calls=[("call_w", "slow", {})])
    return three_step_model(request)


async def test_a_normal_life_logs_json_about_each_task_and_no_warning(
    api: client.ApiClient,
    namespace: str,
    fake: FakeServer,
    operator: OperatorProcess,
) -> None:
    release = threading.Event()
    fake.llm = model
    fake.tools["echo"] = lambda call, n: Reply(body={"ok": call.body["arguments"]})
    fake.tools["slow"] = lambda call, n: Reply(body={"ok": True}, until=release.is_set, delay=120)
    echo = {
        "name": "echo",
        "description": "echo",
        "parameters": {"type": "object"},
        "http": {"url": fake.tool_url("echo")},
    }
    slow = echo | {"name": "slow", "http": {"url": fake.tool_url("slow")}}
    await served(api, namespace)
    operator.start("-v", AGENTTASK_LOG_FORMAT="json")
    operator.wait_started()
    m = {"name": "m"}
    await create_task(api, namespace, "disk", {"input": DISK_INPUT, "model": m, "tools": [
        {"name": "check_disk"}, {"name": "clean_logs"}]})  # fmt: skip
    await create_task(api, namespace, "three", {"input": "x", "model": m, "tools": [echo]})
    await create_task(
        api, namespace, "brief", {"input": "x", "model": m, "tools": [echo],
                                  "ttlSecondsAfterFinished": 1}
    )  # fmt: skip
    await create_task(api, namespace, "slow", {"input": "wait", "model": m, "tools": [slow]})
    await create_task(api, namespace, "gone", {"input": "wait", "model": m, "tools": [slow]})
    for name in ("disk", "three"):
        obj = await wait_phase(api, namespace, name)
        assert obj["status"]["phase"] == "Succeeded", obj["status"]

    async def brief_gone() -> bool:
        co = client.CustomObjectsApi(api)
        found = await co.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        return "brief" not in {t["metadata"]["name"] for t in found["items"]}

    await eventually(brief_gone, within=60, what="the TTL to delete brief")

    # Both slow tasks wait in their tool call; one is deleted, then the operator stops.
    async def calling() -> bool:
        return len({d.body["task"]["name"] for d in fake.deliveries if d.tool == "slow"}) == 2

    await eventually(calling, within=60, what="both slow tool calls")
    await client.CustomObjectsApi(api).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "gone"
    )

    async def deleted() -> bool:
        co = client.CustomObjectsApi(api)
        found = await co.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        return "gone" not in {t["metadata"]["name"] for t in found["items"]}

    await eventually(deleted, within=30, what="the running task to be deleted")
    operator.stop()
    operator.start("-v", AGENTTASK_LOG_FORMAT="json")
    release.set()
    obj = await wait_phase(api, namespace, "slow", within=90)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]

    lines = json_lines(operator.output())
    loud = [x for x in lines if x["level"] not in ("DEBUG", "INFO")]
    assert loud == [], "\n".join(json.dumps(x) for x in loud)
    for x in lines:
        assert {"time", "level", "logger", "message"} <= x.keys(), x
    uids = {
        n: (await get_task(api, namespace, n))["metadata"]["uid"] for n in ("disk", "three", "slow")
    }
    about = [x for x in lines if x.get("name") in uids and x.get("namespace") == namespace]
    for x in about:
        assert x["uid"] == uids[x["name"]], x
    # The operator's own lines about a task all say which one, in fields.
    names = ("disk", "three", "brief", "slow", "gone")
    own = [x for x in lines if x["message"].startswith(tuple(f"{namespace}/{n}:" for n in names))]
    assert len(own) > 20
    for x in own:
        name = x["message"].split("/", 1)[1].split(":", 1)[0]
        assert (x.get("namespace"), x.get("name")) == (namespace, name), x
        assert x.get("uid"), x
    # kopf's lines about a task carry it too (from the object kopf passes in the record).
    kopf_lines = [x for x in about if x["logger"] == "kopf.objects"]
    assert kopf_lines
    # Step lines: the step and its attempt, also on lines of the libraries doing the step.
    steps = {(x["name"], x.get("step"), x.get("attempt")) for x in about if "step" in x}
    assert ("disk", "LLM 1", 1) in steps
    assert ("disk", "Tool 1 call_check", 1) in steps
    assert ("three", "Tool 1 call_b", 1) in steps  # a call run alongside call_a
    assert ("slow", "Tool 1 call_w", 1) in steps  # run again after the restart: same attempt
    tool_lines = [x for x in about if x.get("step") == "Tool 1 call_check"]
    assert {x.get("tool") for x in tool_lines} == {"check_disk"}
    libraries = {x["logger"].split(".")[0] for x in about if "step" in x}
    assert libraries - {"agenttask_operator"}, libraries  # e.g. openai, httpx: same fields
    # A line between steps names no step.
    ended = [x for x in about if x["name"] == "disk" and "final answer" in x["message"]]
    assert ended and all("step" not in x for x in ended), ended
