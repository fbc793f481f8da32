"""Executing one tool call: a built-in of the registry or an HTTP tool.

HTTP tools get ``POST <url>`` with a JSON body ``{"name", "arguments", "toolCallId",
"task": {"namespace", "name", "uid"}}`` and the header ``Idempotency-Key: <task uid>:<tool
call id>``. A 2xx body becomes the tool message. A 4xx, invalid JSON arguments or an unknown
tool name go back to the model as an error message (the model may correct itself). Timeouts,
connection errors, 408, 409, 429 and 5xx are transient: the step is retried under the same key.
Redirects are not followed (a 3xx goes back to the model as an error): the URL a task names, and
the operator's allow-list checked, is the only one the operator sends to. With traces on, the
request carries the tool call span's ``traceparent``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import aiohttp

from agenttask_operator.core.errors import Failure, is_transient_status
from agenttask_operator.effects import tracing
from agenttask_operator.effects.llm import StepFailed, retry_after_seconds
from agenttask_operator.effects.registry import BuiltinTool, ToolContext, ToolError
from agenttask_operator.models import HttpToolSpec, ToolSpec

RESPONSE_LIMIT = 8 * 1024 * 1024  # bytes of an HTTP tool's answer kept


@dataclass(frozen=True)
class ToolResult:
    """What goes back to the model."""

    content: str
    is_error: bool = False


def idempotency_key(task_uid: str, tool_call_id: str) -> str:
    """The key of a tool call: the same for every attempt and across restarts."""
    return f"{task_uid}:{tool_call_id}"


def definitions(
    tools: tuple[ToolSpec, ...], builtins: dict[str, BuiltinTool]
) -> list[dict[str, Any]]:
    """The ``tools`` parameter of a chat-completion request."""
    out = []
    for t in tools:
        if t.tool_server_ref is not None:  # MCP tools: their servers define them
            continue
        b = builtins.get(t.name) if t.http is None else None
        description = t.description or (b.description if b else "")
        parameters = t.parameters or (b.parameters if b else {"type": "object", "properties": {}})
        out.append(
            {
                "type": "function",
                "function": {"name": t.name, "description": description, "parameters": parameters},
            }
        )
    return out


def call_name(call: dict[str, Any]) -> str:
    """The name of the tool a call asks for ("" when the model gave none)."""
    fn = call.get("function")
    return str(fn.get("name", "")) if isinstance(fn, dict) else ""


def call_arguments(call: dict[str, Any]) -> dict[str, Any] | ToolResult:
    """A call's arguments as a JSON object, or the error to tell the model."""
    fn = call.get("function")
    raw = (fn.get("arguments") if isinstance(fn, dict) else None) or "{}"
    try:
        arguments = json.loads(raw) if isinstance(raw, str) else raw
    except (ValueError, RecursionError) as e:
        why = getattr(e, "msg", None) or type(e).__name__
        return ToolResult(f"error: arguments are not valid JSON ({why}); send a JSON object", True)
    if not isinstance(arguments, dict):
        return ToolResult("error: arguments must be a JSON object", True)
    return arguments


async def execute(
    call: dict[str, Any],
    tools: tuple[ToolSpec, ...],
    builtins: dict[str, BuiltinTool],
    ctx: ToolContext,
    session: aiohttp.ClientSession,
) -> ToolResult:
    """Run one tool call. Raises StepFailed (transient) when it should be retried."""
    name = call_name(call)
    spec = next((t for t in tools if t.name == name and t.tool_server_ref is None), None)
    if spec is None:
        available = ", ".join(t.name for t in tools if t.tool_server_ref is None) or "none"
        return ToolResult(f"error: unknown tool {name!r}; available tools: {available}", True)
    arguments = call_arguments(call)
    if isinstance(arguments, ToolResult):
        return arguments
    if spec.http is not None:
        return await _http(spec.http, name, arguments, ctx, session)
    builtin = builtins.get(name)
    if builtin is None:  # decide() refuses such tasks before they start
        return ToolResult(f"error: tool {name!r} is not available in this operator", True)
    try:
        return ToolResult(await builtin.fn(arguments, ctx))
    except ToolError as e:
        return ToolResult(f"error: {e}", True)
    except asyncio.CancelledError:
        raise
    except Exception as e:
        raise StepFailed(Failure(f"built-in {name} raised {type(e).__name__}: {e}", True)) from e


async def _read_limited(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, up to ``limit`` bytes (a longer one is cut, saying so)."""
    buf = bytearray()
    async for chunk in resp.content.iter_chunked(64 * 1024):
        buf += chunk
        if len(buf) > limit:
            return bytes(buf[:limit]) + f"… [cut at {limit} bytes]".encode()
    return bytes(buf)


async def _http(
    http: HttpToolSpec,
    name: str,
    arguments: dict[str, Any],
    ctx: ToolContext,
    session: aiohttp.ClientSession,
) -> ToolResult:
    body = {
        "name": name,
        "arguments": arguments,
        "toolCallId": ctx.tool_call_id,
        "task": {"namespace": ctx.namespace, "name": ctx.task_name, "uid": ctx.task_uid},
    }
    headers = {"Idempotency-Key": ctx.idempotency_key, **tracing.headers()}
    try:
        async with session.post(
            http.url,
            json=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=http.timeout_seconds),
            allow_redirects=False,  # the URL checked against the allow-list is the one used
        ) as resp:
            text = (await _read_limited(resp, RESPONSE_LIMIT)).decode(errors="replace")
            if 200 <= resp.status < 300:
                return ToolResult(text)
            detail = f"HTTP {resp.status} from tool {name}: {text[:2000]}"
            if 300 <= resp.status < 400:
                detail = f"HTTP {resp.status} from tool {name}: redirects are not followed"
            if is_transient_status(resp.status):
                retry_after = retry_after_seconds(resp.headers)
                raise StepFailed(Failure(detail, True, "ToolUnavailable", retry_after))
            return ToolResult(f"error: {detail}", True)
    except TimeoutError as e:
        msg = f"tool {name} did not answer within {http.timeout_seconds:g}s"
        raise StepFailed(Failure(msg, True, "ToolTimeout")) from e
    except aiohttp.ClientError as e:
        raise StepFailed(
            Failure(f"tool {name}: {type(e).__name__}: {e}", True, "ToolUnavailable")
        ) from e
