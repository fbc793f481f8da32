"""A task loop's MCP tools: their definitions for the model, and calling one.

What a task may use was fixed when it started (``status.resolvedTools``: each tool's name, its
AgentToolServer and the digest of its input schema, see ``core.tooling``). Here, per task loop:

- the AgentToolServers are read when first needed (URL, headers from Secrets of the task's
  namespace, timeout) and their tools listed once (``effects.mcp.list_tools``), then kept in
  memory; after a restart they are read and listed again;
- a tool whose schema digest differs from the resolved one, or that the server no longer
  offers, fails the step permanently (``ToolServerChanged``): a server whose tools changed
  mid-task is reported, never silently followed;
- arguments are checked against the tool's input schema before the call; a mismatch goes back
  to the model as a tool error (it may correct itself), and nothing is sent;
- every call carries the idempotency key ``<task uid>:<tool_call_id>`` (``_meta`` and header).
"""

from __future__ import annotations

from typing import Any

import jsonschema

from agenttask_operator.core.errors import Failure
from agenttask_operator.core.toolserver import Problem, schema_digest, secret_problem
from agenttask_operator.core.urls import host_allowed
from agenttask_operator.effects import metrics
from agenttask_operator.effects.kube import Kube
from agenttask_operator.effects.llm import StepFailed
from agenttask_operator.effects.tools import ToolResult
from agenttask_operator.handlers.context import Context
from agenttask_operator.models import ResolvedTool
from agenttask_operator.models.toolserver import PLURAL, AgentToolServerSpec, McpTool

CHANGED = "ToolServerChanged"


class McpTools:
    """The MCP side of one task loop."""

    def __init__(self, ctx: Context, namespace: str) -> None:
        """Bind to a task's namespace (its AgentToolServers and Secrets live there)."""
        self.ctx, self.namespace = ctx, namespace
        self.servers: dict[str, AgentToolServerSpec] = {}
        self.listed: dict[str, dict[str, McpTool]] = {}

    async def server(self, name: str) -> AgentToolServerSpec:
        """The AgentToolServer ``name`` (read once per loop)."""
        if name not in self.servers:
            obj = await self.ctx.kube.get_object(PLURAL, self.namespace, name)
            if obj is None:
                msg = f"AgentToolServer {self.namespace}/{name} no longer exists"
                raise StepFailed(Failure(msg, False, "ToolServerNotFound"))
            spec = AgentToolServerSpec.model_validate(obj.get("spec") or {})
            if not host_allowed(spec.url, self.ctx.settings.allowed_hosts):
                msg = f"AgentToolServer {name} url: host not in the operator's allowed hosts"
                raise StepFailed(Failure(msg, False, "URLNotAllowed"))
            self.servers[name] = spec
        return self.servers[name]

    async def headers(self, spec: AgentToolServerSpec) -> dict[str, str]:
        """The server's headers, their values read from Secrets of the task's namespace."""
        found = await server_headers(self.ctx.kube, self.namespace, spec)
        if isinstance(found, Problem):
            raise StepFailed(Failure(found.message, True, "SecretUnavailable"))
        return found

    async def tool(self, resolved: ResolvedTool) -> tuple[AgentToolServerSpec, McpTool]:
        """The server and the listed tool, checked against what the task resolved."""
        spec = await self.server(resolved.server)
        if resolved.server not in self.listed:
            from agenttask_operator.effects import mcp  # here, not at start: see context.MCP_IMPORT

            found = await mcp.list_tools(spec.url, await self.headers(spec), spec.timeout_seconds)
            self.listed[resolved.server] = {t.name: t for t in found.tools}
        tool = self.listed[resolved.server].get(resolved.name)
        where = f"AgentToolServer {self.namespace}/{resolved.server}"
        if tool is None:
            msg = f"{where} no longer offers the tool {resolved.name!r} the task started with"
            raise StepFailed(Failure(msg, False, CHANGED))
        digest = schema_digest(tool.input_schema)
        if digest != resolved.input_schema_digest:
            msg = (
                f"{where} changed the input schema of {resolved.name!r} since the task started "
                f"({resolved.input_schema_digest[:19]} → {digest[:19]})"
            )
            raise StepFailed(Failure(msg, False, CHANGED))
        return spec, tool

    async def definitions(self, resolved: tuple[ResolvedTool, ...]) -> list[dict[str, Any]]:
        """The ``tools`` entries of a chat-completion request for the task's MCP tools."""
        out = []
        for r in resolved:
            _, tool = await self.tool(r)
            schema = tool.input_schema or {"type": "object", "properties": {}}
            fn = {"name": r.name, "description": tool.description or "", "parameters": schema}
            out.append({"type": "function", "function": fn})
        return out

    @metrics.timed_tool(lambda _, resolved, *__: resolved.name)  # as the task resolved it
    async def call(
        self, resolved: ResolvedTool, arguments: dict[str, Any], idempotency_key: str
    ) -> ToolResult:
        """Check the arguments against the tool's schema, then call it under the key."""
        spec, tool = await self.tool(resolved)
        problem = schema_error(tool.input_schema, arguments)
        if problem is not None:
            return ToolResult(f"error: arguments do not match the input schema: {problem}", True)
        headers = await self.headers(spec)
        from agenttask_operator.effects import mcp  # here, not at start: see context.MCP_IMPORT

        return await mcp.call_tool(
            spec.url, headers, spec.timeout_seconds, resolved.name, arguments, idempotency_key
        )


async def server_headers(
    kube: Kube, namespace: str, spec: AgentToolServerSpec
) -> dict[str, str] | Problem:
    """An AgentToolServer's headers, their values read from Secrets of ``namespace``, or why
    one cannot be had (the value itself is never quoted).
    """  # noqa: D205
    out: dict[str, str] = {}
    for header in spec.headers_from:
        ref = header.secret_key_ref
        lookup, value = await kube.secret_value(namespace, ref.name, ref.key)
        problem = secret_problem(namespace, header, lookup, value)
        if problem is not None:
            return problem
        out[header.name] = header.prefix + (value or "")
    return out


def schema_error(schema: dict[str, Any], arguments: dict[str, Any]) -> str | None:
    """Why ``arguments`` fail ``schema`` (None: they pass, or the schema cannot be used)."""
    if not schema:
        return None
    try:
        validator = jsonschema.validators.validator_for(schema)(schema)
        error = jsonschema.exceptions.best_match(validator.iter_errors(arguments))
    except (jsonschema.exceptions.SchemaError, jsonschema.exceptions.UnknownType, RecursionError):
        return None  # the server's schema is broken: let the server judge the call
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return f"{where + ': ' if where else ''}{error.message}"[:500]
