"""Unit tests of ``effects.llm`` (Retry-After, error classification) and ``effects.tools``
(tool definitions and the ``execute`` paths that need no network).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import aiohttp
import httpx2
import openai
import pytest

from agenttask_operator.core.errors import Failure
from agenttask_operator.effects.llm import StepFailed, classify, retry_after_seconds
from agenttask_operator.effects.registry import BuiltinTool, ToolContext, ToolError
from agenttask_operator.effects.tools import (
    ToolResult,
    definitions,
    execute,
    idempotency_key,
)
from agenttask_operator.models import HttpToolSpec, ToolSpec

NO_SESSION = cast(aiohttp.ClientSession, None)  # paths under test never touch the network


# --- retry_after_seconds -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (None, None),
        ({}, None),
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "0"}, 0.0),
        ({"retry-after": "2.5"}, 2.5),
        ({"retry-after": " 3 "}, 3.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "20", "retry-after": "9"}, 0.02),  # milliseconds preferred
        ({"retry-after-ms": "soon", "retry-after": "9"}, 9.0),  # invalid ms: fall back
        ({"retry-after-ms": "", "retry-after": "4"}, 4.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),  # HTTP-date: not understood
        ({"retry-after": "later"}, None),
        ({"retry-after-ms": "x", "retry-after": "y"}, None),
        ({"retry-after": "-5"}, 0.0),  # never negative
        ({"retry-after-ms": "-100"}, 0.0),
        ({"x-other": "5"}, None),
    ],
)
def test_retry_after_seconds(headers: dict[str, str] | None, expected: float | None) -> None:
    got = retry_after_seconds(headers)
    assert got == (pytest.approx(expected) if expected is not None else None)


def test_retry_after_seconds_from_real_headers_is_case_insensitive() -> None:
    assert retry_after_seconds(httpx2.Headers({"Retry-After": "12"})) == 12.0
    assert retry_after_seconds(httpx2.Headers({"Retry-After-Ms": "250"})) == 0.25
    assert retry_after_seconds(httpx2.Headers({"Content-Type": "x"})) is None


@pytest.mark.parametrize("value", ["inf", "Infinity", "nan"])
def test_retry_after_seconds_rejects_non_finite_values(value: str) -> None:
    assert retry_after_seconds({"retry-after": value}) is None


# --- classify ----------------------------------------------------------------------------------

REQUEST = httpx2.Request("POST", "https://llm.invalid/v1/chat/completions")


def status_error(code: int, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    response = httpx2.Response(code, headers=headers or {}, request=REQUEST)
    return openai.APIStatusError(f"status {code}", response=response, body=None)


def test_classify_timeout() -> None:
    f = classify(openai.APITimeoutError(request=REQUEST))
    assert f == Failure("request timed out", transient=True, reason="ModelTimeout")


def test_classify_connection_error() -> None:
    f = classify(openai.APIConnectionError(message="refused", request=REQUEST))
    assert f.transient
    assert f.reason == "ModelUnavailable"
    assert f.message == "connection error: refused"


@pytest.mark.parametrize("code", [408, 409, 429, 500, 502, 503, 504])
def test_classify_transient_status(code: int) -> None:
    f = classify(status_error(code))
    assert f == Failure(f"HTTP {code}: status {code}", True, "ModelUnavailable", None, code)


@pytest.mark.parametrize(
    ("headers", "retry_after"),
    [({"retry-after": "30"}, 30.0), ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5)],
)
def test_classify_transient_status_keeps_retry_after(
    headers: dict[str, str], retry_after: float
) -> None:
    assert classify(status_error(429, headers)).retry_after == retry_after


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (400, "ModelRequestInvalid"),
        (401, "ModelAuthFailed"),
        (403, "ModelPermissionDenied"),
        (404, "ModelNotFound"),
        (413, "ModelRequestInvalid"),
        (422, "ModelRequestInvalid"),
        (402, "ModelRequestFailed"),
        (418, "ModelRequestFailed"),
    ],
)
def test_classify_permanent_status(code: int, reason: str) -> None:
    f = classify(status_error(code, {"retry-after": "5"}))
    assert f == Failure(f"HTTP {code}: status {code}", False, reason, None)


@pytest.mark.parametrize(
    ("exc_type", "code"),
    [
        (openai.BadRequestError, 400),
        (openai.AuthenticationError, 401),
        (openai.NotFoundError, 404),
        (openai.RateLimitError, 429),
        (openai.InternalServerError, 500),
    ],
)
def test_classify_sdk_subclasses(exc_type: type[openai.APIStatusError], code: int) -> None:
    response = httpx2.Response(code, request=REQUEST)
    f = classify(exc_type("x", response=response, body={"error": {"message": "x"}}))
    assert f.transient == (code >= 429)


@pytest.mark.parametrize("exc", [ValueError("weird"), openai.OpenAIError("sdk trouble")])
def test_classify_anything_else_is_a_transient_model_error(exc: Exception) -> None:
    f = classify(exc)
    assert f == Failure(f"{type(exc).__name__}: {exc}", True, "ModelError")


def test_step_failed_carries_its_failure() -> None:
    failure = Failure("HTTP 503", True, "ModelUnavailable", 2.0)
    err = StepFailed(failure)
    assert err.failure is failure
    assert str(err) == "HTTP 503"


# --- tools: definitions ------------------------------------------------------------------------


async def _noop(arguments: dict[str, Any], ctx: ToolContext) -> str:
    return "noop"


PARAMS = {"type": "object", "properties": {"q": {"type": "string"}}}
BUILTINS = {
    "search": BuiltinTool("search", "Search the docs.", PARAMS, _noop),
}


def test_definitions_of_a_builtin_use_the_registry() -> None:
    assert definitions((ToolSpec(name="search"),), BUILTINS) == [
        {
            "type": "function",
            "function": {"name": "search", "description": "Search the docs.", "parameters": PARAMS},
        }
    ]


def test_definitions_spec_overrides_the_registry() -> None:
    own = {"type": "object", "properties": {}}
    [d] = definitions((ToolSpec(name="search", description="Mine.", parameters=own),), BUILTINS)
    assert d["function"] == {"name": "search", "description": "Mine.", "parameters": own}


def test_definitions_of_http_tools_never_borrow_from_builtins() -> None:
    spec = ToolSpec(name="search", http=HttpToolSpec(url="http://t.invalid"))
    [d] = definitions((spec,), BUILTINS)
    assert d["function"] == {
        "name": "search",
        "description": "",
        "parameters": {"type": "object", "properties": {}},
    }


def test_definitions_keep_spec_order_and_handle_unknown_names() -> None:
    specs = (
        ToolSpec(name="zeta", http=HttpToolSpec(url="http://z"), description="Z"),
        ToolSpec(name="unknown"),
        ToolSpec(name="search"),
    )
    out = definitions(specs, BUILTINS)
    assert [d["function"]["name"] for d in out] == ["zeta", "unknown", "search"]
    assert all(d["type"] == "function" for d in out)
    assert out[1]["function"]["description"] == ""
    assert out[1]["function"]["parameters"] == {"type": "object", "properties": {}}


def test_definitions_of_no_tools() -> None:
    assert definitions((), BUILTINS) == []


def test_idempotency_key() -> None:
    assert idempotency_key("uid-9", "call_3") == "uid-9:call_3"


# --- tools: execute without network ------------------------------------------------------------

CTX = ToolContext(
    idempotency_key="uid-1:call_1",
    namespace="ns",
    task_name="task",
    task_uid="uid-1",
    tool_call_id="call_1",
    workspace=None,
)


def tool_call(name: str, arguments: Any = "{}") -> dict[str, Any]:
    return {"id": "call_1", "type": "function", "function": {"name": name, "arguments": arguments}}


async def echo(arguments: dict[str, Any], ctx: ToolContext) -> str:
    return json.dumps({"arguments": arguments, "key": ctx.idempotency_key}, sort_keys=True)


async def refuse(arguments: dict[str, Any], ctx: ToolContext) -> str:
    raise ToolError("not today")


async def explode(arguments: dict[str, Any], ctx: ToolContext) -> str:
    raise RuntimeError("disk on fire")


FAKES = {
    "echo": BuiltinTool("echo", "", {}, echo),
    "refuse": BuiltinTool("refuse", "", {}, refuse),
    "explode": BuiltinTool("explode", "", {}, explode),
}
SPECS = (ToolSpec(name="echo"), ToolSpec(name="refuse"), ToolSpec(name="explode"))


async def run(call: dict[str, Any], specs: tuple[ToolSpec, ...] = SPECS) -> ToolResult:
    return await execute(call, specs, FAKES, CTX, NO_SESSION)


async def test_execute_unknown_tool_name() -> None:
    result = await run(tool_call("rm_rf"))
    assert result.is_error
    assert result.content == ("error: unknown tool 'rm_rf'; available tools: echo, refuse, explode")


async def test_execute_unknown_tool_without_any_tools() -> None:
    result = await run(tool_call("x"), specs=())
    assert result == ToolResult("error: unknown tool 'x'; available tools: none", True)


async def test_execute_call_without_function() -> None:
    result = await run({"id": "call_1", "type": "function"})
    assert result.is_error
    assert "unknown tool ''" in result.content


@pytest.mark.parametrize("raw", ["{", "{'a': 1}", "not json", '{"a": }'])
async def test_execute_invalid_json_arguments(raw: str) -> None:
    result = await run(tool_call("echo", raw))
    assert result.is_error
    assert result.content.startswith("error: arguments are not valid JSON (")
    assert result.content.endswith("); send a JSON object")


@pytest.mark.parametrize("raw", ["[1, 2]", "3", '"text"', "null", "true", [1, 2]])
async def test_execute_non_object_arguments(raw: Any) -> None:
    result = await run(tool_call("echo", raw))
    assert result == ToolResult("error: arguments must be a JSON object", True)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"path": "/var/log", "n": 2}', {"n": 2, "path": "/var/log"}),
        ({"already": "parsed"}, {"already": "parsed"}),
        ("", {}),
        (None, {}),
        ("{}", {}),
    ],
)
async def test_execute_builtin_gets_the_parsed_arguments(raw: Any, expected: Any) -> None:
    result = await run(tool_call("echo", raw))
    assert not result.is_error
    assert json.loads(result.content) == {"arguments": expected, "key": "uid-1:call_1"}


async def test_execute_builtin_tool_error_goes_back_to_the_model() -> None:
    assert await run(tool_call("refuse")) == ToolResult("error: not today", True)


async def test_execute_builtin_crash_is_a_transient_step_failure() -> None:
    with pytest.raises(StepFailed) as info:
        await run(tool_call("explode"))
    failure = info.value.failure
    assert failure.transient
    assert failure.message == "built-in explode raised RuntimeError: disk on fire"


async def test_execute_builtin_missing_from_this_operator() -> None:
    result = await run(tool_call("ghost"), specs=(ToolSpec(name="ghost"),))
    assert result == ToolResult("error: tool 'ghost' is not available in this operator", True)


async def test_execute_real_builtin_without_workspace_is_an_error_result() -> None:
    from agenttask_operator.effects.registry import load_builtins

    builtins = load_builtins()
    result = await execute(
        tool_call("clean_logs"), (ToolSpec(name="clean_logs"),), builtins, CTX, NO_SESSION
    )
    assert result.is_error
    assert "no workspace" in result.content


async def test_execute_real_builtin_in_a_workspace(tmp_path: Path) -> None:
    from agenttask_operator.effects.registry import load_builtins

    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.log").write_text("hello")
    ctx = ToolContext("uid-1:call_9", "ns", "task", "uid-1", "call_9", tmp_path)
    result = await execute(
        tool_call("clean_logs", '{"olderThanDays": 0}'),
        (ToolSpec(name="clean_logs"),),
        load_builtins(),
        ctx,
        NO_SESSION,
    )
    assert not result.is_error
    assert json.loads(result.content)["deletedFiles"] == 1
    assert not (tmp_path / "logs" / "a.log").exists()
