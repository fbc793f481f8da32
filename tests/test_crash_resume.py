"""Crash tests: SIGKILL the operator at the worst moments, restart it, and check that the task
succeeds, that the LLM was asked once per stored step, and that every tool call was delivered
under one idempotency key only.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from fakeopenai import HANG, FakeServer, Reply, ToolCall, keys_by_call
from kubehelpers import create_task, eventually, get_task, settled, transcript, wait_phase
from operatorproc import OperatorProcess
from scenarios import three_step_model

pytestmark = pytest.mark.cluster

SPEC: dict[str, Any] = {
    "input": "Call echo three times.",
    "model": {"name": "fake-model"},
    "tools": [],  # set per test: needs the fake's URL
}


def echo(call: ToolCall, n: int) -> Reply:
    return Reply(body=f"echo {call.body['arguments']['x']}")


def spec_for(fake: FakeServer) -> dict[str, Any]:
    return SPEC | {
        "tools": [
            {
                "name": "echo",
                "description": "echo x",
                "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}},
                "http": {"url": fake.tool_url("echo"), "timeoutSeconds": 60},
            }
        ]
    }


async def wait_file(path: Path, within: float = 60.0) -> None:
    async def exists() -> bool:
        return await asyncio.to_thread(path.exists)

    await eventually(exists, within=within, what=f"{path.name}")


async def call_stored(api: client.ApiClient, namespace: str, call: str) -> bool:
    """Whether the result of tool call ``call`` of task "crash" is in its transcript."""
    uid = (await get_task(api, namespace, "crash"))["metadata"]["uid"]
    entries = await transcript(api, namespace, uid)
    return any((e.get("message") or {}).get("tool_call_id") == call for e in entries)


async def check_outcome(api: client.ApiClient, namespace: str, fake: FakeServer) -> dict[str, int]:
    """Succeeded; one LLM request per stored LLM step; one key per tool call. Returns deliveries."""
    obj = await wait_phase(api, namespace, "crash")
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    assert obj["status"]["result"] == "all three calls done"
    entries = await transcript(api, namespace, obj["metadata"]["uid"])
    assert [e["kind"] for e in entries] == ["LLM", "Tool", "Tool", "LLM", "Tool", "LLM"]
    # The LLM was asked exactly once per stored step: 3 requests, with 1, 4 and 6 messages.
    assert [len(r["messages"]) for r in fake.requests] == [1, 4, 6]
    # Every tool call was delivered under one key only, and that key is <uid>:<tool_call_id>.
    uid = obj["metadata"]["uid"]
    assert keys_by_call(fake.deliveries) == {
        cid: {f"{uid}:{cid}"} for cid in ("call_a", "call_b", "call_c")
    }
    return dict(Counter(d.body["toolCallId"] for d in fake.deliveries))


@pytest.mark.parametrize(
    ("point", "delivered_before_kill"),
    [
        ("after-append:LLM:1", 0),  # (a) the LLM answered with tool calls; no tool ran yet
        ("before-intent:LLM:2", 2),  # (c) between iterations: both results stored, no request
    ],
)
async def test_kill_at_a_step_boundary(
    api: client.ApiClient,
    namespace: str,
    fake: FakeServer,
    operator: OperatorProcess,
    tmp_path: Path,
    point: str,
    delivered_before_kill: int,
) -> None:
    fake.llm = three_step_model
    fake.tools["echo"] = echo
    operator.start(AGENTTASK_FAULT_PAUSE=point)
    await create_task(api, namespace, "crash", spec_for(fake))
    await wait_file(tmp_path / "faults" / point.replace(":", "_"))
    operator.kill()
    assert len(fake.requests) == 1
    assert len(fake.deliveries) == delivered_before_kill
    operator.start()
    deliveries = await check_outcome(api, namespace, fake)
    assert deliveries == {"call_a": 1, "call_b": 1, "call_c": 1}


async def test_kill_while_http_tool_runs_redelivers_under_same_key(
    api: client.ApiClient, namespace: str, fake: FakeServer, operator: OperatorProcess
) -> None:
    fake.llm = three_step_model

    def echo_hangs_once(call: ToolCall, n: int) -> Reply:
        if call.body["toolCallId"] == "call_b" and n == 1:
            return HANG  # received, never answered: the operator dies meanwhile
        return echo(call, n)

    fake.tools["echo"] = echo_hangs_once
    operator.start()
    await create_task(api, namespace, "crash", spec_for(fake))

    async def call_b_received() -> bool:
        return any(d.body["toolCallId"] == "call_b" for d in fake.deliveries)

    await eventually(call_b_received, within=60, what="call_b to be delivered")

    await eventually(
        lambda: call_stored(api, namespace, "call_a"), within=30, what="call_a's result stored"
    )
    operator.kill()
    st = (await get_task(api, namespace, "crash"))["status"]
    in_flight = [st["currentStep"], *st.get("parallelCalls", [])]
    assert "call_b" in [s["toolCallId"] for s in in_flight]  # intent was recorded
    operator.start()
    deliveries = await check_outcome(api, namespace, fake)
    assert deliveries == {"call_a": 1, "call_b": 2, "call_c": 1}  # only call_b again, same key


async def test_finished_task_is_not_touched_after_restart(
    api: client.ApiClient, namespace: str, fake: FakeServer, operator: OperatorProcess
) -> None:
    fake.llm = three_step_model
    fake.tools["echo"] = echo
    operator.start()
    await create_task(api, namespace, "crash", spec_for(fake))
    await check_outcome(api, namespace, fake)
    before = await settled(api, namespace, "crash")  # kopf has removed its finalizer
    requests, deliveries = len(fake.requests), len(fake.deliveries)
    operator.stop()
    operator.start()
    operator.wait_started()
    await asyncio.sleep(5)
    after = await get_task(api, namespace, "crash")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert (len(fake.requests), len(fake.deliveries)) == (requests, deliveries)


async def test_restarts_never_use_up_the_retry_budget(
    api: client.ApiClient, namespace: str, fake: FakeServer, operator: OperatorProcess
) -> None:
    """maxAttempts: 1, and the operator is killed three times while call_b runs: the task
    still succeeds, call_b is delivered four times under one key, interruptions are counted.
    """
    fake.llm = three_step_model

    def echo_hangs_three_times(call: ToolCall, n: int) -> Reply:
        if call.body["toolCallId"] == "call_b" and n <= 3:
            return HANG
        return echo(call, n)

    fake.tools["echo"] = echo_hangs_three_times
    operator.start()
    await create_task(api, namespace, "crash", spec_for(fake) | {"retry": {"maxAttempts": 1}})
    for kill in range(1, 4):

        async def delivered(k: int = kill) -> bool:
            return bool(sum(d.body["toolCallId"] == "call_b" for d in fake.deliveries) >= k)

        await eventually(delivered, within=60, what=f"call_b delivery {kill}")
        if kill == 1:  # call_a ran alongside call_b: let its result be stored first
            await eventually(
                lambda: call_stored(api, namespace, "call_a"), within=30, what="call_a stored"
            )
        operator.kill()
        st = (await get_task(api, namespace, "crash"))["status"]
        if kill == 1:  # it ran alongside call_a: its counts are in its parallelCalls entry
            [b] = [p for p in st["parallelCalls"] if p["toolCallId"] == "call_b"]
            assert (b["attempts"], b.get("interruptions", 0)) == (1, 0)
        else:  # taken up as the step in flight once call_a was done
            assert (st["currentStep"]["toolCallId"], st["attempts"]) == ("call_b", 1)
            assert st.get("interruptions", 0) == kill - 1
        operator.start()
    deliveries = await check_outcome(api, namespace, fake)
    assert deliveries == {"call_a": 1, "call_b": 4, "call_c": 1}
    events = await client.CoreV1Api(api).list_namespaced_event(namespace)
    interrupted = [e.message for e in events.items if e.reason == "Interrupted"]
    assert len(interrupted) == 3 and "attempt 1 was interrupted (3 of 5 allowed)" in str(
        interrupted
    )


async def test_a_step_that_keeps_killing_the_operator_fails_step_interrupted(
    api: client.ApiClient, namespace: str, fake: FakeServer, operator: OperatorProcess
) -> None:
    fake.llm = three_step_model
    fake.tools["echo"] = lambda call, n: (
        HANG if call.body["toolCallId"] == "call_b" else echo(call, n)
    )
    operator.start()
    spec = spec_for(fake) | {"maxInterruptions": 2}
    await create_task(api, namespace, "crash", spec)
    for kill in range(1, 4):

        async def delivered(k: int = kill) -> bool:
            return bool(sum(d.body["toolCallId"] == "call_b" for d in fake.deliveries) >= k)

        await eventually(delivered, within=60, what=f"call_b delivery {kill}")
        if kill == 1:  # call_a ran alongside call_b: let its result be stored first
            await eventually(
                lambda: call_stored(api, namespace, "call_a"), within=30, what="call_a stored"
            )
        operator.kill()
        operator.start()
    st = (await wait_phase(api, namespace, "crash"))["status"]
    assert (st["phase"], st["reason"]) == ("Failed", "StepInterrupted")
    assert "tool call 'echo' (call_b) of iteration 1 was interrupted 2 time(s)" in st["error"]
    assert sum(d.body["toolCallId"] == "call_b" for d in fake.deliveries) == 3
