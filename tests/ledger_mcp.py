"""An MCP test server of our own, with a ledger of effects (run as a subprocess).

``python tests/ledger_mcp.py --port PORT --ledger FILE [--requests FILE]`` serves streamable
HTTP at ``http://127.0.0.1:PORT/mcp`` with the ``mcp`` SDK's ``MCPServer``. Every execution of
a tool with an effect appends one JSON line to the ledger, so a test can count what really
happened (and under which idempotency key), whatever the client believes:

- ``apply_change(change)`` — destructive, not idempotent: records at once.
- ``slow_change(change, seconds)`` — the same after sleeping ``seconds`` (to kill a client, or
  the operator, in the middle of a call). It notes the start in the ``--started`` file at once;
  the ledger line is written when the sleep completes, even if the client has gone by then (a
  real effect does not stop because the caller hung up; the SDK would cancel the handler).
- ``refuse_change(reason)`` — records nothing and answers with ``isError: true``.
- ``read_ledger()`` — read-only: the ledger's lines, as text.
- ``add_tool(name)`` — registers a new read-only tool ``name`` (answering ``"ok"``) at runtime
  and announces it: ``notifications/tools/list_changed`` to ``subscriptions/listen`` streams.

A ledger line is ``{"tool", "change", "metaKey", "headerKey", "requestId"}``: ``metaKey`` is
``_meta["agenttask.dev/idempotency-key"]`` of the request, ``headerKey`` its
``Idempotency-Key`` HTTP header. With ``--requests FILE`` every HTTP request's method, path and
headers are appended there too (to check what a client sent, e.g. a header from a Secret).
With ``--started FILE``, ``slow_change`` notes each call there as it begins (to know when one
is in flight).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import ToolAnnotations

META_KEY = "agenttask.dev/idempotency-key"

CHANGES = ToolAnnotations(
    read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=False
)
READ_ONLY = ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)


def build(ledger: Path, started: Path | None = None) -> MCPServer:
    """The server and its tools, writing to ``ledger`` (and ``started``)."""
    server = MCPServer("ledger", version="1.0.0")
    running: set[asyncio.Task[dict[str, Any]]] = set()

    def record(tool: str, change: str, ctx: Context) -> dict[str, Any]:
        meta = ctx.request_context.meta or {}
        headers = ctx.headers or {}
        line = {
            "tool": tool,
            "change": change,
            "metaKey": meta.get(META_KEY),
            "headerKey": headers.get("idempotency-key"),
            "requestId": ctx.request_id,
        }
        with ledger.open("a") as f:
            f.write(json.dumps(line) + "\n")
        return line

    @server.tool(description="Apply a change (not idempotent: each call applies it once more).",
                 annotations=CHANGES)  # fmt: skip
    def apply_change(change: str, ctx: Context) -> str:
        line = record("apply_change", change, ctx)
        return f"applied {change!r} (key {line['metaKey']})"

    @server.tool(description="Apply a change after waiting `seconds`.", annotations=CHANGES)
    async def slow_change(change: str, seconds: float, ctx: Context) -> str:
        if started is not None:
            meta = ctx.request_context.meta or {}
            with started.open("a") as f:
                f.write(json.dumps({"change": change, "metaKey": meta.get(META_KEY)}) + "\n")

        async def effect() -> dict[str, Any]:
            await asyncio.sleep(seconds)
            return record("slow_change", change, ctx)

        task = asyncio.create_task(effect())
        running.add(task)
        task.add_done_callback(running.discard)
        line = await asyncio.shield(task)
        return f"applied {change!r} after {seconds:g}s (key {line['metaKey']})"

    @server.tool(description="Refuse a change, always.", annotations=CHANGES)
    def refuse_change(reason: str) -> str:
        raise ValueError(f"refused: {reason}")

    @server.tool(description="The ledger so far, one JSON object a line.", annotations=READ_ONLY)
    def read_ledger() -> str:
        return ledger.read_text() if ledger.exists() else ""

    @server.tool(description="Add a tool named `name` and announce the change.",
                 annotations=CHANGES)  # fmt: skip
    async def add_tool(name: str, ctx: Context) -> str:
        def added() -> str:
            return "ok"

        server.add_tool(added, name=name, description="Added at runtime.", annotations=READ_ONLY)
        await ctx.notify_tools_changed()
        return f"added {name!r}"

    return server


class RecordRequests:
    """ASGI middleware: append each HTTP request's method, path and headers to a file."""

    def __init__(self, app: Any, path: Path) -> None:
        """Wrap ``app``."""
        self.app, self.path = app, path

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Record, then pass on."""
        if scope["type"] == "http":
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            line = {"method": scope["method"], "path": scope["path"], "headers": headers}
            with self.path.open("a") as f:
                f.write(json.dumps(line) + "\n")
        await self.app(scope, receive, send)


def main() -> None:
    """Parse the flags and serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ledger", type=Path, required=True)
    parser.add_argument("--requests", type=Path)
    parser.add_argument("--started", type=Path)
    args = parser.parse_args()
    app: Any = build(args.ledger, args.started).streamable_http_app()
    if args.requests is not None:
        app = RecordRequests(app, args.requests)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
