"""Retry from a failure: ``spec.forkFrom`` on the real control plane with the fake model.

A source task fails at its third tool call (call_c: HTTP 500, ``retry.maxAttempts: 1``); forks
start from a copy of its transcript and succeed. Checked from the state of the world: what the
fake model was sent, which idempotency keys the tool got, the ConfigMaps of both transcripts and
the source object's resourceVersion.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from fakeopenai import FakeServer, Reply, ToolCall, error
from kubehelpers import (
    GROUP,
    PLURAL,
    VERSION,
    create_task,
    eventually,
    get_task,
    new_namespace,
    settled,
    transcript,
    wait_phase,
)
from operatorproc import OperatorProcess
from scenarios import three_step_model

pytestmark = pytest.mark.cluster

STEPS = ["LLM", "Tool", "Tool", "LLM"]  # the source's committed steps: call_c failed


def spec_for(fake: FakeServer, **extra: Any) -> dict[str, Any]:
    return {
        "input": "Call echo three times.",
        "model": {"name": "fake-model"},
        "retry": {"maxAttempts": 1},
        "tools": [
            {
                "name": "echo",
                "description": "echo x",
                "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}},
                "http": {"url": fake.tool_url("echo"), "timeoutSeconds": 60},
            }
        ],
    } | extra


class Echo:
    """The echo tool: call_c fails (HTTP 500) for the source's key, after ``release`` is set."""

    def __init__(self, *, hold_source: bool = False) -> None:
        self.source_uid = ""  # set once the source exists
        self.release = threading.Event()
        if not hold_source:
            self.release.set()

    def __call__(self, call: ToolCall, n: int) -> Reply:
        key = call.idempotency_key or ""
        if call.body["toolCallId"] == "call_c" and key.startswith(self.source_uid + ":"):
            failed = error(500, "the echo backend is down")
            return Reply(failed.status, failed.body, until=self.release.is_set, delay=600)
        return Reply(body=f"echo {call.body['arguments']['x']}")


async def config_maps(api: client.ApiClient, namespace: str, uid: str) -> dict[str, Any]:
    """The transcript ConfigMaps of ``uid``: name → (resourceVersion, owner uids, data)."""
    cms = await client.CoreV1Api(api).list_namespaced_config_map(
        namespace, label_selector=f"agenttask.dev/task-uid={uid}"
    )
    return {
        c.metadata.name: (
            c.metadata.resource_version,
            [o.uid for o in c.metadata.owner_references or []],
            c.data,
        )
        for c in cms.items
    }


async def failed_source(
    api: client.ApiClient, namespace: str, fake: FakeServer, echo: Echo
) -> dict[str, Any]:
    """Run the source to its failure at call_c; return it, settled."""
    fake.llm = three_step_model
    fake.tools["echo"] = echo
    src = await create_task(api, namespace, "src", spec_for(fake))
    echo.source_uid = src["metadata"]["uid"]
    obj = await settled(api, namespace, "src")
    assert (obj["status"]["phase"], obj["status"]["reason"]) == ("Failed", "RetriesExhausted")
    return obj


async def check_fork(
    api: client.ApiClient,
    namespace: str,
    fake: FakeServer,
    src: dict[str, Any],
    name: str,
    step: int,
) -> dict[str, Any]:
    """The fork succeeded from a copy of the source's steps 1..``step``; the source is as it was."""
    obj = await wait_phase(api, namespace, name, within=120)
    st = obj["status"]
    assert st["phase"] == "Succeeded", st
    assert st["result"] == "all three calls done"
    src_uid, uid = src["metadata"]["uid"], obj["metadata"]["uid"]
    assert st["forkedFrom"] == {"name": "src", "uid": src_uid, "step": step}
    ours, theirs = await transcript(api, namespace, uid), await transcript(api, namespace, src_uid)
    assert ours[:step] == theirs[:step]  # the copy, entry for entry
    assert [e["kind"] for e in ours] == ["LLM", "Tool", "Tool", "LLM", "Tool", "LLM"]
    # The copy is the fork's own: its segments, owned by it, one per entry (none twice).
    cms = await config_maps(api, namespace, uid)
    assert len(cms) == len(ours) and all(owners == [uid] for _, owners, _ in cms.values())
    # The iterations go on from the copied ones; the counters cover the whole conversation.
    assert (st["iterations"], st["toolCalls"]) == (3, 3)
    assert st["usage"]["totalTokens"] == 45
    assert st["transcript"]["entries"] == 6
    return obj


async def test_a_fork_without_step_continues_from_the_last_committed_step(
    api: client.ApiClient, namespace: str, fake: FakeServer, operator: OperatorProcess
) -> None:
    echo = Echo()
    operator.start()
    src = await failed_source(api, namespace, fake, echo)
    src_uid = src["metadata"]["uid"]
    assert [e["kind"] for e in await transcript(api, namespace, src_uid)] == STEPS
    before = await config_maps(api, namespace, src_uid)
    sent = len(fake.requests)
    assert sent == 2

    await create_task(api, namespace, "src-retry-1", spec_for(fake, forkFrom={"name": "src"}))
    fork = await check_fork(api, namespace, fake, src, "src-retry-1", 4)
    uid = fork["metadata"]["uid"]

    # The model was asked once, with the copied history: the source's 4 steps and call_c's
    # new result. Nothing the source had done was asked or run again.
    assert len(fake.requests) == sent + 1
    messages = fake.requests[-1]["messages"]
    history = [e["message"] for e in await transcript(api, namespace, src_uid)]
    assert messages[0] == {"role": "user", "content": "Call echo three times."}
    assert messages[1:5] == history
    assert messages[5]["tool_call_id"] == "call_c" and messages[5]["content"] == "echo 3"
    # call_c ran again as a new delivery under the fork's key; call_a and call_b did not.
    keys = [(d.body["toolCallId"], d.idempotency_key) for d in fake.deliveries]
    assert sorted(keys[:2]) == [("call_a", f"{src_uid}:call_a"), ("call_b", f"{src_uid}:call_b")]
    assert keys[2:] == [("call_c", f"{src_uid}:call_c"), ("call_c", f"{uid}:call_c")]
    # The source was never written: same object, same transcript ConfigMaps.
    after = await get_task(api, namespace, "src")
    assert after["metadata"]["resourceVersion"] == src["metadata"]["resourceVersion"]
    assert await config_maps(api, namespace, src_uid) == before
    events = await client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector="involvedObject.name=src-retry-1"
    )
    assert "Forking" in [e.reason for e in events.items]


async def test_a_fork_from_a_step_in_the_middle_of_an_answers_calls_runs_the_rest(
    api: client.ApiClient, namespace: str, fake: FakeServer, operator: OperatorProcess
) -> None:
    echo = Echo()
    operator.start()
    src = await failed_source(api, namespace, fake, echo)
    # Step 2 is the result of one of the first answer's two calls (they ran at once: results
    # are stored as they come). The other call, asked for in the same answer, runs in the fork.
    done = (await transcript(api, namespace, src["metadata"]["uid"]))[1]["toolCallId"]
    rest = {"call_a": "call_b", "call_b": "call_a"}[done]
    fork_spec = spec_for(fake, forkFrom={"name": "src", "step": 2})
    await create_task(api, namespace, "from-two", fork_spec)
    fork = await check_fork(api, namespace, fake, src, "from-two", 2)
    uid = fork["metadata"]["uid"]
    mine = [(d.body["toolCallId"], d.idempotency_key) for d in fake.deliveries[3:]]
    assert sorted(mine) == [(rest, f"{uid}:{rest}"), ("call_c", f"{uid}:call_c")]
    # Two requests of the fork (iterations 2 and 3), the first with the copied answer and the
    # copied result, then the new one.
    assert [len(r["messages"]) for r in fake.requests[2:]] == [4, 6]
    assert [m.get("tool_call_id") for m in fake.requests[2]["messages"][2:]] == [done, rest]
    ours = await transcript(api, namespace, uid)
    assert [e["iteration"] for e in ours] == [1, 1, 1, 2, 2, 3]
    after = await get_task(api, namespace, "src")
    assert after["metadata"]["resourceVersion"] == src["metadata"]["resourceVersion"]


@pytest.mark.parametrize(
    "point",
    [
        "fork-copy:1",  # forkedFrom recorded, nothing copied yet
        "fork-copy:3",  # steps 1 and 2 copied, 3 and 4 not
        "before-intent:Tool:2",  # all copied, the fork not started (its first step: call_c)
    ],
)
async def test_a_kill_during_or_after_the_copy_neither_duplicates_nor_loses_entries(
    api: client.ApiClient,
    namespace: str,
    fake: FakeServer,
    operator: OperatorProcess,
    tmp_path: Path,
    point: str,
) -> None:
    echo = Echo()
    operator.start()
    src = await failed_source(api, namespace, fake, echo)
    operator.stop()
    operator.start(AGENTTASK_FAULT_PAUSE=point)
    await create_task(api, namespace, "forked", spec_for(fake, forkFrom={"name": "src"}))
    marker = tmp_path / "faults" / point.replace(":", "_")
    await eventually(lambda: asyncio.to_thread(marker.exists), within=120, what=marker.name)
    operator.kill()
    st = (await get_task(api, namespace, "forked"))["status"]
    assert st["forkedFrom"]["step"] == 4 and "startTime" not in st
    uid = (await get_task(api, namespace, "forked"))["metadata"]["uid"]
    copied = {"fork-copy:1": 0, "fork-copy:3": 2, "before-intent:Tool:2": 4}[point]
    assert len(await transcript(api, namespace, uid)) == copied
    operator.start()
    await check_fork(api, namespace, fake, src, "forked", 4)
    assert len(fake.requests) == 3  # the source's two, the fork's one


async def test_a_fork_of_a_running_task_waits_for_it_to_end(
    api: client.ApiClient, namespace: str, fake: FakeServer, operator: OperatorProcess
) -> None:
    echo = Echo(hold_source=True)  # the source's call_c answers (500) only once released
    fake.llm = three_step_model
    fake.tools["echo"] = echo
    operator.start()
    src = await create_task(api, namespace, "src", spec_for(fake))
    echo.source_uid = src["metadata"]["uid"]

    async def call_c_in_flight() -> bool:
        return any(d.body["toolCallId"] == "call_c" for d in fake.deliveries)

    await eventually(call_c_in_flight, within=120, what="the source's call_c in flight")
    await create_task(api, namespace, "early", spec_for(fake, forkFrom={"name": "src"}))
    waiting = await wait_phase(api, namespace, "early", ("Pending",), within=60)
    assert waiting["status"]["reason"] == "WaitingForForkSource"
    assert (
        "AgentTask" in waiting["status"]["message"]
        and "has not ended (phase Running)" in (waiting["status"]["message"])
    )
    assert "forkedFrom" not in waiting["status"]
    echo.release.set()  # the source fails now; the fork goes on from its steps
    src = await settled(api, namespace, "src")
    await check_fork(api, namespace, fake, src, "early", 4)


async def fails(api: client.ApiClient, namespace: str, name: str, reason: str) -> str:
    obj = await wait_phase(api, namespace, name, within=120)
    st = obj["status"]
    assert (st["phase"], st["reason"]) == ("Failed", reason), st
    assert "startTime" not in st  # it never started: no request, no tool call
    return str(st["message"])


async def test_forks_that_cannot_be_made_fail_with_a_clear_reason(
    api: client.ApiClient, namespace: str, fake: FakeServer, operator: OperatorProcess
) -> None:
    echo = Echo()
    operator.start()
    src = await failed_source(api, namespace, fake, echo)
    sent, delivered = len(fake.requests), len(fake.deliveries)
    # A task of the same name in another namespace is not a source: names only, same namespace.
    other = await new_namespace(api)
    await create_task(api, other, "elsewhere", spec_for(fake))
    await create_task(api, namespace, "no-src", spec_for(fake, forkFrom={"name": "elsewhere"}))
    await create_task(
        api, namespace, "too-far", spec_for(fake, forkFrom={"name": "src", "step": 5})
    )
    await create_task(api, namespace, "itself", spec_for(fake, forkFrom={"name": "itself"}))
    msg = await fails(api, namespace, "no-src", "ForkSourceNotFound")
    assert f"AgentTask {namespace}/elsewhere not found" in msg
    msg = await fails(api, namespace, "too-far", "ForkStepOutOfRange")
    assert "has 4 committed step(s): forkFrom.step 5 is beyond them" in msg
    await fails(api, namespace, "itself", "InvalidForkFrom")
    # A source whose transcript lost a segment: what to copy is not known any more.
    seg = sorted(await config_maps(api, namespace, src["metadata"]["uid"]))[1]
    await client.CoreV1Api(api).delete_namespaced_config_map(seg, namespace)
    await create_task(api, namespace, "lost", spec_for(fake, forkFrom={"name": "src", "step": 1}))
    msg = await fails(api, namespace, "lost", "ForkSourceTranscriptLost")
    assert "status recorded 4, 1 are stored" in msg
    assert (len(fake.requests), len(fake.deliveries)) == (sent, delivered)


async def test_fork_from_is_frozen_once_the_copy_began(
    api: client.ApiClient, namespace: str, crd: Path
) -> None:
    """The API server's own rules (no operator): forkFrom may change before the copy begins,
    never after (status.forkedFrom set), nor once the task started.
    """
    co = client.CustomObjectsApi(api)
    spec = {"input": "x", "model": {"name": "m"}, "forkFrom": {"name": "a"}}
    await create_task(api, namespace, "f", spec)

    async def patch(name: str, body: dict[str, Any], status: bool = False) -> None:
        call = (
            co.patch_namespaced_custom_object_status
            if status
            else co.patch_namespaced_custom_object
        )
        await call(
            GROUP, VERSION, namespace, PLURAL, name, body,
            _content_type="application/merge-patch+json",
        )  # fmt: skip

    async def patch_spec(fork_from: dict[str, Any] | None) -> None:
        await patch("f", {"spec": {"forkFrom": fork_from}})

    await patch_spec({"name": "b", "step": 2})  # not copying yet: a change is fine
    await patch("f", {"status": {"forkedFrom": {"name": "b", "uid": "u", "step": 2}}}, True)
    for change in ({"name": "c"}, {"name": "b", "step": 1}, None):
        with pytest.raises(ApiException) as refused:
            await patch_spec(change)
        assert refused.value.status == 422
        assert "spec.forkFrom is immutable once the copy has begun" in str(refused.value.body)
    # Another field may still change before the start (only forkFrom is frozen by the copy).
    await patch("f", {"spec": {"input": "y"}})
    # A started task without forkFrom cannot be given one.
    await create_task(api, namespace, "g", {"input": "x", "model": {"name": "m"}})
    await patch("g", {"status": {"startTime": "2025-03-01T12:00:00Z"}}, True)
    with pytest.raises(ApiException) as refused:
        await patch("g", {"spec": {"forkFrom": {"name": "f"}}})
    assert refused.value.status == 422 and "spec is immutable once" in str(refused.value.body)
