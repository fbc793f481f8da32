"""The registry of built-in tools, and how to add more.

A built-in is an async function ``(arguments, context) -> str`` registered with
:func:`builtin_tool`. Other packages add theirs through the entry-point group
``agenttask_operator.tools``: each entry point names a module, imported at start-up, whose
``@builtin_tool`` functions register themselves::

    [project.entry-points."agenttask_operator.tools"]
    mytools = "mypackage.tools"

Every call carries ``context.idempotency_key`` (``<task uid>:<tool_call_id>``), stable across
retries and operator restarts: a tool with side effects must do them at most once per key.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "agenttask_operator.tools"


class ToolError(Exception):
    """A tool refuses the call: the message goes back to the model as an error."""


@dataclass(frozen=True)
class ToolContext:
    """What a built-in learns about the call besides its arguments."""

    idempotency_key: str
    namespace: str
    task_name: str
    task_uid: str
    tool_call_id: str
    workspace: Path | None


ToolFn = Callable[[dict[str, Any], ToolContext], Awaitable[str]]


@dataclass(frozen=True)
class BuiltinTool:
    """A registered built-in."""

    name: str
    description: str
    parameters: dict[str, Any]
    fn: ToolFn


REGISTRY: dict[str, BuiltinTool] = {}


def builtin_tool(
    name: str, description: str, parameters: dict[str, Any]
) -> Callable[[ToolFn], ToolFn]:
    """Register the decorated coroutine function as built-in tool ``name``."""

    def register(fn: ToolFn) -> ToolFn:
        if name in REGISTRY and REGISTRY[name].fn is not fn:
            raise ValueError(f"built-in tool {name!r} is registered twice")
        REGISTRY[name] = BuiltinTool(name, description, parameters, fn)
        return fn

    return register


def load_builtins() -> dict[str, BuiltinTool]:
    """Import the bundled built-ins and every ``agenttask_operator.tools`` entry point."""
    importlib.import_module("agenttask_operator.effects.builtins")
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception:
            log.exception("could not load built-in tools from entry point %s", ep.value)
    return REGISTRY
