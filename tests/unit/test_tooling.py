"""Unit tests of ``core.tooling.resolve_tools``: which MCP tools a task gets when it starts."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from agenttask_operator.core.tooling import NotYet, Refusal, resolve_tools
from agenttask_operator.models import (
    AgentTaskSpec,
    AgentTaskStatus,
    Condition,
    HttpToolSpec,
    ModelSpec,
    ResolvedTool,
    TaskState,
    ToolServerRef,
    ToolSpec,
)
from agenttask_operator.models.task import ToolServer
from agenttask_operator.models.toolserver import (
    AgentToolServerSpec,
    AgentToolServerStatus,
    ToolOverride,
    ToolStatus,
)

READ = ToolStatus(name="read", input_schema_digest="sha256:r", read_only_hint=True)
WRITE = ToolStatus(name="write", input_schema_digest="sha256:w")  # MCP defaults: destructive


def ready(*tools: ToolStatus, status: str = "True", generation: int = 1) -> AgentToolServerStatus:
    cond = Condition(
        type="Ready",
        status=status,
        reason="Discovered" if status == "True" else "Unreachable",
        message="" if status == "True" else "connection refused",
        last_transition_time="2026-01-01T00:00:00Z",
        observed_generation=generation,
    )
    return AgentToolServerStatus(tools=tools, tool_count=len(tools), conditions=(cond,))


def state(
    *entries: ToolSpec, servers: dict[str, ToolServer] | None = None, **spec: Any
) -> TaskState:
    return TaskState(
        namespace="ns",
        name="t",
        uid="u",
        generation=1,
        spec=AgentTaskSpec(input="x", model=ModelSpec(name="m"), tools=entries, **spec),
        status=AgentTaskStatus(),
        tool_servers=servers if servers is not None else {"srv": srv()},
    )


def srv(*tools: ToolStatus, status: AgentToolServerStatus | None = None, **spec: Any) -> ToolServer:
    return ToolServer(
        AgentToolServerSpec(url="http://mcp.invalid/mcp", **spec),
        status or ready(*(tools or (READ, WRITE))),
        generation=1,
    )


def ref(*names: str, **entry: Any) -> ToolSpec:
    return ToolSpec(name="srv", tool_server_ref=ToolServerRef(name="srv", tools=names), **entry)


def test_all_tools_with_their_policies() -> None:
    got = resolve_tools(state(ref()))
    assert got == (
        ResolvedTool(name="read", server="srv", input_schema_digest="sha256:r"),
        ResolvedTool(
            name="write",
            server="srv",
            input_schema_digest="sha256:w",
            approval="Required",
            on_unknown_outcome="AskApproval",
        ),
    )


def test_named_tools_and_the_policy_of_task_and_server() -> None:
    servers = {"srv": srv(tools=(ToolOverride(name="write", idempotent=True),))}
    got = resolve_tools(state(ref("write", approval="Never"), servers=servers))
    assert isinstance(got, tuple) and len(got) == 1
    assert (got[0].approval, got[0].on_unknown_outcome) == ("Never", "Redeliver")


def test_what_is_stored_is_what_counts() -> None:
    stored = (ResolvedTool(name="old", server="srv", input_schema_digest="d"),)
    st = state(ref(), servers={})
    st = replace(st, status=AgentTaskStatus(resolved_tools=stored))
    assert resolve_tools(st) == stored


@pytest.mark.parametrize(
    ("servers", "entries", "reason", "says"),
    [
        ({}, (ref(),), "ToolServerNotFound", "AgentToolServer ns/srv not found"),
        (
            {"srv": srv(status=ready(status="False"))},
            (ref(),),
            "ToolServerUnavailable",
            "is not Ready (Unreachable: connection refused)",
        ),
        (None, (ref("nope"),), "UnknownTool", "offers no tool nope (it offers: read, write)"),
        (
            None,
            (ToolSpec(name="read", http=HttpToolSpec(url="http://x.invalid/")), ref()),
            "ToolNameConflict",
            "two tools named 'read'",
        ),
        (
            {"srv": srv(ToolStatus(name="fs.read", input_schema_digest="d"))},
            (ref(),),
            "ToolNameInvalid",
            "'fs.read'",
        ),
    ],
    ids=["not-found", "not-ready", "unknown-tool", "conflict", "invalid-name"],
)
def test_refusals(
    servers: dict[str, ToolServer] | None, entries: tuple[ToolSpec, ...], reason: str, says: str
) -> None:
    got = resolve_tools(state(*entries, servers=servers))
    assert isinstance(got, Refusal), got
    assert got.reason == reason and says in got.message


def test_a_server_not_discovered_for_its_generation_yet_is_waited_for() -> None:
    stale = ToolServer(
        AgentToolServerSpec(url="http://mcp.invalid/mcp"), ready(READ, generation=1), generation=2
    )
    assert isinstance(resolve_tools(state(ref(), servers={"srv": stale})), NotYet)
