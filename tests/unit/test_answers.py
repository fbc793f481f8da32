"""Unit tests of core.answers (reading a model's answer) and core.internal (our own failures)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agenttask_operator.core.answers import Reply, parse_completion, preview
from agenttask_operator.core.errors import Failure
from agenttask_operator.core.internal import MAX_INTERNAL_ERRORS, internal_error
from agenttask_operator.core.status import apply
from agenttask_operator.models import AgentTaskSpec, AgentTaskStatus, ModelSpec, TaskState, Usage

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=30,
)
KEYS = st.sampled_from(["choices", "message", "content", "tool_calls", "function", "usage"])
# JSON shaped like a chat completion, so that the deeper branches are reached too.
SHAPED = st.recursive(
    st.none() | st.integers(-5, 5) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=40,
)


def check(result: Reply | Failure) -> None:
    """A reply is fit to store and replay; a failure says what it saw, briefly."""
    if isinstance(result, Failure):
        assert result.reason == "ModelResponseInvalid"
        assert result.message and len(result.message) < 1000
        return
    json.dumps(result.message)  # storable
    assert result.message["role"] == "assistant"
    assert result.message["content"] is None or isinstance(result.message["content"], str)
    ids = [c["id"] for c in result.message.get("tool_calls", [])]
    assert len(ids) == len(set(ids)) and all(isinstance(i, str) and i for i in ids)
    for call in result.message.get("tool_calls", []):
        assert isinstance(call["function"]["name"], str)
        assert isinstance(call["function"]["arguments"], str)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048), st.none() | st.text(max_size=40))
def test_parser_never_raises_for_any_bytes(body: bytes, content_type: str | None) -> None:
    check(parse_completion(content_type, body, 1))


@settings(max_examples=300, deadline=None)
@given(JSON | SHAPED)
def test_parser_never_raises_for_any_json(data: Any) -> None:
    check(parse_completion("application/json", json.dumps(data).encode(), 3))


@settings(max_examples=200, deadline=None)
@given(SHAPED)
def test_parser_never_raises_inside_a_choice(message: Any) -> None:
    body = {"choices": [{"message": message, "finish_reason": "stop"}], "usage": message}
    check(parse_completion("application/json", json.dumps(body).encode(), 2))


def body(message: dict[str, Any], **extra: Any) -> str:
    return json.dumps({"choices": [{"message": message, "finish_reason": "tool_calls"}]} | extra)


def test_a_good_answer() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "t", "arguments": '{"a": 1}'}}
    reply = parse_completion(
        "application/json; charset=utf-8",
        body(
            {"role": "assistant", "content": None, "tool_calls": [call]},
            usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        ).encode(),
        1,
    )
    assert reply == Reply(
        {"role": "assistant", "content": None, "tool_calls": [call]},
        Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5),
        "tool_calls",
    )


def test_lenient_where_servers_differ() -> None:
    calls = [
        {"function": {"name": "t", "arguments": {"a": 1}}},  # no id, arguments as an object
        {"id": "0", "function": {"name": "t"}},
        {"id": "0", "function": {"name": "u", "arguments": "{}"}},  # the same id again
    ]
    reply = parse_completion("application/json", body({"tool_calls": calls}).encode(), 4)
    assert isinstance(reply, Reply)
    assert [c["id"] for c in reply.message["tool_calls"]] == ["call_4_0", "0", "call_4_2"]
    assert [c["function"]["arguments"] for c in reply.message["tool_calls"]] == [
        '{"a": 1}',
        "{}",
        "{}",
    ]
    assert reply.usage is None and reply.finish_reason == "tool_calls"


def test_failures_name_the_content_type_and_the_first_bytes() -> None:
    page = b"<html><title>502 Bad Gateway</title>" + b"x" * 5000
    failure = parse_completion("text/html", page, 1)
    assert isinstance(failure, Failure) and failure.transient
    assert "text/html" in failure.message and "502 Bad Gateway" in failure.message
    assert "5036 bytes in all" in failure.message
    assert preview(b"") == "(empty)"


def task(**status: Any) -> TaskState:
    return TaskState(
        namespace="ns",
        name="t",
        uid="u",
        generation=2,
        spec=AgentTaskSpec(input="x", model=ModelSpec(name="m")),
        status=AgentTaskStatus.model_validate({"phase": "Running", **status}),
    )


NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_internal_errors_back_off_then_fail_the_task() -> None:
    state, delays = task(), []
    for _ in range(MAX_INTERNAL_ERRORS - 1):
        report = internal_error(state, "KeyError: 'x'", NOW)
        assert report.event is not None and report.event.reason == "InternalError"
        assert "KeyError: 'x'" in report.event.message
        delays.append(report.delay)
        state = apply(state, report.patch)
        cond = state.status.conditions[0]
        assert (cond.status, cond.reason) == ("Unknown", "InternalError")
        assert state.status.phase == "Running"
    assert delays == [5.0, 15.0, 45.0, 135.0]
    last = internal_error(state, "KeyError: 'x'", NOW)
    assert last.delay is None
    state = apply(state, last.patch)
    assert (state.status.phase, state.status.reason) == ("Failed", "InternalError")
    assert state.status.internal_errors == MAX_INTERNAL_ERRORS
    assert "failed 5 times" in (state.status.error or "")


def test_a_finished_task_is_never_written() -> None:
    report = internal_error(task(phase="Succeeded"), "boom", NOW)
    assert (report.patch, report.event, report.delay) == ({}, None, None)
