"""Which tools a task has: resolving ``toolServerRef`` entries once, when the task starts.

A ``spec.tools`` entry with ``toolServerRef: {name, tools}`` offers the tools that the
AgentToolServer of that name (in the task's namespace) discovered — all of them, or the named
ones. Before the task starts:

- no such AgentToolServer → ``ToolServerNotFound``;
- not discovered yet (no ``Ready`` condition for its current generation) → wait and look again;
- ``Ready=False`` (unreachable, refused by the allow-list, a header Secret missing …) →
  ``ToolServerUnavailable``, with the server's own reason and message;
- a named tool the server does not offer → ``UnknownTool``;
- two sources offering the same name (inline tools, servers) → ``ToolNameConflict``;
- a tool name a model API cannot take (function names match ``^[a-zA-Z0-9_-]{1,64}$``; MCP
  allows more, e.g. dots) → ``ToolNameInvalid``, before any request (the model server would
  refuse every request that offers it).

What was resolved — each tool's name, server, input-schema digest, and its approval and
unknown-outcome policy (``core.approval``) — is stored in
``status.resolvedTools`` with the start, so that a later edit of the AgentToolServer or a change
of the server's tools never changes a task in flight: a tool whose schema changed is reported
(``ToolServerChanged``) when the task next asks the server, not silently followed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agenttask_operator.core.approval import mcp_policy
from agenttask_operator.models import ResolvedTool, TaskState


@dataclass(frozen=True)
class Refusal:
    """The task cannot start: a reason and a message."""

    reason: str
    message: str


@dataclass(frozen=True)
class NotYet:
    """A server has not been looked at yet: wait, then decide again."""

    why: str


RETRY_SECONDS = 5.0  # how soon to look again at a server not yet discovered
FUNCTION_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")  # what chat-completion APIs accept


def server_refs(state: TaskState) -> list[tuple[int, str, tuple[str, ...]]]:
    """``(index in spec.tools, server name, tool names)`` of every ``toolServerRef`` entry."""
    return [
        (i, t.tool_server_ref.name, t.tool_server_ref.tools)
        for i, t in enumerate(state.spec.tools)
        if t.tool_server_ref is not None
    ]


def resolve_tools(state: TaskState) -> tuple[ResolvedTool, ...] | Refusal | NotYet:
    """The MCP tools of ``state``'s task, or why there are none (yet)."""
    if state.status.resolved_tools is not None:
        return state.status.resolved_tools
    ns = state.namespace
    offered_by: dict[str, str] = {
        t.name: f"spec.tools[{i}]"
        for i, t in enumerate(state.spec.tools)
        if t.tool_server_ref is None
    }
    resolved: list[ResolvedTool] = []
    for i, server, names in server_refs(state):
        found = state.tool_servers.get(server)
        where = f"spec.tools[{i}].toolServerRef"
        if found is None:
            return Refusal(
                "ToolServerNotFound", f"{where}: AgentToolServer {ns}/{server} not found"
            )
        cond = found.status.condition()
        if cond is None or (cond.observed_generation or 0) < found.generation:
            return NotYet(f"waiting for the first discovery of AgentToolServer {ns}/{server}")
        if cond.status != "True":
            state_ = f"{cond.reason}: {cond.message}"
            msg = f"{where}: AgentToolServer {ns}/{server} is not Ready ({state_})"
            return Refusal("ToolServerUnavailable", msg)
        tools = {t.name: t for t in found.status.tools}
        missing = [n for n in names if n not in tools]
        if missing:
            have = ", ".join(sorted(tools)) or "none"
            msg = (
                f"{where}: AgentToolServer {ns}/{server} offers no tool {', '.join(missing)} "
                f"(it offers: {have})"
            )
            return Refusal("UnknownTool", msg)
        for name in names or tuple(tools):
            if not FUNCTION_NAME.fullmatch(name):
                msg = (
                    f"{where}: AgentToolServer {ns}/{server} offers a tool named {name!r}, which "
                    f"cannot be offered to a model (function names match "
                    f"{FUNCTION_NAME.pattern}): name the tools the task needs in "
                    f"toolServerRef.tools, or leave it out with the AgentToolServer's toolFilter"
                )
                return Refusal("ToolNameInvalid", msg)
            source = f"AgentToolServer {server}"
            if name in offered_by:
                msg = f"two tools named {name!r}: from {offered_by[name]} and from {source}"
                return Refusal("ToolNameConflict", msg)
            offered_by[name] = source
            needs, on_unknown = mcp_policy(state.spec.tools[i], found.spec, tools[name])
            resolved.append(
                ResolvedTool(
                    name=name,
                    server=server,
                    input_schema_digest=tools[name].input_schema_digest,
                    approval=needs,
                    on_unknown_outcome=on_unknown,
                )
            )
    return tuple(resolved)
