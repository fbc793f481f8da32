"""A raw HTTP/1.1 server on 127.0.0.1 that answers each request with exactly the bytes it is told.

For what well-behaved servers never send and real ones sometimes do: HTML pages with status 200,
bodies cut short before their Content-Length, answers that trickle in, garbage status lines, a
connection closed without an answer. Runs in a background thread with its own event loop, so
that it serves an operator subprocess whatever the test does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Raw:
    """One answer: ``chunks`` are written with ``pause`` seconds between them, then the
    connection is closed (HTTP/1.1 with ``Connection: close``).
    """

    chunks: list[bytes]
    pause: float = 0.0


def http(
    status: int,
    body: bytes,
    content_type: str | None = "application/json",
    *,
    headers: dict[str, str] | None = None,
    length: int | None = None,
) -> bytes:
    """A whole HTTP response; ``length`` overrides Content-Length (to announce more than sent)."""
    lines = [f"HTTP/1.1 {status} X"]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body) if length is None else length}")
    lines.append("Connection: close")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def completion_body(message: dict[str, Any], **extra: Any) -> bytes:
    """A well-formed chat completion around ``message``."""
    body = {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    } | extra
    return json.dumps(body).encode()


Handler = Callable[[dict[str, Any]], Raw]


@dataclass
class RawServer:
    """Serves ``POST /v1/chat/completions`` with ``handler(request JSON)``'s bytes."""

    handler: Handler = field(default=lambda req: Raw([http(500, b"{}")]))
    requests: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        """Prepare the thread and loop; call :meth:`start`."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (``.../v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.decode("latin-1").split("\r\n"):
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            body = await reader.readexactly(length)
            request = json.loads(body)
            with self._lock:
                self.requests.append(request)
            raw = self.handler(request)
            for i, chunk in enumerate(raw.chunks):
                if i and raw.pause:
                    await asyncio.sleep(raw.pause)
                writer.write(chunk)
                await writer.drain()
        with contextlib.suppress(Exception):
            writer.close()
            await writer.wait_closed()

    def start(self) -> RawServer:
        """Start serving on a free port."""
        self._thread.start()

        async def up() -> None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]

        asyncio.run_coroutine_threadsafe(up(), self._loop).result(10)
        return self

    def stop(self) -> None:
        """Stop serving."""

        async def down() -> None:
            assert self._server is not None
            self._server.close()

        asyncio.run_coroutine_threadsafe(down(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
