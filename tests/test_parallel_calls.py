"""Parallel tool calls, end to end: the calls of one answer run at the same time, each under its
own idempotency key; after a SIGKILL in the middle of them, only the unfinished one runs again.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from kubernetes_asyncio import client

from fakeopenai import HANG, FakeServer, Reply, ToolCall, completion, keys_by_call, tool_messages
from kubehelpers import create_task, eventually, get_task, transcript, wait_phase
from operatorproc import OperatorProcess

pytestmark = pytest.mark.cluster

CALLS = ("call_a", "call_b", "call_c")


def model(request: dict[str, Any]) -> Reply:
    """Iteration 1: three calls of one tool; then the answer."""
    if not tool_messages(request):
        return completion(tool_calls=[(c, "slow", {"x": i}) for i, c in enumerate(CALLS)])
    return completion("three calls done")


def spec_for(fake: FakeServer, **extra: Any) -> dict[str, Any]:
    return {
        "input": "Call slow three times.",
        "model": {"name": "m"},
        "stepTimeoutSeconds": 20,
        "tools": [
            {
                "name": "slow",
                "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}},
                "http": {"url": fake.tool_url("slow"), "timeoutSeconds": 20},
            }
        ],
    } | extra


def delivered(fake: FakeServer) -> set[str]:
    return {d.body["toolCallId"] for d in fake.deliveries}


async def check_keys(obj: dict[str, Any], fake: FakeServer) -> Counter[str]:
    """Every call delivered under one key, ``<uid>:<call id>``; deliveries per call."""
    uid = obj["metadata"]["uid"]
    assert keys_by_call(fake.deliveries) == {c: {f"{uid}:{c}"} for c in CALLS}
    return Counter(d.body["toolCallId"] for d in fake.deliveries)


async def test_three_calls_run_at_once(
    api: client.ApiClient, namespace: str, fake: FakeServer, operator: OperatorProcess
) -> None:
    """Each call is answered only once all three have arrived: run one at a time, the first
    would wait for the others until its step timeout, and the task would not succeed.
    """
    fake.llm = model
    fake.tools["slow"] = lambda call, n: Reply(
        body=f"done {call.body['arguments']['x']}", until=lambda: len(delivered(fake)) == 3
    )
    operator.start()
    await create_task(api, namespace, "par", spec_for(fake))
    obj = await wait_phase(api, namespace, "par", within=60)
    st = obj["status"]
    assert (st["phase"], st["result"]) == ("Succeeded", "three calls done"), st
    assert (st["iterations"], st["toolCalls"]) == (2, 3)
    assert "parallelCalls" not in st and "interruptions" not in st
    assert await check_keys(obj, fake) == dict.fromkeys(CALLS, 1)
    entries = await transcript(api, namespace, obj["metadata"]["uid"])
    assert sorted(e["toolCallId"] for e in entries if e["kind"] == "Tool") == list(CALLS)
    # The model saw all three results, each after the call that asked for it.
    assert [len(tool_messages(r)) for r in fake.requests] == [0, 3]


async def test_one_at_a_time_when_the_limit_is_one(
    api: client.ApiClient, namespace: str, fake: FakeServer, operator: OperatorProcess
) -> None:
    fake.llm = model
    arrived: list[int] = []  # how many calls had been delivered when each was answered

    def slow(call: ToolCall, n: int) -> Reply:
        arrived.append(len(fake.deliveries))
        return Reply(body="done")

    fake.tools["slow"] = slow
    operator.start()
    await create_task(api, namespace, "seq", spec_for(fake, maxParallelToolCalls=1))
    obj = await wait_phase(api, namespace, "seq", within=60)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    assert arrived == [1, 2, 3]


async def test_after_a_sigkill_among_the_calls_only_the_unfinished_one_runs_again(
    api: client.ApiClient, namespace: str, fake: FakeServer, operator: OperatorProcess
) -> None:
    fake.llm = model

    def slow(call: ToolCall, n: int) -> Reply:
        if call.body["toolCallId"] == "call_b" and n == 1:
            return HANG  # received, never answered: the operator dies meanwhile
        return Reply(body=f"done {call.body['toolCallId']}")

    fake.tools["slow"] = slow
    operator.start()
    task = await create_task(api, namespace, "crash", spec_for(fake))
    uid = task["metadata"]["uid"]

    async def a_and_c_stored() -> bool:
        entries = await transcript(api, namespace, uid)
        return {e.get("toolCallId") for e in entries if e["kind"] == "Tool"} == {
            "call_a",
            "call_c",
        }

    await eventually(a_and_c_stored, within=60, what="the results of call_a and call_c")
    # All three intents were stored before any call ran: a in flight, b and c alongside.
    st = (await get_task(api, namespace, "crash"))["status"]
    assert st["currentStep"]["toolCallId"] == "call_a"
    assert [p["toolCallId"] for p in st["parallelCalls"]] == ["call_b", "call_c"]
    operator.kill()

    operator.start()
    obj = await wait_phase(api, namespace, "crash", within=60)
    st = obj["status"]
    assert (st["phase"], st["result"]) == ("Succeeded", "three calls done"), st
    assert st["toolCalls"] == 3
    # call_b again (an interruption, same key); call_a and call_c never again.
    assert await check_keys(obj, fake) == {"call_a": 1, "call_b": 2, "call_c": 1}
    assert len(fake.requests) == 2  # the model was asked once per iteration
