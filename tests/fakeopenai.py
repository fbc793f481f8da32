"""A scriptable OpenAI-compatible server and HTTP-tool server on 127.0.0.1, for tests.

Runs aiohttp in a background thread (its own event loop), so that it serves the operator
subprocess whatever the test is doing. Records every request. Not a mock of the openai client:
the operator's real SDK talks HTTP to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Reply:
    """An HTTP answer: status, JSON or text body, headers, and a delay before answering;
    with ``until``, the answer waits (at most ``delay`` seconds, if set) until it returns True.
    """

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    until: Callable[[], bool] | None = None


HANG = Reply(status=0, delay=3600.0)  # never answers (within any test's lifetime)


def completion(
    content: str | None = None,
    tool_calls: list[tuple[str, str, dict[str, Any] | str]] | None = None,
    finish_reason: str | None = None,
    prompt_tokens: int = 10,
    completion_tokens: int = 5,
) -> Reply:
    """A chat-completion response: text, or tool calls ``(id, name, arguments)``."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = [
            {
                "id": cid,
                "type": "function",
                "function": {
                    "name": name,
                    "arguments": args if isinstance(args, str) else json.dumps(args),
                },
            }
            for cid, name, args in tool_calls
        ]
    reason = finish_reason or ("tool_calls" if tool_calls else "stop")
    return Reply(
        body={
            "id": f"chatcmpl-{time.monotonic_ns()}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": "fake-model",
            "choices": [{"index": 0, "message": message, "finish_reason": reason}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
    )


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    """An OpenAI-style error response."""
    return Reply(
        status=status,
        body={"error": {"message": message, "type": "error", "code": None}},
        headers=headers or {},
    )


@dataclass
class ToolCall:
    """One delivery of a tool call to an HTTP tool."""

    tool: str
    idempotency_key: str | None
    body: dict[str, Any]
    time: float
    headers: dict[str, str] = field(default_factory=dict)  # every header, names lower-case


LlmHandler = Callable[[dict[str, Any]], Reply]
ToolHandler = Callable[[ToolCall, int], Reply]  # (delivery, how many deliveries of this call id)


class FakeServer:
    """Serves ``/v1/chat/completions`` and ``/tools/<name>``; both scriptable per test."""

    def __init__(self) -> None:
        """Create; call :meth:`start`."""
        self.llm: LlmHandler = lambda req: error(500, "no script")
        self.tools: dict[str, ToolHandler] = {}
        self.requests: list[dict[str, Any]] = []
        self.auth_headers: list[str | None] = []
        self.headers: list[dict[str, str]] = []  # every header of each chat request
        self.request_times: list[float] = []  # time.time() of each chat request
        self.deliveries: list[ToolCall] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._closing: asyncio.Event | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (``.../v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def tool_url(self, name: str) -> str:
        """URL of HTTP tool ``name``."""
        return f"http://127.0.0.1:{self.port}/tools/{name}"

    async def _reply(self, reply: Reply) -> web.StreamResponse:
        if reply.until is not None:
            assert self._closing is not None
            give_up = time.monotonic() + (reply.delay or 3600.0)
            while not reply.until() and not self._closing.is_set():
                if time.monotonic() > give_up:
                    break
                await asyncio.sleep(0.02)
        elif reply.delay:
            assert self._closing is not None
            with contextlib.suppress(TimeoutError):  # a delay ends early when the server stops
                await asyncio.wait_for(self._closing.wait(), reply.delay)
        if isinstance(reply.body, str):
            return web.Response(status=reply.status, text=reply.body, headers=reply.headers)
        return web.json_response(reply.body, status=reply.status, headers=reply.headers)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        with self._lock:
            self.requests.append(body)
            self.auth_headers.append(request.headers.get("Authorization"))
            self.headers.append({k.lower(): v for k, v in request.headers.items()})
            self.request_times.append(time.time())
        return await self._reply(self.llm(body))

    async def _tool(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        call = ToolCall(
            name,
            request.headers.get("Idempotency-Key"),
            await request.json(),
            time.monotonic(),
            {k.lower(): v for k, v in request.headers.items()},
        )
        with self._lock:
            self.deliveries.append(call)
            n = sum(
                1
                for d in self.deliveries
                if d.body.get("toolCallId") == call.body.get("toolCallId")
            )
        handler = self.tools.get(name)
        if handler is None:
            return await self._reply(Reply(404, {"error": f"no tool {name}"}))
        return await self._reply(handler(call, n))

    def start(self) -> FakeServer:
        """Start serving on a free port."""
        self._thread.start()

        async def up() -> None:
            self._closing = asyncio.Event()
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_post("/v1/chat/completions", self._chat)
            app.router.add_post("/tools/{name}", self._tool)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            server = site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

        asyncio.run_coroutine_threadsafe(up(), self._loop).result(10)
        return self

    def stop(self) -> None:
        """Stop serving."""

        async def down() -> None:
            assert self._closing is not None and self._runner is not None
            self._closing.set()
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(down(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def keys_by_call(deliveries: list[ToolCall]) -> dict[str, set[str | None]]:
    """The idempotency keys each tool call (by ``toolCallId``) was delivered under."""
    keys: dict[str, set[str | None]] = {}
    for d in deliveries:
        keys.setdefault(d.body["toolCallId"], set()).add(d.idempotency_key)
    return keys


def tool_messages(request: dict[str, Any]) -> list[dict[str, Any]]:
    """The tool messages of a chat request."""
    return [m for m in request["messages"] if m.get("role") == "tool"]
