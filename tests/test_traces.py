"""OpenTelemetry traces: the real operator exports GenAI spans over OTLP/HTTP to a receiver the
test starts (tests/otlpreceiver.py decodes the protobuf as a collector would). Checked: span
names, kinds and attributes, parentage under the task's root span, the trace id kept in status
across a SIGKILL and restart, the ``traceparent`` that HTTP tools, MCP servers and the model
server receive, and that message contents are exported only when asked for.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from fakeopenai import HANG, FakeServer, Reply, ToolCall, completion, error, tool_messages
from kubehelpers import (
    GROUP,
    PLURAL,
    VERSION,
    create_task,
    eventually,
    get_task,
    transcript,
    wait_phase,
)
from mcpservers import LedgerServer
from operatorproc import OperatorProcess
from otlpreceiver import Receiver, Span
from packaging_helpers import docs, helm_template, only
from scenarios import three_step_model
from test_mcp_task import tool_server

pytestmark = pytest.mark.cluster

CONTENT = {
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
}
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-01$")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def otel_env(receiver: Receiver, **more: str) -> dict[str, str]:
    """Traces on, exported every 100 ms (the SDK's default is 5 s)."""
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        **more,
    }


def parent_of(traceparent: str | None) -> tuple[str, str]:
    """(trace id, parent span id) of a ``traceparent`` header."""
    found = TRACEPARENT.match(traceparent or "")
    assert found is not None, traceparent
    return found.group(1), found.group(2)


async def root_span(receiver: Receiver) -> Span:
    async def exported() -> Span | None:
        roots = receiver.named("invoke_agent")
        return roots[0] if roots else None

    return await eventually(exported, within=60, what="the invoke_agent span")


def by_start(spans: list[Span]) -> list[Span]:
    return sorted(spans, key=lambda s: s.start_ns)


async def test_trace_across_retries_tools_and_a_restart(
    api: client.ApiClient,
    namespace: str,
    fake: FakeServer,
    operator: OperatorProcess,
    receiver: Receiver,
) -> None:
    """429 on the first LLM request, call_b in flight when the operator is SIGKILLed, call_c
    failing once with 500: one trace, one root, every other span its child.
    """
    throttled: list[int] = []

    def model(request: dict[str, Any]) -> Reply:
        if not throttled:
            throttled.append(1)
            return error(429, "slow down", {"retry-after-ms": "100"})
        return three_step_model(request)

    def echo(call: ToolCall, n: int) -> Reply:
        cid = call.body["toolCallId"]
        if cid == "call_b" and n == 1:
            return HANG  # received, never answered: the operator is killed meanwhile
        if cid == "call_c" and n == 1:
            return error(500, "tool backend down")
        return Reply(body=f"echo {call.body['arguments']['x']}")

    fake.llm, fake.tools["echo"] = model, echo
    spec = {
        "input": "Call echo three times.",
        "model": {"name": "fake-model"},
        "retry": {"initialBackoffSeconds": 0.2, "maxBackoffSeconds": 1},
        "tools": [
            {
                "name": "echo",
                "description": "echo x",
                "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}},
                "http": {"url": fake.tool_url("echo"), "timeoutSeconds": 60},
            }
        ],
    }
    operator.start(**otel_env(receiver))
    await create_task(api, namespace, "crash", spec)

    async def before_kill() -> bool:
        # call_b hangs, and call_a's span (it ran alongside) has reached the receiver
        done = {s.attributes.get("gen_ai.tool.call.id") for s in receiver.named("execute_tool")}
        b_sent = any(d.body["toolCallId"] == "call_b" for d in fake.deliveries)
        return b_sent and "call_a" in done

    await eventually(before_kill, within=90, what="call_a exported, call_b in flight")
    operator.kill()
    before = (await get_task(api, namespace, "crash"))["status"]["traceContext"]
    restarted = time.monotonic()
    operator.start(**otel_env(receiver))
    obj = await wait_phase(api, namespace, "crash", within=120)
    st, uid = obj["status"], obj["metadata"]["uid"]
    assert st["phase"] == "Succeeded", st
    assert st["traceContext"] == before  # kept across the restart
    trace_id, root_id = before["traceID"], before["spanID"]
    root = await root_span(receiver)

    spans = list(receiver.spans)
    assert {s.trace_id for s in spans} == {trace_id}
    assert [s.name for s in spans].count("invoke_agent crash") == 1
    assert (root.name, root.kind, root.span_id, root.parent_id) == (
        "invoke_agent crash", "INTERNAL", root_id, ""
    )  # fmt: skip
    assert root.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert root.attributes["gen_ai.agent.name"] == "crash"
    assert root.attributes["gen_ai.conversation.id"] == uid
    assert root.attributes["gen_ai.request.model"] == "fake-model"
    assert root.attributes["gen_ai.usage.input_tokens"] == st["usage"]["promptTokens"]
    assert root.attributes["gen_ai.usage.output_tokens"] == st["usage"]["completionTokens"]
    assert root.resource["service.name"] == "agenttask-operator"
    assert all(s.parent_id == root_id for s in spans if s is not root)

    # One chat span per LLM request: the 429, then the three answers.
    chats = by_start(receiver.named("chat"))
    assert len(chats) == len(fake.requests) == 4
    assert {(s.name, s.kind) for s in chats} == {("chat fake-model", "CLIENT")}
    first, retried = chats[0], chats[1]
    assert first.attributes["error.type"] == "429" and first.status == 2
    assert first.attributes["agenttask.step.attempt"] == 1
    assert (
        retried.attributes["agenttask.step.attempt"] == 2 and "error.type" not in retried.attributes
    )
    for s in chats:
        assert s.attributes["gen_ai.operation.name"] == "chat"
        assert s.attributes["gen_ai.provider.name"] == "openai"
        assert s.attributes["gen_ai.request.model"] == "fake-model"
        assert s.attributes["gen_ai.conversation.id"] == uid
        assert s.attributes["server.address"] == "127.0.0.1"
    for s in chats[1:]:
        assert s.attributes["gen_ai.response.model"] == "fake-model"
        assert s.attributes["gen_ai.usage.input_tokens"] == 10
        assert s.attributes["gen_ai.usage.output_tokens"] == 5
    assert [s.attributes["gen_ai.response.finish_reasons"] for s in chats[1:]] == [
        ["tool_calls"], ["tool_calls"], ["stop"]
    ]  # fmt: skip

    # One execute_tool span per finished attempt (call_b's first, killed, never ended).
    tools = by_start(receiver.named("execute_tool"))
    assert {(s.name, s.kind, s.attributes["gen_ai.tool.type"]) for s in tools} == {
        ("execute_tool echo", "INTERNAL", "extension")
    }
    per_call: dict[str, list[Span]] = {}
    for s in tools:
        assert s.attributes["gen_ai.operation.name"] == "execute_tool"
        assert s.attributes["gen_ai.tool.name"] == "echo"
        per_call.setdefault(s.attributes["gen_ai.tool.call.id"], []).append(s)
    assert sorted(per_call) == ["call_a", "call_b", "call_c"]
    assert [len(per_call[c]) for c in ("call_a", "call_b")] == [1, 1]
    failed_c, ok_c = per_call["call_c"]
    assert failed_c.attributes["error.type"] == "ToolUnavailable" and failed_c.status == 2
    assert failed_c.attributes["agenttask.step.attempt"] == 1
    assert ok_c.attributes["agenttask.step.attempt"] == 2
    assert "error.type" not in ok_c.attributes

    # The resumed part: exported by the second process, same trace, same parent.
    resumed = [s for s in spans if s.received > restarted and s is not root]
    assert {s.attributes.get("gen_ai.tool.call.id") for s in resumed} >= {"call_b", "call_c"}

    # traceparent: every tool delivery and every LLM request carries the trace; a delivery's
    # parent is the span of its attempt.
    for d in fake.deliveries:
        assert parent_of(d.headers.get("traceparent"))[0] == trace_id
    delivered_a = [d for d in fake.deliveries if d.body["toolCallId"] == "call_a"]
    assert parent_of(delivered_a[0].headers["traceparent"])[1] == per_call["call_a"][0].span_id
    for h in fake.headers:
        assert parent_of(h.get("traceparent"))[0] == trace_id

    # No message content by default: no content attribute, no prompt or tool result anywhere.
    assert not [(s.name, k) for s in spans for k in s.attributes if k in CONTENT]
    exported = b"".join(receiver.bodies)
    assert b"Call echo three times" not in exported and b"echo 1" not in exported


async def test_contents_when_enabled_and_an_mcp_tool(
    api: client.ApiClient,
    namespace: str,
    fake: FakeServer,
    operator: OperatorProcess,
    receiver: Receiver,
    ledger: LedgerServer,
) -> None:
    """With OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true, prompts, answers, tool
    arguments and results are in the spans; an MCP server receives the trace's traceparent.
    """
    operator.start(**otel_env(receiver, OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="true"))
    await tool_server(api, namespace, "ledger", ledger.url)

    def model(request: dict[str, Any]) -> Reply:
        done = tool_messages(request)
        if not done:
            return completion(tool_calls=[("call_ok", "apply_change", {"change": "scale to 3"})])
        return completion("done: " + done[0]["content"])

    fake.llm = model
    spec = {
        "input": "Scale the web tier.",
        "systemPrompt": "You are careful.",
        "model": {"name": "m"},
        "tools": [{"name": "ledger", "toolServerRef": {"name": "ledger"}, "approval": "Never"}],
    }
    await create_task(api, namespace, "mcp", spec)
    obj = await wait_phase(api, namespace, "mcp", within=120)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    trace_id = obj["status"]["traceContext"]["traceID"]
    root = await root_span(receiver)
    assert json.loads(root.attributes["gen_ai.system_instructions"]) == [
        {"type": "text", "content": "You are careful."}
    ]

    [tool] = receiver.named("execute_tool")
    assert tool.name == "execute_tool apply_change"
    assert tool.attributes["gen_ai.tool.type"] == "extension"
    assert tool.attributes["gen_ai.tool.call.id"] == "call_ok"
    assert json.loads(tool.attributes["gen_ai.tool.call.arguments"]) == {"change": "scale to 3"}
    entries = await transcript(api, namespace, obj["metadata"]["uid"])
    assert tool.attributes["gen_ai.tool.call.result"] == entries[1]["message"]["content"]

    first, second = by_start(receiver.named("chat"))
    assert json.loads(first.attributes["gen_ai.input.messages"]) == [
        {"role": "system", "parts": [{"type": "text", "content": "You are careful."}]},
        {"role": "user", "parts": [{"type": "text", "content": "Scale the web tier."}]},
    ]
    [answer] = json.loads(first.attributes["gen_ai.output.messages"])
    assert answer["finish_reason"] == "tool_calls"
    assert answer["parts"] == [
        {
            "type": "tool_call",
            "id": "call_ok",
            "name": "apply_change",
            "arguments": {"change": "scale to 3"},
        }
    ]
    replayed = json.loads(second.attributes["gen_ai.input.messages"])
    assert replayed[-1]["role"] == "tool"
    assert replayed[-1]["parts"][0]["type"] == "tool_call_response"
    assert replayed[-1]["parts"][0]["id"] == "call_ok"
    [final] = json.loads(second.attributes["gen_ai.output.messages"])
    assert final["parts"][0]["content"] == obj["status"]["result"]

    # The MCP session of the call carried the trace, its parent the execute_tool span.
    sent = [
        r["headers"]["traceparent"] for r in ledger.request_log() if "traceparent" in r["headers"]
    ]
    assert sent, ledger.request_log()
    assert {parent_of(t) for t in sent} == {(trace_id, tool.span_id)}


async def test_a_failed_task_and_its_trace_context_cannot_change(
    api: client.ApiClient,
    namespace: str,
    fake: FakeServer,
    operator: OperatorProcess,
    receiver: Receiver,
) -> None:
    """A 400 ends the task: its root and its chat span say why; status.traceContext, once
    written, is refused any change by the API server.
    """
    fake.llm = lambda request: error(400, "bad request")
    operator.start(**otel_env(receiver))
    await create_task(api, namespace, "bad", {"input": "x", "model": {"name": "m"}})
    st = (await wait_phase(api, namespace, "bad"))["status"]
    assert (st["phase"], st["reason"]) == ("Failed", "ModelRequestInvalid"), st
    root = await root_span(receiver)
    assert (root.attributes["error.type"], root.status) == ("ModelRequestInvalid", 2)
    assert root.attributes["agenttask.phase"] == "Failed"
    [chat] = receiver.named("chat")
    assert (chat.attributes["error.type"], chat.status, chat.parent_id) == ("400", 2, root.span_id)

    other = {"traceID": "0" * 31 + "1", "spanID": "0" * 15 + "1"}
    with pytest.raises(ApiException) as err:
        await client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, "bad", {"status": {"traceContext": other}},
            _content_type="application/merge-patch+json",
        )  # fmt: skip
    assert err.value.status == 422
    assert "status.traceContext is immutable" in json.loads(err.value.body or "{}")["message"]


def test_chart_values_turn_traces_on(tmp_path: Path) -> None:
    """tracing.endpoint (and captureMessageContent) become the OTEL_* variables; unset: none
    (test_packaging checks the default Deployment's whole environment).
    """
    values = {
        "tracing": {"endpoint": "http://otel.observability:4318", "captureMessageContent": True}
    }
    deploy = only(docs(helm_template(tmp_path, "ops", values)), "Deployment")
    (c,) = deploy["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel.observability:4318"
    assert env["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] == "true"
    deploy = only(
        docs(helm_template(tmp_path, "ops", {"tracing": {"endpoint": "http://o:4318"}})),
        "Deployment",
    )
    (c,) = deploy["spec"]["template"]["spec"]["containers"]
    assert [e["name"] for e in c["env"] if e["name"].startswith("OTEL_")] == [
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    ]
