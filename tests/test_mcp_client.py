"""The MCP client (effects.mcp) against real servers, and against servers that misbehave.

No Kubernetes. Real servers (tests/mcpservers.py): server-everything (npm), mcp-server-time
behind mcp-proxy (PyPI), and our ledger server, which records every effect with the
idempotency key it received. Misbehaving ones are raw HTTP servers (tests/rawhttp.py) that
speak just enough MCP to get a session going, then answer a call with whatever a test wants.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from localcluster import free_port

from agenttask_operator.effects import mcp
from agenttask_operator.effects.llm import StepFailed
from agenttask_operator.effects.tools import ToolResult
from agenttask_operator.models.toolserver import Discovery
from mcpservers import LedgerServer, ServerProcess
from rawhttp import Raw, RawServer, http

# What the pinned servers negotiate with the pinned SDK (mcp 2.3.x): checked, not assumed.
EVERYTHING_PROTOCOL = "2025-11-25"  # server-everything 2026.8.31 (TypeScript SDK 1.x)
TIME_PROTOCOL = "2025-11-25"  # mcp-proxy 0.13.0 (Python SDK 1.30) + mcp-server-time 2026.10.19
LEDGER_PROTOCOL = "2026-07-28"  # ours, on the Python SDK 2.3 (server/discover)

SECRET = "s3cr3t-token-never-shown-7d2e"


# --- real servers -----------------------------------------------------------------------------


async def test_server_everything_lists_its_tools(everything: ServerProcess) -> None:
    found = await mcp.list_tools(everything.url, {}, 30)
    assert found.protocol_version == EVERYTHING_PROTOCOL
    assert found.server_name == "mcp-servers/everything"
    tools = {t.name: t for t in found.tools}
    assert {"echo", "get-sum"} <= set(tools)
    echo = tools["echo"]
    assert echo.input_schema["properties"]["message"]["type"] == "string"
    assert (echo.read_only_hint, echo.destructive_hint, echo.idempotent_hint) == (
        True,
        False,
        True,
    )
    assert echo.description


async def test_server_everything_answers_calls(everything: ServerProcess) -> None:
    echo = await mcp.call_tool(everything.url, {}, 30, "echo", {"message": "hi"}, "uid:call-1")
    assert echo == ToolResult("Echo: hi")
    total = await mcp.call_tool(everything.url, {}, 30, "get-sum", {"a": 2, "b": 40}, "uid:c2")
    assert total.content == "The sum of 2 and 40 is 42."
    assert not total.is_error


async def test_server_everything_reports_an_unknown_tool_to_the_model(
    everything: ServerProcess,
) -> None:
    result = await mcp.call_tool(everything.url, {}, 30, "no-such-tool", {}, "uid:c3")
    assert result.is_error
    assert "no-such-tool" in result.content


async def test_a_stdio_server_behind_mcp_proxy(time_server: ServerProcess) -> None:
    found = await mcp.list_tools(time_server.url, {}, 30)
    assert found.protocol_version == TIME_PROTOCOL
    assert found.server_name == "mcp-time"
    assert {t.name for t in found.tools} >= {"get_current_time", "convert_time"}
    now = await mcp.call_tool(
        time_server.url, {}, 30, "get_current_time", {"timezone": "UTC"}, "uid:t1"
    )
    assert not now.is_error
    assert json.loads(now.content)["timezone"] == "UTC"
    bad = await mcp.call_tool(
        time_server.url, {}, 30, "get_current_time", {"timezone": "Mars/Olympus"}, "uid:t2"
    )
    assert bad.is_error
    assert "Mars/Olympus" in bad.content


async def test_the_idempotency_key_reaches_the_tool_in_meta_and_header(
    ledger: LedgerServer,
) -> None:
    headers = {"Authorization": f"Bearer {SECRET}"}
    found = await mcp.list_tools(ledger.url, headers, 30)
    assert found.protocol_version == LEDGER_PROTOCOL
    tools = {t.name: t for t in found.tools}
    assert tools["apply_change"].destructive_hint is True
    assert tools["apply_change"].idempotent_hint is False
    assert tools["read_ledger"].read_only_hint is True

    result = await mcp.call_tool(ledger.url, headers, 30, "apply_change", {"change": "a"}, "u:k1")
    assert result == ToolResult("applied 'a' (key u:k1)")
    again = await mcp.call_tool(ledger.url, headers, 30, "apply_change", {"change": "a"}, "u:k1")
    assert not again.is_error
    entries = ledger.entries()
    assert [(e["tool"], e["metaKey"], e["headerKey"]) for e in entries] == [
        ("apply_change", "u:k1", "u:k1"),
        ("apply_change", "u:k1", "u:k1"),  # not idempotent: the server applied it twice
    ]
    sent = ledger.request_log()
    assert sent
    assert all(r["headers"].get("authorization") == f"Bearer {SECRET}" for r in sent)
    calls = [r for r in sent if r["headers"].get("mcp-method") == "tools/call"]
    assert [r["headers"]["idempotency-key"] for r in calls] == ["u:k1", "u:k1"]


async def test_an_is_error_result_goes_to_the_model(ledger: LedgerServer) -> None:
    refused = await mcp.call_tool(ledger.url, {}, 30, "refuse_change", {"reason": "x"}, "u:k2")
    assert refused.is_error
    unknown = await mcp.call_tool(ledger.url, {}, 30, "no_such_tool", {}, "u:k3")
    assert unknown.is_error
    assert "no_such_tool" in unknown.content
    assert ledger.entries() == []


async def test_the_timeout_bounds_the_whole_call(ledger: LedgerServer) -> None:
    started = time.monotonic()
    with pytest.raises(StepFailed) as failed:
        await mcp.call_tool(
            ledger.url, {}, 1, "slow_change", {"change": "b", "seconds": 3}, "u:slow"
        )
    assert time.monotonic() - started < 2.5
    failure = failed.value.failure
    assert (failure.transient, failure.reason) == (True, "ToolServerUnavailable")
    assert "within 1s" in failure.message
    assert [c["metaKey"] for c in ledger.started_calls()] == ["u:slow"]
    assert ledger.entries() == []  # the client gave up; the effect is still to come …
    await asyncio.sleep(3)  # … and happens: the outcome was unknown to the client, not undone
    assert [e["metaKey"] for e in ledger.entries()] == ["u:slow"]


async def test_the_ledger_announces_a_new_tool_to_a_listener(ledger: LedgerServer) -> None:
    headers = {"Authorization": f"Bearer {SECRET}"}
    changes: list[float] = []
    protocols: list[str | None] = []
    listening, changed = asyncio.Event(), asyncio.Event()

    def change() -> None:
        changes.append(1)
        changed.set()

    def acknowledged(protocol: str | None) -> None:
        protocols.append(protocol)
        listening.set()

    watch = asyncio.create_task(
        mcp.watch_tool_changes(ledger.url, headers, 2, change, acknowledged)
    )
    try:
        await asyncio.wait_for(listening.wait(), 10)
        assert protocols == [LEDGER_PROTOCOL]
        await asyncio.sleep(3)  # past the timeout: it bounds the start, not the stream
        assert not watch.done()
        added = await mcp.call_tool(ledger.url, {}, 30, "add_tool", {"name": "fresh"}, "u:a")
        assert added == ToolResult("added 'fresh'")
        await asyncio.wait_for(changed.wait(), 5)
        assert changes == [1]
        found = await mcp.list_tools(ledger.url, {}, 30)
        assert "fresh" in {t.name for t in found.tools}
    finally:
        watch.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watch
    listens = [r for r in ledger.request_log() if r["headers"].get("mcp-method")
               == "subscriptions/listen"]  # fmt: skip
    assert listens
    assert all(r["headers"].get("authorization") == f"Bearer {SECRET}" for r in listens)


async def test_a_server_of_an_older_protocol_cannot_announce_changes(
    everything: ServerProcess,
) -> None:
    with pytest.raises(mcp.ChangesNotSupported) as refused:
        await mcp.watch_tool_changes(everything.url, {}, 30, lambda: None)
    assert refused.value.protocol_version == EVERYTHING_PROTOCOL


async def test_a_listener_that_cannot_connect_fails_transiently() -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"
    with pytest.raises(StepFailed) as failed:
        await mcp.watch_tool_changes(url, {"X-Key": SECRET}, 5, lambda: None)
    failure = failed.value.failure
    assert (failure.transient, failure.reason) == (True, "ToolServerUnavailable")
    assert SECRET not in failure.message


async def run(operation: str, url: str) -> object:
    """``list_tools`` or ``call_tool`` (of a tool ``t``) against ``url``."""
    if operation == "list":
        return await mcp.list_tools(url, {}, 5)
    return await mcp.call_tool(url, {}, 5, "t", {}, "u:k")


@pytest.mark.parametrize("operation", ["list", "call"])
async def test_an_unreachable_server_is_a_transient_failure(operation: str) -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"
    with pytest.raises(StepFailed) as failed:
        await run(operation, url)
    failure = failed.value.failure
    assert (failure.transient, failure.reason) == (True, "ToolServerUnavailable")
    assert "connection error" in failure.message
    assert url in failure.message


# --- misbehaving servers ----------------------------------------------------------------------

CallAnswer = Callable[[dict[str, Any]], Raw]


def _rpc(request: dict[str, Any], result: dict[str, Any]) -> Raw:
    body = json.dumps({"jsonrpc": "2.0", "id": request.get("id"), "result": result}).encode()
    return Raw([http(200, body)])


def _rpc_error(request: dict[str, Any], code: int, message: str, status: int = 200) -> Raw:
    error = {"code": code, "message": message}
    body = json.dumps({"jsonrpc": "2.0", "id": request.get("id"), "error": error}).encode()
    return Raw([http(status, body)])


TOOL = {"name": "t", "inputSchema": {"type": "object"}}


def fake_mcp(on_call: CallAnswer, pages: dict[str | None, Any] | None = None) -> CallAnswer:
    """A legacy (2025-11-25) MCP server in a few lines; ``tools/call`` answered by ``on_call``."""
    listing = pages or {None: {"tools": [TOOL]}}

    def handle(request: dict[str, Any]) -> Raw:
        method = request.get("method")
        if method == "server/discover":
            return _rpc_error(request, -32601, "Method not found", status=400)
        if method == "initialize":
            info = {"name": "raw", "version": "0"}
            return _rpc(
                request,
                {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {"tools": {}},
                    "serverInfo": info,
                },
            )
        if "id" not in request:  # a notification
            return Raw([http(202, b"", None)])
        if method == "tools/list":
            cursor = (request.get("params") or {}).get("cursor")
            return _rpc(request, listing[cursor])
        return on_call(request)

    return handle


@pytest.fixture
def raw() -> Iterator[RawServer]:
    server = RawServer().start()
    yield server
    server.stop()


def url_of(server: RawServer) -> str:
    return f"http://127.0.0.1:{server.port}/mcp"


HTML = b"<html><body><h1>502 Bad Gateway</h1></body></html>"

# name: (the answer to everything, transient?, reason, a piece of the message)
HANDSHAKE_CASES: dict[str, tuple[Raw, bool, str, str]] = {
    "html page": (Raw([http(200, HTML, "text/html")]), True, "Unavailable", "text/html"),
    "json that is not json-rpc": (Raw([http(200, b'{"hello": 1}')]), True, "Unavailable", ""),
    "empty 200": (Raw([http(200, b"", None)]), True, "Unavailable", ""),
    "cut short": (Raw([http(200, b'{"jsonrpc"', length=500)]), True, "Unavailable", ""),
    "closed without answer": (Raw([]), True, "Unavailable", "connection error"),
    "garbage status line": (Raw([b"HELLO\r\n\r\n"]), True, "Unavailable", "connection error"),
    "500": (Raw([http(500, HTML, "text/html")]), True, "Unavailable", "HTTP 500: <html>"),
    "502 json": (Raw([http(502, b'{"error": "x"}')]), True, "Unavailable", "HTTP 502"),
    "408": (Raw([http(408, b"slow", "text/plain")]), True, "Unavailable", "HTTP 408"),
    "429": (
        Raw([http(429, b"", "text/plain", headers={"Retry-After": "7"})]),
        True,
        "Unavailable",
        "HTTP 429",
    ),
    "401": (Raw([http(401, b"bad token", "text/plain")]), False, "Refused", "HTTP 401: bad token"),
    "403": (Raw([http(403, b"{}")]), False, "Refused", "HTTP 403"),
    "403 gateway json": (
        Raw([http(403, b'{"error": {"message": "forbidden"}}')]),
        False,
        "Refused",
        "HTTP 403: {",
    ),
    "404": (Raw([http(404, b"", "text/plain")]), False, "Refused", "HTTP 404"),
    "redirect": (
        Raw([http(302, b"", None, headers={"Location": "http://127.0.0.1:9/mcp"})]),
        False,
        "Refused",
        "redirects are not followed",
    ),
}


@pytest.mark.parametrize("case", sorted(HANDSHAKE_CASES))
@pytest.mark.parametrize("operation", ["list", "call"])
async def test_a_server_that_answers_garbage_fails_the_step(
    raw: RawServer, case: str, operation: str
) -> None:
    answer, transient, reason, says = HANDSHAKE_CASES[case]
    raw.handler = lambda req: answer
    with pytest.raises(StepFailed) as failed:  # and never any other exception
        await run(operation, url_of(raw))
    failure = failed.value.failure
    assert failure.transient is transient, failure
    assert failure.reason == f"ToolServer{reason}"
    assert says in failure.message, failure.message
    assert len(failure.message) < 1200
    if case == "429":
        assert failure.retry_after == 7.0


async def test_a_redirect_is_never_followed(raw: RawServer) -> None:
    target = RawServer().start()
    try:
        location = f"http://127.0.0.1:{target.port}/mcp"
        raw.handler = lambda req: Raw([http(307, b"", None, headers={"Location": location})])
        with pytest.raises(StepFailed):
            await mcp.call_tool(url_of(raw), {"Authorization": "Bearer x"}, 5, "t", {}, "u:k")
        same_origin = f"http://127.0.0.1:{raw.port}/elsewhere"
        raw.handler = lambda req: Raw([http(308, b"", None, headers={"Location": same_origin})])
        with pytest.raises(StepFailed):
            await mcp.list_tools(url_of(raw), {}, 5)
        assert target.requests == []
        assert all(r.get("method") in ("server/discover", "initialize") for r in raw.requests)
    finally:
        target.stop()


# name: (the answer to tools/call, None for a tool error else (transient, reason), a piece)
CALL_CASES: dict[str, tuple[CallAnswer, tuple[bool, str] | None, str]] = {
    "invalid params": (lambda r: _rpc_error(r, -32602, "Unknown tool: t"), None, "Unknown tool"),
    "invalid params at 400": (
        lambda r: _rpc_error(r, -32602, "bad arguments", status=400),
        None,
        "bad arguments",
    ),
    "application error": (lambda r: _rpc_error(r, -32099, "quota"), None, "quota"),
    "internal error": (
        lambda r: _rpc_error(r, -32603, "boom"),
        (True, "ToolServerUnavailable"),
        "boom",
    ),
    "json-rpc error at 503": (
        lambda r: _rpc_error(r, -32000, "overloaded", status=503),
        (True, "ToolServerUnavailable"),
        "HTTP 503",
    ),
    "html": (
        lambda r: Raw([http(200, HTML, "text/html")]),
        (True, "ToolServerUnavailable"),
        "text/html",
    ),
    "not a result": (
        lambda r: _rpc(r, {"content": "not a list"}),
        (True, "ToolServerUnavailable"),
        "not valid MCP",
    ),
    "401": (
        lambda r: Raw([http(401, b"expired", "text/plain")]),
        (False, "ToolServerRefused"),
        "HTTP 401",
    ),
    "connection closed": (lambda r: Raw([]), (True, "ToolServerUnavailable"), ""),
}


@pytest.mark.parametrize("case", sorted(CALL_CASES))
async def test_what_a_call_can_get_back(raw: RawServer, case: str) -> None:
    answer, failure_kind, says = CALL_CASES[case]
    raw.handler = fake_mcp(answer)
    if failure_kind is None:
        result = await mcp.call_tool(url_of(raw), {}, 5, "t", {}, "u:k")
        assert result.is_error
        assert result.content.startswith("error: MCP error")
        assert says in result.content
        return
    with pytest.raises(StepFailed) as failed:
        await mcp.call_tool(url_of(raw), {}, 5, "t", {}, "u:k")
    failure = failed.value.failure
    assert (failure.transient, failure.reason) == failure_kind
    assert says in failure.message, failure.message


async def test_results_are_rendered_for_the_model(raw: RawServer) -> None:
    blocks = [
        {"type": "text", "text": "first"},
        {"type": "image", "data": "aGk=", "mimeType": "image/png"},
        {"type": "text", "text": "last"},
    ]
    raw.handler = fake_mcp(lambda r: _rpc(r, {"content": blocks, "isError": False}))
    result = await mcp.call_tool(url_of(raw), {}, 5, "t", {"x": 1}, "u:k")
    assert result.content == 'first\n{"type":"image","data":"aGk=","mimeType":"image/png"}\nlast'
    call = next(r for r in raw.requests if r.get("method") == "tools/call")
    assert call["params"]["_meta"] == {"agenttask.dev/idempotency-key": "u:k"}
    assert call["params"]["arguments"] == {"x": 1}
    raw.handler = fake_mcp(lambda r: _rpc(r, {"content": [], "structuredContent": {"n": 1}}))
    assert (await mcp.call_tool(url_of(raw), {}, 5, "t", {}, "u:k")).content == '{"n":1}'


async def test_every_page_of_the_tool_list_is_read(raw: RawServer) -> None:
    pages = {
        None: {"tools": [TOOL], "nextCursor": "p2"},
        "p2": {"tools": [TOOL | {"name": "u"}], "nextCursor": "p3"},
        "p3": {"tools": [TOOL | {"name": "v"}], "nextCursor": "p3"},  # a cursor that loops
    }
    raw.handler = fake_mcp(lambda r: Raw([]), pages)
    found = await mcp.list_tools(url_of(raw), {}, 5)
    assert found == Discovery(
        protocol_version="2025-11-25",
        server_name="raw",
        server_version="0",
        tools=found.tools,
    )
    assert [t.name for t in found.tools] == ["t", "u", "v"]  # p3 was asked for once
    assert found.tools[0].destructive_hint is None  # absent hints stay absent here


async def test_an_answer_that_trickles_in_is_cut_by_the_timeout(raw: RawServer) -> None:
    body = b'{"jsonrpc": "2.0", "id": 1, "result": {"content": []}}'
    head = http(200, body)[: -len(body)]
    raw.handler = fake_mcp(lambda r: Raw([head, *(bytes([b]) for b in body)], pause=0.2))
    started = time.monotonic()
    with pytest.raises(StepFailed) as failed:
        await mcp.call_tool(url_of(raw), {}, 2, "t", {}, "u:k")
    assert time.monotonic() - started < 4
    assert failed.value.failure.transient


async def test_header_values_never_come_back_in_a_message(raw: RawServer) -> None:
    raw.handler = lambda req: Raw([http(401, f"token {SECRET} is expired".encode(), "text/plain")])
    with pytest.raises(StepFailed) as failed:
        await mcp.list_tools(url_of(raw), {"Authorization": f"Bearer {SECRET}"}, 5)
    message = failed.value.failure.message
    assert SECRET not in message
    assert "[redacted]" in message


async def test_a_cancelled_call_is_cancelled(ledger: LedgerServer) -> None:
    call = asyncio.create_task(
        mcp.call_tool(ledger.url, {}, 30, "slow_change", {"change": "c", "seconds": 5}, "u:c")
    )
    await asyncio.sleep(1.5)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
