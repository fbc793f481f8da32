"""core.genai: the attributes of a task's spans, computed from its models."""

from __future__ import annotations

import json
from typing import Any

from agenttask_operator.core import genai
from agenttask_operator.core.answers import Reply, parse_completion
from agenttask_operator.core.errors import Failure
from agenttask_operator.models import AgentTaskStatus, Step, ToolSpec


def test_attempt_of_the_step_in_flight_and_of_a_call_alongside() -> None:
    status = AgentTaskStatus.model_validate(
        {
            "attempts": 3,
            "currentStep": {"kind": "Tool", "iteration": 2, "toolCallId": "a"},
            "parallelCalls": [{"iteration": 2, "toolCallId": "b", "attempts": 2}],
        }
    )
    assert genai.attempt(status, Step(kind="Tool", iteration=2, tool_call_id="a")) == 3
    assert genai.attempt(status, Step(kind="Tool", iteration=2, tool_call_id="b")) == 2
    assert genai.attempt(status, Step(kind="Tool", iteration=2, tool_call_id="c")) == 1
    assert genai.attempt(AgentTaskStatus(), Step(kind="LLM", iteration=1)) == 1


def test_tool_type() -> None:
    tools = (
        ToolSpec(name="check_disk"),
        ToolSpec.model_validate({"name": "ticket", "http": {"url": "http://t/open"}}),
    )
    assert genai.tool_type("check_disk", tools, ()) == "function"
    assert genai.tool_type("ticket", tools, ()) == "extension"
    assert genai.tool_type("get-sum", tools, ("get-sum",)) == "extension"


def test_server_address_and_port() -> None:
    assert genai.server("https://api.openai.com/v1") == {
        "server.address": "api.openai.com",
        "server.port": 443,
    }
    assert genai.server("http://127.0.0.1:8000/v1") == {
        "server.address": "127.0.0.1",
        "server.port": 8000,
    }
    assert genai.server(None) == {} and genai.server("not a url") == {}


def test_error_type_is_the_http_status_else_the_reason() -> None:
    assert genai.error_type(Failure("x", True, "ModelUnavailable", status=429)) == "429"
    assert genai.error_type(Failure("x", True, "ToolTimeout")) == "ToolTimeout"
    assert genai.error_type(Failure("x", False, "ModelRequestInvalid"), 400) == "400"


def test_messages_in_the_conventions_form() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "f", "arguments": '{"x": 1}'},
                },
                {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{oops"}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "one"},
    ]
    assert json.loads(genai.input_messages(messages)) == [
        {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
        {"role": "user", "parts": [{"type": "text", "content": "hi"}]},
        {
            "role": "assistant",
            "parts": [
                {"type": "tool_call", "id": "c1", "name": "f", "arguments": {"x": 1}},
                {"type": "tool_call", "id": "c2", "name": "g", "arguments": "{oops"},
            ],
        },
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "c1", "response": "one"}]},
    ]
    out = genai.output_messages(
        {"role": "assistant", "content": [{"type": "text", "text": "ok"}]}, None
    )
    assert json.loads(out) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "ok"}], "finish_reason": "stop"}
    ]
    assert json.loads(genai.instructions("Be brief.")) == [{"type": "text", "content": "Be brief."}]


def test_the_answer_names_its_model_and_id_for_the_chat_span() -> None:
    answer: dict[str, Any] = {
        "id": "chatcmpl-1",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    }
    reply = parse_completion("application/json", json.dumps(answer).encode(), 1)
    assert isinstance(reply, Reply)
    assert (reply.model, reply.id) == ("gpt-4o-mini-2024-07-18", "chatcmpl-1")
    answer |= {"model": 7, "id": None}  # odd servers: nothing is made up
    reply = parse_completion("application/json", json.dumps(answer).encode(), 1)
    assert isinstance(reply, Reply) and (reply.model, reply.id) == (None, None)
