"""Metrics, end to end: the operator's ``/metrics`` scraped by a real Prometheus.

Debian's ``prometheus`` (``make prometheus``) runs on 127.0.0.1 with a 1 s scrape interval and
its own storage, scraping the operator subprocess's ``--metrics-port``. Four tasks run, one at a
time (the namespace's limit is 1, so three wait ``Queued`` while the first one's tool hangs):
one with parallel tool calls (an HTTP tool, a built-in and a tool the model made up), one whose
first LLM request meets a 429, one that meets a 500, one whose model refuses the key (401).
Then one task waits for an approval. Prometheus's HTTP API must then show what happened:
series and values, compared with what the fake model served and what status recorded.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from localcluster import free_port, wait_listening

from fakeopenai import FakeServer, Reply, completion, error, tool_messages
from kubehelpers import create_task, eventually, get_task, wait_phase
from operatorproc import OperatorProcess
from prometheus import Prometheus, lint_metrics, scrape, version

pytestmark = pytest.mark.cluster

FAST_RETRY = {"maxAttempts": 3, "initialBackoffSeconds": 0.2, "backoffFactor": 1}


class Script:
    """The fake model's answers, by the task's input (each task has a model name of its own)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.asked: dict[str, int] = {}

    def __call__(self, request: dict[str, Any]) -> Reply:
        first = next(m["content"] for m in request["messages"] if m["role"] == "user")
        with self.lock:
            n = self.asked[first] = self.asked.get(first, 0) + 1
        done = tool_messages(request)
        if first == "tools":
            if not done:
                calls: list[tuple[str, str, dict[str, Any] | str]] = [
                    ("call_echo", "echo", {"x": 1}),
                    ("call_disk", "check_disk", {}),
                    ("call_nope", "made_up_tool", {}),
                ]
                return completion(tool_calls=calls)
            return completion("done", prompt_tokens=30, completion_tokens=7)
        if first == "rate-limited" and n == 1:
            return error(429, "Rate limit reached", {"retry-after-ms": "100"})
        if first == "server-error" and n == 1:
            return error(500, "upstream broke")
        if first == "refused":
            return error(401, "Incorrect API key provided")
        if first == "approval":
            return completion(tool_calls=[("call_ok", "echo", {"x": 2})])
        return completion("ok")


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[list[Prometheus]]:
    """Prometheus servers started by the test, stopped afterwards."""
    started: list[Prometheus] = []
    yield started
    for p in started:
        p.stop()


def spec(input_: str, model: str, **extra: Any) -> dict[str, Any]:
    return {"input": input_, "model": {"name": model}, "retry": FAST_RETRY, **extra}


async def test_prometheus_scrapes_what_the_tasks_did(
    api: client.ApiClient,
    namespace: str,
    fake: FakeServer,
    operator: OperatorProcess,
    tmp_path: Path,
    prometheus_for: list[Prometheus],
) -> None:
    print(version())
    released = threading.Event()
    fake.llm = Script()
    fake.tools["echo"] = lambda call, n: Reply(
        body={"echo": call.body["arguments"]}, until=released.is_set
    )
    port = free_port()
    operator.start(AGENTTASK_METRICS_PORT=str(port), AGENTTASK_MAX_TASKS_PER_NAMESPACE="1")
    operator.wait_started(60)
    wait_listening(port)
    prom = Prometheus(tmp_path / "prometheus", [f"127.0.0.1:{port}"]).start()
    prometheus_for.append(prom)
    await prom.ready()
    await prom.until('up{job="agenttask-operator"}', 1)

    echo = {"name": "echo", "http": {"url": fake.tool_url("echo")}}
    tools = [echo, {"name": "check_disk"}]
    await create_task(api, namespace, "task-tools", spec("tools", "model-tools", tools=tools))

    async def echo_delivered() -> bool:
        return any(d.tool == "echo" for d in fake.deliveries)

    await eventually(echo_delivered, within=60, what="the echo call to hang")
    await create_task(api, namespace, "task-429", spec("rate-limited", "model-a"))
    await create_task(api, namespace, "task-500", spec("server-error", "model-b"))
    await create_task(api, namespace, "task-401", spec("refused", "model-c"))

    # Gauges, while the first task's tool hangs: one Running, three Queued.
    await prom.until("agenttask_tasks_queued", 3)
    await prom.until('sum(agenttask_tasks{phase="Running"})', 1)
    assert await prom.query("agenttask_tasks") == {
        (("phase", "Pending"), ("reason", "Queued")): 3.0,
        (("phase", "Running"), ("reason", "Running")): 1.0,
    }
    released.set()
    names = ("task-tools", "task-429", "task-500", "task-401")
    ended = {n: (await wait_phase(api, namespace, n, within=120))["status"] for n in names}
    assert {n: (s["phase"], s["reason"]) for n, s in ended.items()} == {
        "task-tools": ("Succeeded", "Completed"),
        "task-429": ("Succeeded", "Completed"),
        "task-500": ("Succeeded", "Completed"),
        "task-401": ("Failed", "ModelAuthFailed"),
    }

    # Counters: wait for the scrape that saw the last task end, then compare everything.
    await prom.until("sum(agenttask_tasks_finished_total)", 4)
    await prom.until("agenttask_tasks_queued", 0)
    assert await prom.scalar("agenttask_tasks_started_total") == 4
    assert await prom.query("agenttask_tasks_finished_total") == {
        (("phase", "Succeeded"), ("reason", "Completed")): 3.0,
        (("phase", "Failed"), ("reason", "ModelAuthFailed")): 1.0,
    }
    assert await prom.query("agenttask_tasks") == {
        (("phase", "Succeeded"), ("reason", "Completed")): 3.0,
        (("phase", "Failed"), ("reason", "ModelAuthFailed")): 1.0,
    }
    steps = await prom.query("agenttask_steps_total > 0")
    assert steps == {
        (("kind", "LLM"), ("outcome", "ok")): 4.0,  # task-tools twice, task-429, task-500
        (("kind", "LLM"), ("outcome", "transient_error")): 2.0,  # the 429 and the 500
        (("kind", "LLM"), ("outcome", "permanent_error")): 1.0,  # the 401
        (("kind", "Tool"), ("outcome", "ok")): 2.0,  # echo, check_disk
        (("kind", "Tool"), ("outcome", "tool_error")): 1.0,  # made_up_tool
    }
    # One LLM duration observation per request the fake model served, by model.
    requests = await prom.query("sum by (model) (agenttask_llm_request_duration_seconds_count)")
    assert sum(requests.values()) == len(fake.requests) == 7
    assert requests == {
        (("model", "model-tools"),): 2.0,
        (("model", "model-a"),): 2.0,
        (("model", "model-b"),): 2.0,
        (("model", "model-c"),): 1.0,
    }
    assert await prom.query("agenttask_llm_errors_total") == {
        (("class", "rate_limit"), ("model", "model-a")): 1.0,
        (("class", "server_error"), ("model", "model-b")): 1.0,
        (("class", "auth"), ("model", "model-c")): 1.0,
    }
    # Tokens: what the fake model's answers reported, as status summed them.
    tokens = await prom.query("agenttask_llm_tokens_total")
    assert tokens == {
        (("kind", "prompt"), ("model", "model-tools")): 40.0,
        (("kind", "completion"), ("model", "model-tools")): 12.0,
        (("kind", "prompt"), ("model", "model-a")): 10.0,
        (("kind", "completion"), ("model", "model-a")): 5.0,
        (("kind", "prompt"), ("model", "model-b")): 10.0,
        (("kind", "completion"), ("model", "model-b")): 5.0,
    }
    usage = [s.get("usage", {}) for s in ended.values()]
    assert sum(tokens.values()) == sum(u.get("totalTokens", 0) for u in usage)
    # Tools: the declared names; the one the model made up is "other".
    calls = await prom.query("sum by (tool) (agenttask_tool_call_duration_seconds_count)")
    assert calls == {
        (("tool", "echo"),): 1.0,
        (("tool", "check_disk"),): 1.0,
        (("tool", "other"),): 1.0,
    }
    assert await prom.query("agenttask_tool_errors_total") == {
        (("class", "tool_error"), ("tool", "other")): 1.0
    }
    assert (
        await prom.scalar('agenttask_tool_call_duration_seconds_bucket{tool="echo",le="+Inf"}') == 1
    )
    assert await prom.query("agenttask_retries_total") == {
        (("kind", "LLM"), ("reason", "ModelUnavailable")): 2.0
    }
    assert await prom.query("agenttask_interruptions_total") == {}
    # The transcript: every segment and byte that status says was committed.
    committed = [s["transcript"] for s in ended.values() if "transcript" in s]
    assert (
        await prom.scalar("agenttask_transcript_segments_written_total")
        == sum(t["segments"] for t in committed)
        == 7
    )
    assert await prom.scalar("agenttask_transcript_bytes_written_total") == sum(
        t["bytes"] for t in committed
    )

    # A task waiting for a person: the pending-approval gauge.
    approval = spec("approval", "model-d", tools=[echo | {"approval": "Required"}])
    await create_task(api, namespace, "task-approval", approval)
    await wait_phase(api, namespace, "task-approval", ("WaitingForApproval",), within=60)
    await prom.until("agenttask_approvals_pending", 1)
    waiting = await prom.query('agenttask_tasks{phase="WaitingForApproval"}')
    assert waiting == {(("phase", "WaitingForApproval"), ("reason", "ApprovalPending")): 1.0}
    assert (await get_task(api, namespace, "task-approval"))["status"][
        "phase"
    ] == "WaitingForApproval"

    # Nothing names a task: no label value is a task's name or uid.
    text = await scrape(port)
    uids = [(await get_task(api, namespace, n))["metadata"]["uid"] for n in names]
    for word in (*uids, namespace, *names, "task-approval"):
        assert word not in text, word
    # ...and promtool finds nothing to say about the names and types.
    assert lint_metrics(text) == ""


async def test_a_metrics_port_that_is_taken_stops_the_operator(
    operator: OperatorProcess,
) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))  # noqa: S104 - as the operator binds
        taken.listen()
        port = taken.getsockname()[1]
        operator.start(AGENTTASK_METRICS_PORT=str(port))
        assert operator.proc is not None
        code = await asyncio.to_thread(operator.proc.wait, 60)
    assert code != 0
    assert f"cannot serve metrics on port {port}" in operator.output()
    assert "agenttask-operator started" not in operator.output()
