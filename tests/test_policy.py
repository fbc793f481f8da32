"""Retries, backoff, deadlines, budgets, suspend/resume, TTL and deletion — against the real
API server, the operator as a subprocess and the fake OpenAI server with fault injection.

Measured spacings are printed (run with ``-s``) so that they can be quoted.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import datetime
from typing import Any

import pytest
from kubernetes_asyncio import client

from fakeopenai import HANG, FakeServer, Reply, completion, error, tool_messages
from kubehelpers import (
    GROUP,
    PLURAL,
    VERSION,
    create_task,
    events_about,
    eventually,
    get_task,
    task_gone,
    wait_phase,
)
from operatorproc import OperatorProcess

pytestmark = pytest.mark.cluster


def gaps(times: list[float]) -> list[float]:
    return [round(b - a, 2) for a, b in itertools.pairwise(times)]


def parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


async def patch_spec(
    api: client.ApiClient, namespace: str, name: str, spec: dict[str, Any]
) -> None:
    await client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name, {"spec": spec},
        _content_type="application/merge-patch+json",
    )  # fmt: skip


async def events(api: client.ApiClient, namespace: str, name: str, *expected: str) -> None:
    """Wait until the task's Events have exactly these reasons (in any order: timestamps tie)."""
    want = sorted(expected)

    async def check() -> bool:
        return sorted(e.reason for e in await events_about(api, namespace, name)) == want

    try:
        await eventually(check, within=10, what=f"events {want}")
    except AssertionError:
        evs = await client.CoreV1Api(api).list_namespaced_event(namespace)
        got = [(e.involved_object.name, e.reason, e.message) for e in evs.items]
        raise AssertionError(f"events {want} not found; events in {namespace}: {got}") from None


async def asked(fake: FakeServer) -> bool:
    return bool(fake.requests)


async def test_429_with_retry_after_is_honoured(
    api: client.ApiClient, namespace: str, fake: FakeServer, operator: OperatorProcess
) -> None:
    def model(req: dict[str, Any]) -> Reply:
        if len(fake.requests) <= 2:
            return error(429, "Rate limit reached", {"Retry-After": "2"})
        return completion("done")

    fake.llm = model
    operator.start()
    await create_task(api, namespace, "rl", {"input": "x", "model": {"name": "m"}})
    seen: set[tuple[int, str]] = set()

    async def watch_status() -> None:
        while True:
            st = (await get_task(api, namespace, "rl")).get("status") or {}
            if st.get("nextRetryTime"):
                seen.add((st["attempts"], st["lastError"]))
            if st.get("phase") in ("Succeeded", "Failed"):
                return
            await asyncio.sleep(0.2)

    await asyncio.wait_for(watch_status(), 60)
    st = (await get_task(api, namespace, "rl"))["status"]
    assert st["phase"] == "Succeeded"
    spacing = gaps(fake.request_times)
    print(f"\n429 Retry-After: 2 -> request spacing {spacing}s")
    assert len(fake.requests) == 3
    assert all(2.0 <= g < 3.0 for g in spacing), spacing
    # While waiting, status showed the attempt count and the last error.
    assert {a for a, _ in seen} == {1, 2}
    assert all("HTTP 429" in e and "Rate limit reached" in e for _, e in seen)
    await events(api, namespace, "rl", "Started", "Retrying", "Retrying", "Succeeded")


async def test_500_forever_exhausts_retries_with_exponential_spacing(
    api: client.ApiClient, namespace: str, fake: FakeServer, operator: OperatorProcess
) -> None:
    fake.llm = lambda req: error(500, "upstream exploded")
    operator.start()
    spec = {
        "input": "x",
        "model": {"name": "m"},
        "retry": {"maxAttempts": 3, "initialBackoffSeconds": 1, "backoffFactor": 2},
    }
    await create_task(api, namespace, "boom", spec)
    st = (await wait_phase(api, namespace, "boom", within=60))["status"]
    assert (st["phase"], st["reason"]) == ("Failed", "RetriesExhausted")
    assert "failed 3 time(s)" in st["error"]
    assert "HTTP 500" in st["error"]
    assert "upstream exploded" in st["error"]
    await events(api, namespace, "boom", "Started", "Retrying", "Retrying", "RetriesExhausted")
    spacing = gaps(fake.request_times)
    print(f"\n500 forever, maxAttempts 3, 1s x2 -> request spacing {spacing}s")
    assert len(fake.requests) == 3  # the SDK's own retries are off: 3 configured, 3 made
    assert 0.8 <= spacing[0] < 1.6, spacing  # 1 s minus up to 20 % jitter, plus overhead
    assert 1.6 <= spacing[1] < 2.6, spacing  # 2 s minus up to 20 % jitter, plus overhead


async def test_step_timeout_then_retries_exhausted(
    api: client.ApiClient, namespace: str, fake: FakeServer, operator: OperatorProcess
) -> None:
    fake.llm = lambda req: HANG
    operator.start()
    spec = {
        "input": "x",
        "model": {"name": "m"},
        "stepTimeoutSeconds": 2,
        "retry": {"maxAttempts": 2, "initialBackoffSeconds": 1},
    }
    await create_task(api, namespace, "hang", spec)
    st = (await wait_phase(api, namespace, "hang", within=60))["status"]
    assert (st["phase"], st["reason"]) == ("Failed", "RetriesExhausted")
    assert "did not finish within 2s" in st["error"]
    assert len(fake.requests) == 2
    # Measured between the two requests (not from the create: the operator's start-up and the
    # machine's load would count): the 2 s timeout, then a 1 s backoff shortened by 0-20 %.
    gap = fake.request_times[1] - fake.request_times[0]
    print(f"\nhanging server, stepTimeoutSeconds 2: second attempt {gap:.1f}s after the first")
    # The timer starts before the request is sent: on a loaded machine the first request
    # arrives a few tenths late, so the gap can be below 2.8 s; it never is below the timeout.
    assert 2.0 <= gap < 8


async def test_deadline_ends_a_step_in_flight(
    api: client.ApiClient, namespace: str, fake: FakeServer, operator: OperatorProcess
) -> None:
    fake.llm = lambda req: HANG
    operator.start()
    spec = {"input": "x", "model": {"name": "m"}, "activeDeadlineSeconds": 3}
    await create_task(api, namespace, "late", spec)
    obj = await wait_phase(api, namespace, "late", within=30)
    st = obj["status"]
    assert (st["phase"], st["reason"]) == ("Failed", "DeadlineExceeded")
    took = parse_time(st["completionTime"]) - parse_time(st["startTime"])
    print(f"\nactiveDeadlineSeconds 3 with a hanging model -> failed {took:.0f}s after start")
    assert 2 <= took <= 5
    assert len(fake.requests) == 1


async def test_deadline_ends_a_task_that_keeps_looping(
    api: client.ApiClient, namespace: str, fake: FakeServer, operator: OperatorProcess
) -> None:
    fake.llm = lambda req: completion(tool_calls=[(f"c{len(req['messages'])}", "slow", {})])
    fake.tools["slow"] = lambda call, n: Reply(body="ok", delay=0.3)
    operator.start()
    spec = {
        "input": "x",
        "model": {"name": "m"},
        "maxIterations": 1000,
        "activeDeadlineSeconds": 3,
        "tools": [{"name": "slow", "http": {"url": fake.tool_url("slow")}}],
    }
    await create_task(api, namespace, "loop", spec)
    st = (await wait_phase(api, namespace, "loop", within=30))["status"]
    assert (st["phase"], st["reason"]) == ("Failed", "DeadlineExceeded")
    assert st["iterations"] >= 2


async def test_kill_during_backoff_resumes_the_wait_at_the_persisted_time(
    api: client.ApiClient, namespace: str, fake: FakeServer, operator: OperatorProcess
) -> None:
    fake.llm = lambda req: error(503, "busy") if len(fake.requests) == 1 else completion("done")
    operator.start()
    spec = {
        "input": "x",
        "model": {"name": "m"},
        "activeDeadlineSeconds": 120,
        "retry": {"initialBackoffSeconds": 10},
    }
    await create_task(api, namespace, "wait", spec)

    async def waiting() -> dict[str, Any] | None:
        st = (await get_task(api, namespace, "wait")).get("status") or {}
        return st if st.get("nextRetryTime") else None

    before = await eventually(waiting, within=30, what="a retry to be scheduled")
    operator.kill()
    # Down for 3.5 s: a wait reset at restart would end >= 3.5 + 8 s after the failure, later
    # than the persisted time (<= 10 s) + 1 s; a slow restart still has >= 4.5 s to spare.
    await asyncio.sleep(3.5)
    operator.start()
    st = (await wait_phase(api, namespace, "wait", within=60))["status"]
    assert st["phase"] == "Succeeded"
    planned = parse_time(before["nextRetryTime"])
    second = fake.request_times[1]
    print(f"\nSIGKILL during a {planned - fake.request_times[0]:.1f}s backoff: second request "
          f"{second - planned:+.2f}s from the persisted nextRetryTime")  # fmt: skip
    assert planned - 0.05 <= second <= planned + 1.0  # not earlier, and not reset to a new wait
    assert st["startTime"] == before["startTime"]  # the deadline's origin did not move
    assert len(fake.requests) == 2


async def test_suspend_stops_at_step_boundary_and_resume_excludes_suspended_time(
    api: client.ApiClient, namespace: str, fake: FakeServer, operator: OperatorProcess
) -> None:
    def model(req: dict[str, Any]) -> Reply:
        if not tool_messages(req):
            return completion(tool_calls=[("c1", "slow", {})])
        return completion("finished")

    fake.llm = model
    fake.tools["slow"] = lambda call, n: Reply(body="ok", delay=1.5)
    operator.start()
    spec = {
        "input": "x",
        "model": {"name": "m"},
        "activeDeadlineSeconds": 8,
        "tools": [{"name": "slow", "http": {"url": fake.tool_url("slow")}}],
    }
    await create_task(api, namespace, "pause", spec)

    async def tool_running() -> bool:
        return bool(fake.deliveries)

    await eventually(tool_running, within=30, what="the tool call")
    await patch_spec(api, namespace, "pause", {"suspend": True})
    obj = await wait_phase(api, namespace, "pause", ("Suspended",), within=30)
    assert obj["status"]["toolCalls"] == 1  # the step in flight finished first
    requests = len(fake.requests)
    await asyncio.sleep(9)  # longer than activeDeadlineSeconds
    assert len(fake.requests) == requests  # nothing asked while suspended
    assert (await get_task(api, namespace, "pause"))["status"]["phase"] == "Suspended"
    await patch_spec(api, namespace, "pause", {"suspend": False})
    st = (await wait_phase(api, namespace, "pause", within=30))["status"]
    assert st["phase"] == "Succeeded", st  # not DeadlineExceeded: suspended time excluded
    assert st["result"] == "finished"
    assert st["suspendedSeconds"] >= 9
    await events(api, namespace, "pause", "Started", "Suspended", "Resumed", "Succeeded")


async def test_suspended_at_creation_does_not_start(
    api: client.ApiClient, namespace: str, fake: FakeServer, operator: OperatorProcess
) -> None:
    fake.llm = lambda req: completion("hi")
    operator.start()
    await create_task(api, namespace, "s", {"input": "x", "model": {"name": "m"}, "suspend": True})
    st = (await wait_phase(api, namespace, "s", ("Suspended",)))["status"]
    assert "startTime" not in st
    await asyncio.sleep(1)
    assert fake.requests == []
    await patch_spec(api, namespace, "s", {"suspend": False})
    assert (await wait_phase(api, namespace, "s"))["status"]["phase"] == "Succeeded"


async def test_ttl_deletes_finished_task_and_transcript(
    api: client.ApiClient, namespace: str, fake: FakeServer, operator: OperatorProcess
) -> None:
    fake.llm = lambda req: completion("bye")
    operator.start()
    spec = {"input": "x", "model": {"name": "m"}, "ttlSecondsAfterFinished": 2}
    await create_task(api, namespace, "ttl", spec)
    obj = await wait_phase(api, namespace, "ttl")
    uid = obj["metadata"]["uid"]
    core = client.CoreV1Api(api)
    sel = f"agenttask.dev/task-uid={uid}"
    assert (await core.list_namespaced_config_map(namespace, label_selector=sel)).items
    await eventually(lambda: task_gone(api, namespace, "ttl"), within=30, what="TTL deletion")

    async def no_transcript() -> bool:
        return not (await core.list_namespaced_config_map(namespace, label_selector=sel)).items

    await eventually(no_transcript, within=60, what="transcript ConfigMaps to be collected")


async def test_delete_during_a_running_step_stops_it(
    api: client.ApiClient, namespace: str, fake: FakeServer, operator: OperatorProcess
) -> None:
    fake.llm = lambda req: HANG
    operator.start()
    await create_task(api, namespace, "del", {"input": "x", "model": {"name": "m"}})
    await eventually(lambda: asked(fake), within=30, what="the LLM request")
    t0 = time.monotonic()
    await client.CustomObjectsApi(api).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "del"
    )
    await eventually(lambda: task_gone(api, namespace, "del"), within=15, what="deletion")
    took = time.monotonic() - t0
    print(f"\ndelete during a hanging LLM request -> object gone after {took:.1f}s")
    assert took < 5
    assert "LLM request 1 interrupted" in operator.output()
    assert len(fake.requests) == 1


async def test_delete_while_operator_is_down_leaves_no_stuck_finalizer(
    api: client.ApiClient, namespace: str, fake: FakeServer, operator: OperatorProcess
) -> None:
    fake.llm = lambda req: HANG
    operator.start()
    await create_task(api, namespace, "orphan", {"input": "x", "model": {"name": "m"}})
    await eventually(lambda: asked(fake), within=30, what="the LLM request")
    operator.kill()
    await client.CustomObjectsApi(api).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "orphan"
    )
    await asyncio.sleep(1)
    obj = await get_task(
        api, namespace, "orphan"
    )  # held by the finalizer while the operator is down
    assert obj["metadata"]["deletionTimestamp"]
    operator.start()
    await eventually(
        lambda: task_gone(api, namespace, "orphan"), within=30, what="deletion after restart"
    )
    assert len(fake.requests) == 1


async def test_budget_is_checked_before_each_call(
    api: client.ApiClient, namespace: str, fake: FakeServer, operator: OperatorProcess
) -> None:
    fake.llm = lambda req: completion(
        tool_calls=[("a", "t", {}), ("b", "t", {})], prompt_tokens=10, completion_tokens=5
    )
    fake.tools["t"] = lambda call, n: Reply(body="ok")
    operator.start()
    tool = {"name": "t", "http": {"url": fake.tool_url("t")}}
    spec = {"input": "x", "model": {"name": "m"}, "tools": [tool], "budget": {"maxToolCalls": 1}}
    await create_task(api, namespace, "calls", spec)
    st = (await wait_phase(api, namespace, "calls"))["status"]
    assert (st["phase"], st["reason"]) == ("Failed", "BudgetExceeded")
    assert "maxToolCalls=1" in st["error"]
    assert len(fake.deliveries) == 1  # the second call was never made

    fake.llm = lambda req: completion(
        tool_calls=[(f"c{len(req['messages'])}", "t", {})], prompt_tokens=10, completion_tokens=5
    )
    spec = {"input": "x", "model": {"name": "m"}, "tools": [tool], "budget": {"maxTotalTokens": 15}}
    requests = len(fake.requests)
    await create_task(api, namespace, "tokens", spec)
    st = (await wait_phase(api, namespace, "tokens"))["status"]
    assert (st["phase"], st["reason"]) == ("Failed", "BudgetExceeded")
    assert "maxTotalTokens=15" in st["error"]
    assert len(fake.requests) - requests == 1  # checked before the second LLM call
