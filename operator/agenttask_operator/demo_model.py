"""A scripted stand-in for an LLM: an OpenAI-compatible server for demos and tests. NOT A MODEL.

It answers ``POST /v1/chat/completions`` by looking at the conversation so far, the way a
real model would for the disk-space demo ("I ran out of disk space. Sort it out."):
first it calls ``check_disk``, then ``clean_logs``, then it answers with what was freed.
Because it decides from the conversation (not from a counter), asking it the same thing twice
gives the same answer. Requests without the demo's tools get a short canned reply.

Run: ``python -m agenttask_operator.demo_model --port 8000`` (prints its base URL).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from aiohttp import web

MODEL_NAME = "demo-scripted-model"


def _completion(
    message: dict[str, Any], finish_reason: str, prompt: int, completion: int
) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-demo-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": MODEL_NAME,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def _tool_call(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n} B"


def reply(request: dict[str, Any]) -> dict[str, Any]:
    """The scripted answer to one chat-completion request."""
    messages = request.get("messages") or []
    prompt_tokens = sum(len(str(m.get("content") or "")) // 4 + 4 for m in messages)
    tools = {t.get("function", {}).get("name") for t in request.get("tools") or []}
    results = [m for m in messages if m.get("role") == "tool"]
    if not {"check_disk", "clean_logs"} <= tools:
        text = (
            "(demo model) I can only sort out disk space, with the check_disk and clean_logs tools."
        )
        return _completion({"role": "assistant", "content": text}, "stop", prompt_tokens, 20)
    if not results:
        msg = {
            "role": "assistant",
            "content": None,
            "tool_calls": [_tool_call("call_check_disk", "check_disk", {})],
        }
        return _completion(msg, "tool_calls", prompt_tokens, 12)
    if len(results) == 1:
        msg = {
            "role": "assistant",
            "content": None,
            "tool_calls": [_tool_call("call_clean_logs", "clean_logs", {})],
        }
        return _completion(msg, "tool_calls", prompt_tokens, 12)
    try:
        disk = json.loads(results[0].get("content") or "{}")
        cleaned = json.loads(results[1].get("content") or "{}")
        freed = _size(cleaned.get("freedBytes", 0))
        text = (
            f"Your logs were using {_size(disk.get('logsBytes', 0))}. I deleted "
            f"{cleaned.get('deletedFiles', 0)} log files and freed {freed}; "
            f"{_size(cleaned.get('freeBytesNow', 0))} are free now."
        )
    except (json.JSONDecodeError, AttributeError):
        text = (
            "I ran check_disk and clean_logs, but could not read their results: "
            + str([r.get("content") for r in results])[:500]
        )
    return _completion({"role": "assistant", "content": text}, "stop", prompt_tokens, 40)


async def _chat(request: web.Request) -> web.Response:
    return web.json_response(reply(await request.json()))


async def _models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": MODEL_NAME, "object": "model"}]})


def app() -> web.Application:
    """The aiohttp application."""
    application = web.Application(client_max_size=64 * 1024 * 1024)
    application.router.add_post("/v1/chat/completions", _chat)
    application.router.add_get("/v1/models", _models)
    return application


async def serve(host: str, port: int) -> None:
    """Serve until cancelled; print the base URL once listening."""
    runner = web.AppRunner(app())
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    bound = server.sockets[0].getsockname()[1] if server is not None else port  # type: ignore[attr-defined]
    print(f"demo model (scripted stand-in, not an LLM) at http://{host}:{bound}/v1", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    """Command line."""
    ap = argparse.ArgumentParser(description="Scripted OpenAI-compatible stand-in for the demo.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
