"""AgentTasks using MCP tools (spec.tools[].toolServerRef) — real API server, real operator,
real MCP servers: @modelcontextprotocol/server-everything and our ledger server.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes_asyncio import client

from fakeopenai import FakeServer, Reply, completion, tool_messages
from kubehelpers import (
    create_object,
    create_task,
    eventually,
    get_object,
    ready_of,
    transcript,
    wait_phase,
)
from mcpservers import LedgerServer, ServerProcess
from operatorproc import OperatorProcess

pytestmark = pytest.mark.cluster


async def tool_server(
    api: client.ApiClient, namespace: str, name: str, url: str, **spec: Any
) -> dict[str, Any]:
    """Create an AgentToolServer and wait until its first discovery is Ready."""
    await create_object(
        api, namespace, "agenttoolservers", "AgentToolServer", name, {"url": url, **spec}
    )

    async def ready() -> dict[str, Any] | None:
        obj = await get_object(api, namespace, "agenttoolservers", name)
        cond = ready_of(obj)
        return obj if cond is not None and cond["status"] == "True" else None

    return await eventually(ready, within=60, what=f"AgentToolServer {name} Ready")


def calls(*wanted: tuple[str, str, dict[str, Any]]) -> Any:
    """A model that asks for ``wanted`` tool calls once, then answers with what they returned."""

    def model(req: dict[str, Any]) -> Reply:
        done = tool_messages(req)
        if not done:
            return completion(tool_calls=list(wanted))
        return completion(" | ".join(m["content"] for m in done))

    return model


async def test_a_task_calls_a_tool_of_server_everything(
    api: client.ApiClient,
    namespace: str,
    fake: FakeServer,
    everything: ServerProcess,
    operator: OperatorProcess,
) -> None:
    operator.start()
    server = await tool_server(api, namespace, "everything", everything.url)
    fake.llm = calls(("call_sum", "get-sum", {"a": 2, "b": 40}))
    spec = {
        "input": "add",
        "model": {"name": "m"},
        "tools": [
            {"name": "everything", "toolServerRef": {"name": "everything", "tools": ["get-sum"]}}
        ],
    }
    await create_task(api, namespace, "sum", spec)
    obj = await wait_phase(api, namespace, "sum")
    st = obj["status"]
    assert st["phase"] == "Succeeded", st
    assert "42" in st["result"]
    digest = next(t for t in server["status"]["tools"] if t["name"] == "get-sum")
    assert st["resolvedTools"] == [
        {
            "name": "get-sum",
            "server": "everything",
            "inputSchemaDigest": digest["inputSchemaDigest"],
            "approval": "Never",  # the server marks it read-only
            "onUnknownOutcome": "Redeliver",
        }
    ]
    # The model was offered exactly that tool, with the server's own schema.
    offered = fake.requests[0]["tools"]
    assert [t["function"]["name"] for t in offered] == ["get-sum"]
    assert set(offered[0]["function"]["parameters"]["properties"]) >= {"a", "b"}
    entries = await transcript(api, namespace, obj["metadata"]["uid"])
    assert [e["kind"] for e in entries] == ["LLM", "Tool", "LLM"]
    assert "42" in entries[1]["message"]["content"] and not entries[1].get("isError")


async def test_a_task_calls_a_stdio_server_bridged_by_mcp_proxy(
    api: client.ApiClient,
    namespace: str,
    fake: FakeServer,
    time_server: ServerProcess,
    operator: OperatorProcess,
) -> None:
    """The way users bridge stdio-only servers: mcp-server-time behind mcp-proxy."""
    operator.start()
    await tool_server(api, namespace, "time", time_server.url)
    fake.llm = calls(("call_t", "get_current_time", {"timezone": "UTC"}))
    spec = {
        "input": "what time is it?",
        "model": {"name": "m"},
        "tools": [
            {"name": "time", "toolServerRef": {"name": "time", "tools": ["get_current_time"]}}
        ],
    }
    await create_task(api, namespace, "clock", spec)
    st = (await wait_phase(api, namespace, "clock"))["status"]
    assert st["phase"] == "Succeeded", st
    assert '"timezone":"UTC"' in st["result"].replace(" ", "")
    assert [t["name"] for t in st["resolvedTools"]] == ["get_current_time"]


async def test_every_mcp_call_carries_the_idempotency_key_and_bad_arguments_never_leave(
    api: client.ApiClient,
    namespace: str,
    fake: FakeServer,
    ledger: LedgerServer,
    operator: OperatorProcess,
) -> None:
    operator.start()
    await tool_server(api, namespace, "ledger", ledger.url)
    fake.llm = calls(
        ("call_ok", "apply_change", {"change": "scale to 3"}),
        ("call_bad", "apply_change", {"change": 5}),  # not a string: refused before the call
    )
    spec = {
        "input": "change",
        "model": {"name": "m"},
        # apply_change is destructive: without this, each call would wait for an approval
        "tools": [{"name": "ledger", "toolServerRef": {"name": "ledger"}, "approval": "Never"}],
    }
    await create_task(api, namespace, "chg", spec)
    obj = await wait_phase(api, namespace, "chg")
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    uid = obj["metadata"]["uid"]
    effects = ledger.entries()
    assert [(e["change"], e["metaKey"], e["headerKey"]) for e in effects] == [
        ("scale to 3", f"{uid}:call_ok", f"{uid}:call_ok")
    ]
    results = {m["tool_call_id"]: m["content"] for m in tool_messages(fake.requests[-1])}
    assert results["call_bad"].startswith("error: arguments do not match the input schema")
    names = {t["name"] for t in obj["status"]["resolvedTools"]}
    assert {"apply_change", "slow_change", "read_ledger"} <= names


@pytest.mark.parametrize(
    ("tools", "reason", "says"),
    [
        ([{"name": "x", "toolServerRef": {"name": "nowhere"}}], "ToolServerNotFound", "nowhere"),
        (
            [{"name": "x", "toolServerRef": {"name": "everything", "tools": ["no-such-tool"]}}],
            "UnknownTool",
            "no-such-tool",
        ),
        (
            [
                {"name": "echo", "http": {"url": "http://127.0.0.1:9/echo"}},
                {"name": "x", "toolServerRef": {"name": "everything", "tools": ["echo"]}},
            ],
            "ToolNameConflict",
            "two tools named 'echo'",
        ),
    ],
    ids=["no-server", "unknown-tool", "name-conflict"],
)
async def test_a_task_that_cannot_have_its_tools_fails_before_any_request(
    api: client.ApiClient,
    namespace: str,
    fake: FakeServer,
    everything: ServerProcess,
    operator: OperatorProcess,
    tools: list[dict[str, Any]],
    reason: str,
    says: str,
) -> None:
    operator.start()
    await tool_server(api, namespace, "everything", everything.url)
    await create_task(api, namespace, "bad", {"input": "x", "model": {"name": "m"}, "tools": tools})
    st = (await wait_phase(api, namespace, "bad"))["status"]
    assert (st["phase"], st["reason"]) == ("Failed", reason), st
    assert says in st["error"]
    assert fake.requests == []
    assert json.dumps(st)  # nothing odd in status
