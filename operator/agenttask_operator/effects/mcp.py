"""MCP tool servers over streamable HTTP: list their tools, call one. The protocol is the SDK's.

Every operation opens one short-lived session with the official ``mcp`` SDK (``mcp.Client`` over
``streamable_http_client``; protocol version negotiated by the SDK: ``server/discover`` for
2026-era servers, the ``initialize`` handshake for older ones), does its work, and closes it.

The contract:

- :func:`list_tools` returns a :class:`~agenttask_operator.models.toolserver.Discovery`: the
  negotiated protocol version, the server's name and version, and every tool (all pages of
  ``tools/list``) with its description, input schema and annotations (hints as given, ``None``
  where absent — MCP's defaults are applied by ``core.toolserver``).
- :func:`call_tool` returns a :class:`~agenttask_operator.effects.tools.ToolResult`. The
  idempotency key travels in the request's ``_meta`` as ``"agenttask.dev/idempotency-key"`` and
  as the ``Idempotency-Key`` HTTP header. Text content is joined with newlines, any other
  content block is rendered as compact JSON (structured content alone, likewise). A result with
  ``isError: true``, a server that asks for input (elicitation), and a JSON-RPC error answer
  (an unknown tool, invalid arguments …) become ``ToolResult(..., is_error=True)``: the model
  reads them and may correct itself.
- Everything else raises :class:`~agenttask_operator.effects.llm.StepFailed`, never another
  exception (``CancelledError`` excepted):

  - transient, reason ``ToolServerUnavailable``: connection errors, timeouts, HTTP 408, 429
    and 5xx (``Retry-After`` honoured), a JSON-RPC internal or parse error, a stream cut
    short, an answer that is not MCP (an HTML page from a proxy, JSON that is not JSON-RPC),
    and any unexpected exception of the SDK (named with its type and message);
  - permanent, reason ``ToolServerRefused``: any other HTTP 4xx without a JSON-RPC error body
    (401, 403, 404 …), a redirect (never followed: the URL the allow-list admitted is the only
    one used, and headers never travel to a second host), a server that supports no protocol
    version of ours.

- :func:`watch_tool_changes` keeps one session open on a ``subscriptions/listen`` stream
  (protocol 2026-07-28) and calls ``on_change()`` for each ``tools/list_changed`` event. It
  raises :class:`ChangesNotSupported` when the server cannot announce tool changes (an older
  protocol version, no such method, or the filter not honoured), returns when the server ends
  the stream gracefully, and raises ``StepFailed`` (as above) when it is lost.
- ``timeout`` bounds the whole operation (connect, negotiation, every page, the call) with
  ``asyncio.timeout``, and each HTTP request too (on the ``httpx2.AsyncClient``).
- Header values (keys from Secrets) are sent and never returned: they are scrubbed from every
  message this module produces, and nothing here logs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ListenNotSupportedError, ToolsListChanged
from mcp.shared.exceptions import MCPError
from pydantic import TypeAdapter, ValidationError

from agenttask_operator.core.errors import Failure, is_transient_status
from agenttask_operator.core.urls import redact
from agenttask_operator.effects import tracing
from agenttask_operator.effects.llm import StepFailed, retry_after_seconds
from agenttask_operator.effects.tools import ToolResult
from agenttask_operator.models.toolserver import Discovery, McpTool

META_IDEMPOTENCY_KEY = "agenttask.dev/idempotency-key"
IDEMPOTENCY_HEADER = "Idempotency-Key"
UNAVAILABLE, REFUSED = "ToolServerUnavailable", "ToolServerRefused"
MAX_PAGES = 100  # of tools/list: a server whose cursor never ends cannot hang a refresh
# An open listen stream is silent but for the server's SSE keepalive (every 15 s in the SDK):
# a read waits this long (or ``timeout``, if longer) before the stream counts as lost.
LISTEN_READ_SECONDS = 60.0
SNIPPET = 200  # characters of an error body quoted in a message
MESSAGE_LIMIT = 300  # characters of an exception's text quoted in a message

# JSON-RPC errors that say the server (or the stream) failed, not that the request was wrong.
SERVER_FAULTS = frozenset(
    {types.PARSE_ERROR, types.INTERNAL_ERROR, types.CONNECTION_CLOSED, types.REQUEST_TIMEOUT}
)
_CALL_RESULT: TypeAdapter[types.CallToolResult | types.InputRequiredResult] = TypeAdapter(
    types.CallToolResult | types.InputRequiredResult
)


def _client_info() -> types.Implementation:
    try:
        version = metadata.version("agenttask-operator")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree
        version = "0"
    return types.Implementation(name="agenttask-operator", version=version)


@dataclass
class _Answer:
    """What the HTTP layer saw of the last POST: the SDK keeps none of it."""

    status: int
    content_type: str
    retry_after: float | None = None
    rpc_error: bool = False  # an error status that carried a JSON-RPC error body
    snippet: str = ""


class _Recorder:
    """httpx2 hooks that remember the answer to the last POST (None while it has none)."""

    def __init__(self) -> None:
        self.last: _Answer | None = None

    async def sent(self, request: httpx2.Request) -> None:
        """A new POST: what answered the one before says nothing about this one."""
        if request.method == "POST":
            self.last = None

    async def __call__(self, response: httpx2.Response) -> None:
        """Record the status, content type, Retry-After and error body of a POST's answer."""
        if response.request.method != "POST":
            return  # the optional GET stream and the closing DELETE say nothing about a call
        ctype = response.headers.get("content-type", "")
        answer = _Answer(response.status_code, ctype, retry_after_seconds(response.headers))
        if response.status_code >= 400:
            if ctype.lower().startswith("application/json"):
                body = await response.aread()  # the SDK reads it too, from this cache
                answer.rpc_error = _is_rpc_error(body)
                answer.snippet = body[:SNIPPET].decode(errors="replace")
            else:  # the SDK does not read such a body: a bounded look is free
                answer.snippet = await _head(response, SNIPPET)
        self.last = answer


def _is_rpc_error(body: bytes) -> bool:
    """A JSON-RPC error object (what the SDK passes on), not any JSON a gateway sends."""
    try:
        doc = json.loads(body)
    except ValueError:
        return False
    error = doc.get("error") if isinstance(doc, dict) else None
    return (
        isinstance(doc, dict)
        and doc.get("jsonrpc") == "2.0"
        and isinstance(error, dict)
        and isinstance(error.get("code"), int)
    )


async def _head(response: httpx2.Response, limit: int) -> str:
    buf = bytearray()
    try:
        async for chunk in response.aiter_bytes():
            buf += chunk
            if len(buf) >= limit:
                break
    except httpx2.HTTPError:
        pass
    return bytes(buf[:limit]).decode(errors="replace")


@asynccontextmanager
async def _session(
    url: str,
    headers: Mapping[str, str],
    seconds: float,
    recorder: _Recorder,
    read_seconds: float | None = None,
) -> AsyncIterator[Client]:
    """One MCP session: negotiated, then closed (DELETE) on exit.

    ``read_seconds`` (default ``seconds``) bounds the wait for each chunk of an answer.
    """
    async with (
        httpx2.AsyncClient(
            headers=dict(headers),
            timeout=httpx2.Timeout(seconds, read=read_seconds or seconds),
            follow_redirects=False,
            max_redirects=0,  # the SDK would follow same-origin redirects up to this many
            event_hooks={"request": [recorder.sent], "response": [recorder]},
        ) as http,
        Client(
            streamable_http_client(url, http_client=http),
            mode="auto",
            read_timeout_seconds=seconds,
            client_info=_client_info(),
            cache=None,
        ) as client,
    ):
        yield client


class _Guard:
    """Runs one operation under a deadline and turns whatever goes wrong into StepFailed."""

    def __init__(self, url: str, headers: Mapping[str, str], timeout: float) -> None:
        self.url, self.timeout = redact(url), timeout
        self.secrets = _secrets(headers)
        self.recorder = _Recorder()
        self.phase = "connect"
        self.deadline = asyncio.timeout(timeout)

    def outcome(self, exc: BaseException) -> StepFailed | ToolResult:
        """The StepFailed to raise, or (for a JSON-RPC error of a call) the model's answer.

        Raises CancelledError when the operation was cancelled from outside.
        """
        if self.deadline.expired():
            return self.step(Failure(f"no answer within {self.timeout:g}s", True, UNAVAILABLE))
        if _only_cancelled(exc):
            raise asyncio.CancelledError from exc
        verdict = classify(_leaf(exc), self.recorder.last, self.phase)
        if isinstance(verdict, str):
            return ToolResult(self.scrub(verdict), is_error=True)
        return self.step(verdict)

    def step(self, failure: Failure) -> StepFailed:
        """``failure`` as a StepFailed, its message naming the server, secrets scrubbed."""
        message = self.scrub(f"MCP server {self.url}: {failure.message}")
        return StepFailed(Failure(message, failure.transient, failure.reason, failure.retry_after))

    def scrub(self, text: str) -> str:
        """``text`` without any header value (or word of one) in it."""
        for secret in self.secrets:
            text = text.replace(secret, "[redacted]")
        return text


def _secrets(headers: Mapping[str, str]) -> list[str]:
    """Header values and their words, longest first: never to be quoted back."""
    found = {v for v in headers.values() if v} | {
        w for v in headers.values() for w in v.split() if len(w) >= 6
    }
    return sorted(found, key=len, reverse=True)


def _leaf(exc: BaseException) -> BaseException:
    """The first exception inside (nested) exception groups: the SDK's task groups wrap them."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _only_cancelled(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_cancelled(e) for e in exc.exceptions)
    return isinstance(exc, asyncio.CancelledError)


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"


def classify(exc: BaseException, answer: _Answer | None, phase: str) -> Failure | str:
    """A failure of the operation, or — for a JSON-RPC error answering a call — the text that
    goes back to the model as a tool error. ``phase`` is ``connect``, ``list`` or ``call``.
    """  # noqa: D205
    if answer is not None and 300 <= answer.status < 400:
        return Failure(f"HTTP {answer.status}: redirects are not followed", False, REFUSED)
    if answer is not None and answer.status >= 400 and not answer.rpc_error:
        detail = f"HTTP {answer.status}" + (f": {_clip(answer.snippet)}" if answer.snippet else "")
        if is_transient_status(answer.status):
            return Failure(detail, True, UNAVAILABLE, answer.retry_after)
        return Failure(detail, False, REFUSED)
    if isinstance(exc, MCPError):
        return _rpc_error(exc, answer, phase)
    if isinstance(exc, httpx2.TimeoutException | TimeoutError):
        return Failure(f"timed out: {type(exc).__name__}", True, UNAVAILABLE)
    if isinstance(exc, httpx2.TransportError):
        detail = f"connection error: {type(exc).__name__}: {_clip(str(exc))}"
        return Failure(detail, True, UNAVAILABLE)
    if isinstance(exc, ValidationError):
        return Failure(f"the answer is not valid MCP: {_clip(str(exc))}", True, UNAVAILABLE)
    return Failure(f"{type(exc).__name__}: {_clip(str(exc))}", True, UNAVAILABLE)


def _rpc_error(exc: MCPError, answer: _Answer | None, phase: str) -> Failure | str:
    text = f"MCP error {exc.code}: {_clip(exc.message)}"
    status = answer.status if answer is not None else 200
    if answer is not None and is_transient_status(status):
        return Failure(f"HTTP {status}, {text}", True, UNAVAILABLE, answer.retry_after)
    if exc.code == types.UNSUPPORTED_PROTOCOL_VERSION:
        return Failure(f"no protocol version in common: {text}", False, REFUSED)
    if phase != "call":  # the session or the listing failed: not something a model can fix
        return Failure(text, status < 400, UNAVAILABLE if status < 400 else REFUSED)
    garbage = status == 202 or (
        answer is not None
        and not answer.content_type.lower().startswith(("application/json", "text/event-stream"))
    )
    if exc.code in SERVER_FAULTS or garbage:
        return Failure(text, True, UNAVAILABLE)
    return f"error: {text}"


async def list_tools(
    url: str,
    headers: Mapping[str, str],
    timeout: float,  # noqa: ASYNC109 - the whole operation runs under asyncio.timeout(timeout)
) -> Discovery:
    """Connect, list every tool (following ``nextCursor``), close. Raises StepFailed."""
    guard = _Guard(url, headers, timeout)
    try:
        async with guard.deadline, _session(url, headers, timeout, guard.recorder) as client:
            guard.phase = "list"
            tools = await _all_tools(client)
            info = client.server_info
            return Discovery(
                protocol_version=client.protocol_version,
                server_name=info.name if info else None,
                server_version=info.version if info else None,
                tools=tuple(tools),
            )
    except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
        raise
    except StepFailed as e:
        raise guard.step(e.failure) from e
    except BaseException as e:
        outcome = guard.outcome(e)
        if isinstance(outcome, ToolResult):  # never, outside a call: a failure all the same
            outcome = guard.step(Failure(outcome.content, True, UNAVAILABLE))
        raise outcome from e


class ChangesNotSupported(Exception):
    """The server cannot announce tool changes: no use listening again to the same spec."""

    def __init__(self, protocol_version: str | None, why: str) -> None:
        """``why`` says what was seen (no header value is ever in it)."""
        super().__init__(f"protocol {protocol_version}: {why}")
        self.protocol_version = protocol_version
        self.why = why


async def watch_tool_changes(
    url: str,
    headers: Mapping[str, str],
    timeout: float,  # noqa: ASYNC109 - bounds connect and acknowledgment, not the stream
    on_change: Callable[[], None],
    on_listening: Callable[[str | None], None] | None = None,
) -> None:
    """Listen for ``tools/list_changed`` on one session; ``on_change()`` for each event.

    ``on_listening(protocol_version)`` is called once the server acknowledged the subscription.
    Returns when the server closes the stream gracefully; raises :class:`ChangesNotSupported`
    when the server cannot announce tool changes, ``StepFailed`` when the stream fails or is
    lost (there is no replay: a caller that listens again should refresh).
    """
    guard = _Guard(url, headers, timeout)
    read = max(timeout, LISTEN_READ_SECONDS)
    protocol: str | None = None
    try:
        async with (
            guard.deadline,
            _session(url, headers, timeout, guard.recorder, read) as client,
        ):
            guard.phase, protocol = "listen", client.protocol_version
            async with client.listen(tools_list_changed=True) as sub:
                if not sub.honored.tools_list_changed:
                    raise ChangesNotSupported(
                        client.protocol_version, "tools_list_changed not honoured"
                    )
                guard.deadline.reschedule(None)  # the stream stays open: no deadline
                if on_listening is not None:
                    on_listening(client.protocol_version)
                async for event in sub:
                    if isinstance(event, ToolsListChanged):
                        on_change()
    except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:
        leaf = _leaf(e)
        if isinstance(leaf, ChangesNotSupported):
            raise leaf from e
        if isinstance(leaf, ListenNotSupportedError):
            why = "subscriptions/listen needs protocol 2026-07-28"
            raise ChangesNotSupported(leaf.negotiated_version, why) from e
        if isinstance(leaf, MCPError) and leaf.code == types.METHOD_NOT_FOUND:
            raise ChangesNotSupported(protocol, "subscriptions/listen: method not found") from e
        if isinstance(leaf, StepFailed):
            raise guard.step(leaf.failure) from e
        outcome = guard.outcome(e)
        if isinstance(outcome, ToolResult):  # never, outside a call: a failure all the same
            outcome = guard.step(Failure(outcome.content, True, UNAVAILABLE))
        raise outcome from e


async def _all_tools(client: Client) -> list[McpTool]:
    tools: list[McpTool] = []
    cursor: str | None = None
    seen: set[str] = set()
    for _ in range(MAX_PAGES):
        page = await client.session.list_tools(params=types.PaginatedRequestParams(cursor=cursor))
        tools += [_tool(t) for t in page.tools]
        cursor = page.next_cursor
        if not cursor or cursor in seen:
            return tools
        seen.add(cursor)
    raise StepFailed(Failure(f"tools/list has more than {MAX_PAGES} pages", False, REFUSED))


def _tool(tool: types.Tool) -> McpTool:
    hints = tool.annotations
    return McpTool(
        name=tool.name,
        description=tool.description,
        input_schema=tool.input_schema,
        read_only_hint=hints.read_only_hint if hints else None,
        destructive_hint=hints.destructive_hint if hints else None,
        idempotent_hint=hints.idempotent_hint if hints else None,
        open_world_hint=hints.open_world_hint if hints else None,
    )


async def call_tool(
    url: str,
    headers: Mapping[str, str],
    timeout: float,  # noqa: ASYNC109 - the whole operation runs under asyncio.timeout(timeout)
    name: str,
    arguments: dict[str, Any],
    idempotency_key: str,
) -> ToolResult:
    """Call one tool in a session of its own. Raises StepFailed (see the module's contract).
    The requests carry the trace's ``traceparent`` too, when traces are on.
    """  # noqa: D205
    sent = {**headers, IDEMPOTENCY_HEADER: idempotency_key, **tracing.headers()}
    guard = _Guard(url, headers, timeout)
    try:
        async with guard.deadline, _session(url, sent, timeout, guard.recorder) as client:
            guard.phase = "call"
            result = await _call(client, name, arguments, idempotency_key)
    except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
        raise
    except StepFailed as e:
        raise guard.step(e.failure) from e
    except BaseException as e:
        outcome = guard.outcome(e)
        if isinstance(outcome, ToolResult):
            return outcome
        raise outcome from e
    if isinstance(result, types.InputRequiredResult):
        return ToolResult(
            f"error: tool {name} asked for more input (elicitation), which this operator does "
            "not support",
            is_error=True,
        )
    return ToolResult(render(result), is_error=bool(result.is_error))


async def _call(
    client: Client, name: str, arguments: dict[str, Any], key: str
) -> types.CallToolResult | types.InputRequiredResult:
    """``tools/call`` through the session: the SDK stamps the negotiated version's headers.

    Not ``Client.call_tool``: that one re-validates structured content against the tool's
    output schema (listing the tools again if it has not), and would fail a call whose effect
    already happened. If a 2026-era server wants the tool listed first (``HEADER_MISMATCH``,
    refused before running), it is listed and the call sent once more.
    """
    request = types.CallToolRequest(
        params=types.CallToolRequestParams(
            name=name, arguments=arguments, _meta={META_IDEMPOTENCY_KEY: key}
        )
    )
    try:
        return await client.session.send_request(request, _CALL_RESULT)
    except MCPError as e:
        if e.code != types.HEADER_MISMATCH:
            raise
    await _all_tools(client)
    return await client.session.send_request(request, _CALL_RESULT)


def render(result: types.CallToolResult) -> str:
    """The text the model reads: text blocks joined, other blocks as compact JSON."""
    parts = [
        block.text
        if isinstance(block, types.TextContent)
        else _compact(block.model_dump(by_alias=True, mode="json", exclude_none=True))
        for block in result.content
    ]
    if not parts and result.structured_content is not None:
        parts.append(_compact(result.structured_content))
    return "\n".join(parts)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
