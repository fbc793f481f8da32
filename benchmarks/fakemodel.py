"""A fast, deterministic fake OpenAI-compatible model and HTTP tool, for the benchmark.

Runs as its own process (``python benchmarks/fakemodel.py --port-file F``) so that its CPU is
neither the operator's nor the harness's. Everything a task should do is written in the task's
input, so the server keeps no per-task script and answers the same after an operator restart:

    BENCH {"id": "<namespace>/<name>", "iterations": K, "calls": C, "size": S,
           "toolDelay": D, "probe": false}

* chat request number i (i = 1 + the assistant messages in the request) with i <= K answers
  with C tool calls of the HTTP tool ``work`` (ids ``call_<i>_<j>``); request K + 1 answers
  with a final text. A task therefore takes K * (C + 1) + 1 steps.
* ``POST /tools/work`` answers after ``toolDelay`` seconds with a JSON body of about ``size``
  bytes.
* ``probe``: every request of the task first reads etcd's counter of bytes put (from
  ``--etcd-url``), so that the harness can attribute etcd writes to single steps.

Every request is recorded as ``[time.monotonic(), id, kind, iteration]`` (kind ``llm`` or
``tool``); the harness reads them with ``GET /bench/events?since=N`` (CLOCK_MONOTONIC is the
same clock in every process of the machine). Probes: ``GET /bench/probes?since=N``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web

MARKER = "BENCH "
TOOL = "work"
# Counters of the bytes etcd was asked to put, by etcd version (the first one found is used).
PUT_SIZE_METRICS = (
    "etcd_mvcc_total_put_size_in_bytes",
    "etcd_debugging_mvcc_total_put_size_in_bytes",
    "etcd_mvcc_put_size_in_bytes",
)


def task_input(params: dict[str, Any]) -> str:
    """The ``spec.input`` that makes this server run a task the way ``params`` say."""
    return MARKER + json.dumps(params, separators=(",", ":"))


def params_of(messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The benchmark parameters in a chat request's user message, if any."""
    for m in messages:
        content = m.get("content")
        if m.get("role") == "user" and isinstance(content, str) and content.startswith(MARKER):
            try:
                found = json.loads(content[len(MARKER) :])
            except ValueError:
                return None
            return found if isinstance(found, dict) else None
    return None


def metric_value(text: str, names: tuple[str, ...] = PUT_SIZE_METRICS) -> tuple[str, float]:
    """The first of ``names`` found in a Prometheus text exposition, with its value."""
    for name in names:
        m = re.search(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$", text, re.MULTILINE)
        if m:
            return name, float(m.group(1))
    raise LookupError(f"none of {', '.join(names)} in the metrics")


def completion(message: dict[str, Any], finish_reason: str) -> dict[str, Any]:
    """A chat-completion body."""
    return {
        "id": f"chatcmpl-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "bench-model",
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25},
    }


class FakeModel:
    """The aiohttp application and what it recorded."""

    def __init__(self, etcd_url: str | None = None) -> None:
        """Create; :meth:`app` builds the aiohttp application."""
        self.etcd_url = etcd_url
        self.events: list[tuple[float, str, str, int]] = []
        self.probes: list[tuple[float, str, str, int, float, int]] = []
        self.session: ClientSession | None = None

    def app(self) -> web.Application:
        """The routes: the model, the tool, and the harness's read-outs."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post(f"/tools/{TOOL}", self.tool)
        app.router.add_get("/bench/events", self.read_events)
        app.router.add_get("/bench/probes", self.read_probes)
        app.router.add_get("/healthz", self.healthz)
        app.on_cleanup.append(self._close)
        return app

    async def _close(self, _: web.Application) -> None:
        if self.session is not None:
            await self.session.close()

    async def _etcd_put_bytes(self) -> float:
        if self.etcd_url is None:
            return float("nan")
        if self.session is None:
            self.session = ClientSession(timeout=ClientTimeout(total=10))
        async with self.session.get(self.etcd_url + "/metrics") as resp:
            return metric_value(await resp.text())[1]

    async def chat(self, request: web.Request) -> web.Response:
        """A chat completion: tool calls until the task's last iteration, then an answer."""
        t = time.monotonic()
        body = await request.json()
        messages = body.get("messages") or []
        params = params_of(messages) or {}
        key = str(params.get("id", "?"))
        iteration = 1 + sum(1 for m in messages if m.get("role") == "assistant")
        self.events.append((t, key, "llm", iteration))
        probe = bool(params.get("probe"))
        before = await self._etcd_put_bytes() if probe else 0.0
        if iteration <= int(params.get("iterations", 0)):
            size, delay = int(params.get("size", 0)), float(params.get("toolDelay", 0))
            calls = [
                {
                    "id": f"call_{iteration}_{j}",
                    "type": "function",
                    "function": {
                        "name": TOOL,
                        "arguments": json.dumps(
                            {"size": size, "delay": delay, "step": iteration, "probe": probe}
                        ),
                    },
                }
                for j in range(int(params.get("calls", 1)))
            ]
            reply = completion(
                {"role": "assistant", "content": None, "tool_calls": calls}, "tool_calls"
            )
        else:
            reply = completion(
                {"role": "assistant", "content": f"done after {iteration - 1} iterations"}, "stop"
            )
        if probe:
            own = len(json.dumps(reply["choices"][0]["message"]))
            self.probes.append((t, key, "llm", iteration, before, own))
        return web.Response(text=json.dumps(reply), content_type="application/json")

    async def tool(self, request: web.Request) -> web.Response:
        """The HTTP tool: waits ``delay`` seconds, then answers about ``size`` bytes."""
        t = time.monotonic()
        body = await request.json()
        task = body.get("task") or {}
        key = f"{task.get('namespace')}/{task.get('name')}"
        args = body.get("arguments") or {}
        iteration = int(args.get("step", 0))
        self.events.append((t, key, "tool", iteration))
        probe = bool(args.get("probe"))
        before = await self._etcd_put_bytes() if probe else 0.0
        delay = float(args.get("delay", 0))
        if delay > 0:
            await asyncio.sleep(delay)
        size = int(args.get("size", 0))
        text = json.dumps({"ok": True, "step": iteration, "data": "x" * max(size - 40, 0)})
        if probe:
            self.probes.append((t, key, "tool", iteration, before, len(text)))
        return web.Response(text=text, content_type="application/json")

    async def read_events(self, request: web.Request) -> web.Response:
        """Events from index ``since`` on."""
        since = int(request.query.get("since", "0"))
        events = self.events[since:]
        return web.json_response({"events": events, "next": since + len(events)})

    async def read_probes(self, request: web.Request) -> web.Response:
        """Probes from index ``since`` on."""
        since = int(request.query.get("since", "0"))
        probes = self.probes[since:]
        return web.json_response({"probes": probes, "next": since + len(probes)})

    async def healthz(self, _: web.Request) -> web.Response:
        """Liveness."""
        return web.Response(text="ok")


async def serve(port_file: Path, etcd_url: str | None) -> None:
    """Serve on a free port of 127.0.0.1 (written to ``port_file``) until SIGTERM/SIGINT."""
    fake = FakeModel(etcd_url)
    runner = web.AppRunner(fake.app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(str(port))
    os.replace(tmp, port_file)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    await done.wait()
    await runner.cleanup()


def main() -> None:
    """Command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--port-file", type=Path, required=True, help="where to write the port")
    ap.add_argument("--etcd-url", default=None, help="etcd's client URL, for probes")
    args = ap.parse_args()
    asyncio.run(serve(args.port_file, args.etcd_url))


if __name__ == "__main__":
    main()
