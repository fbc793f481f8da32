"""What a task's trace says, after the OpenTelemetry GenAI semantic conventions. Pure.

``effects.tracing`` records the spans; this module computes their attributes from the task's
models: which attempt a step is, which kind of tool it calls, where its model server is, the
``error.type`` of a failure, and — only when content capture is enabled — the messages in the
conventions' JSON form (``gen_ai.input.messages`` / ``gen_ai.output.messages``: a list of
``{"role", "parts": [...]}`` with ``text``, ``tool_call`` and ``tool_call_response`` parts).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from agenttask_operator.core.errors import Failure
from agenttask_operator.models import AgentTaskStatus, Step, ToolSpec

PROVIDER = "openai"  # the protocol spoken; server.address tells which server it really is


def attempt(status: AgentTaskStatus, step: Step) -> int:
    """The number of the attempt of ``step`` that runs now (status as written by its intent)."""
    current = status.current_step
    if current is not None and (current.kind, current.iteration, current.tool_call_id) == (
        step.kind,
        step.iteration,
        step.tool_call_id,
    ):
        return max(status.attempts, 1)
    for call in status.parallel_calls:
        if call.iteration == step.iteration and call.tool_call_id == step.tool_call_id:
            return max(call.attempts, 1)
    return 1


def tool_type(name: str, tools: Iterable[ToolSpec], mcp_tools: Iterable[str]) -> str:
    """``gen_ai.tool.type``: ``extension`` for a tool the operator reaches over the network
    (HTTP or MCP), ``function`` for a built-in it runs itself.
    """  # noqa: D205
    if name in set(mcp_tools):
        return "extension"
    spec = next((t for t in tools if t.name == name and t.tool_server_ref is None), None)
    return "extension" if spec is not None and spec.http is not None else "function"


def server(base_url: str | None) -> dict[str, str | int]:
    """``server.address`` and ``server.port`` of a model endpoint (empty when unparsable)."""
    if not base_url:
        return {}
    try:
        parts = urlsplit(base_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return {}
    if not parts.hostname:
        return {}
    return {"server.address": parts.hostname, "server.port": port}


def error_type(failure: Failure, http_status: int | None = None) -> str:
    """``error.type`` of a failed attempt: the HTTP status when the server answered with one
    (as the conventions suggest: ``429``, ``400``; ``http_status``: the status of the error
    the failure came from, if the failure does not keep it), else the operator's reason
    (``ModelTimeout``, ``ToolUnavailable``, ``StepTimeout`` …).
    """  # noqa: D205
    status = failure.status if failure.status is not None else http_status
    if status is not None:
        return str(status)
    return failure.reason or "_OTHER"


def _text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # text parts
        texts = [p.get("text") for p in content if isinstance(p, dict)]
        return "".join(t for t in texts if isinstance(t, str))
    return None


def _arguments(raw: Any) -> Any:
    """A tool call's arguments as JSON when they parse, else as the model wrote them."""
    if not isinstance(raw, str):
        return raw
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return raw


def message(msg: dict[str, Any]) -> dict[str, Any]:
    """One OpenAI-format chat message in the conventions' form."""
    role = str(msg.get("role") or "user")
    parts: list[dict[str, Any]] = []
    text = _text(msg.get("content"))
    if role == "tool":
        parts.append(
            {"type": "tool_call_response", "id": msg.get("tool_call_id"), "response": text}
        )
    elif text:
        parts.append({"type": "text", "content": text})
    for call in msg.get("tool_calls") or ():
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict):
            parts.append(
                {
                    "type": "tool_call",
                    "id": call.get("id"),
                    "name": fn.get("name"),
                    "arguments": _arguments(fn.get("arguments")),
                }
            )
    return {"role": role, "parts": parts}


def input_messages(messages: Iterable[dict[str, Any]]) -> str:
    """``gen_ai.input.messages``: the request's messages, as JSON text."""
    return json.dumps([message(m) for m in messages], ensure_ascii=False)


def output_messages(msg: dict[str, Any], finish_reason: str | None) -> str:
    """``gen_ai.output.messages``: the answer, with why generation stopped, as JSON text."""
    out = message(msg) | {"finish_reason": finish_reason or "stop"}
    return json.dumps([out], ensure_ascii=False)


def instructions(prompt: str) -> str:
    """``gen_ai.system_instructions``: the system prompt as a list of parts, as JSON text."""
    return json.dumps([{"type": "text", "content": prompt}], ensure_ascii=False)
