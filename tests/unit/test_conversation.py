"""Unit tests of ``core.conversation``: request messages, the next step, tool calls, counters."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from agenttask_operator.core.conversation import (
    Answer,
    find_tool_call,
    next_step,
    project,
    request_messages,
    tool_calls_of,
)
from agenttask_operator.models import AgentTaskSpec, Entry, ModelSpec, Step, Usage


def spec(system_prompt: str | None = None) -> AgentTaskSpec:
    return AgentTaskSpec(
        input="Free some disk space.", system_prompt=system_prompt, model=ModelSpec(name="m")
    )


def call(call_id: Any, name: str, arguments: str = "{}") -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def llm(
    iteration: int,
    *calls: dict[str, Any],
    content: str | None = None,
    finish: str | None = "stop",
    usage: Usage | None = None,
) -> Entry:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = list(calls)
    return Entry(
        kind="LLM", iteration=iteration, message=message, usage=usage, finish_reason=finish
    )


def tool(iteration: int, call_id: str, content: str = "ok") -> Entry:
    return Entry(
        kind="Tool",
        iteration=iteration,
        tool_call_id=call_id,
        message={"role": "tool", "tool_call_id": call_id, "content": content},
    )


def u(prompt: int, completion: int, total: int | None = None) -> Usage:
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion if total is None else total,
    )


# --- request_messages --------------------------------------------------------------------------


def test_request_messages_with_system_prompt() -> None:
    transcript = [llm(1, call("c1", "check_disk")), tool(1, "c1", "90% used")]
    assert request_messages(spec("Be brief."), transcript) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Free some disk space."},
        transcript[0].message,
        transcript[1].message,
    ]


@pytest.mark.parametrize("system_prompt", [None, ""])
def test_request_messages_without_system_prompt(system_prompt: str | None) -> None:
    assert request_messages(spec(system_prompt), []) == [
        {"role": "user", "content": "Free some disk space."}
    ]


def test_request_messages_replays_the_transcript_verbatim_and_in_order() -> None:
    transcript = [
        llm(1, call("c1", "a"), call("c2", "b")),
        tool(1, "c1", "one"),
        tool(1, "c2", "two"),
        llm(2, content="done"),
    ]
    messages = request_messages(spec(), transcript)
    assert messages[1:] == [e.message for e in transcript]


def test_request_messages_returns_a_fresh_list() -> None:
    s = spec("sys")
    first = request_messages(s, [])
    first.append({"role": "user", "content": "injected"})
    first[0]["content"] = "changed"
    assert request_messages(s, []) == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "Free some disk space."},
    ]


# --- tool_calls_of -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"role": "assistant", "content": "x"}, []),
        ({"role": "assistant", "tool_calls": None}, []),
        ({"role": "assistant", "tool_calls": []}, []),
        ({"role": "assistant", "tool_calls": [call("a", "f")]}, [call("a", "f")]),
        ({"role": "assistant", "tool_calls": ["junk", 3, call("a", "f")]}, [call("a", "f")]),
    ],
)
def test_tool_calls_of(message: dict[str, Any], expected: list[dict[str, Any]]) -> None:
    entry = Entry(kind="LLM", iteration=1, message=message)
    assert tool_calls_of(entry) == expected


# --- next_step ---------------------------------------------------------------------------------


def test_empty_transcript_starts_with_llm_request_one() -> None:
    assert next_step([]) == Step(kind="LLM", iteration=1)


def test_first_tool_call_comes_next() -> None:
    transcript = [llm(1, call("c1", "check_disk"), call("c2", "clean_logs"))]
    assert next_step(transcript) == Step(
        kind="Tool", iteration=1, tool_call_id="c1", tool_name="check_disk"
    )


def test_tool_calls_in_order() -> None:
    transcript = [llm(1, call("c1", "a"), call("c2", "b"), call("c3", "c")), tool(1, "c1")]
    assert next_step(transcript) == Step(kind="Tool", iteration=1, tool_call_id="c2", tool_name="b")
    transcript.append(tool(1, "c2"))
    assert next_step(transcript) == Step(kind="Tool", iteration=1, tool_call_id="c3", tool_name="c")


def test_first_unanswered_call_even_if_a_later_one_was_answered() -> None:
    transcript = [llm(1, call("c1", "a"), call("c2", "b")), tool(1, "c2")]
    step = next_step(transcript)
    assert isinstance(step, Step)
    assert step.tool_call_id == "c1"


def test_next_llm_request_after_all_tool_results() -> None:
    transcript = [llm(1, call("c1", "a"), call("c2", "b")), tool(1, "c2"), tool(1, "c1")]
    assert next_step(transcript) == Step(kind="LLM", iteration=2)


def test_iteration_follows_the_last_llm_entry() -> None:
    transcript = [
        llm(1, call("c1", "a")),
        tool(1, "c1"),
        llm(2, call("c2", "a")),
        tool(2, "c2"),
        llm(3, call("c3", "b")),
    ]
    assert next_step(transcript) == Step(kind="Tool", iteration=3, tool_call_id="c3", tool_name="b")
    transcript.append(tool(3, "c3"))
    assert next_step(transcript) == Step(kind="LLM", iteration=4)


def test_results_of_an_earlier_iteration_do_not_answer_a_reused_id() -> None:
    transcript = [llm(1, call("dup", "a")), tool(1, "dup"), llm(2, call("dup", "a"))]
    assert next_step(transcript) == Step(
        kind="Tool", iteration=2, tool_call_id="dup", tool_name="a"
    )


@pytest.mark.parametrize("finish", ["stop", "length", "content_filter", None])
def test_final_answer(finish: str | None) -> None:
    transcript = [llm(1, call("c1", "a")), tool(1, "c1"), llm(2, content="42", finish=finish)]
    assert next_step(transcript) == Answer(content="42", finish_reason=finish)


def test_final_answer_without_content_is_empty() -> None:
    assert next_step([llm(1, content=None)]) == Answer(content="", finish_reason="stop")


def test_call_without_function_name_gets_an_empty_name() -> None:
    transcript = [llm(1, {"id": "c1", "type": "function"})]
    assert next_step(transcript) == Step(kind="Tool", iteration=1, tool_call_id="c1", tool_name="")


def test_next_step_does_not_mutate_the_transcript() -> None:
    transcript = [llm(1, call("c1", "a"), call("c2", "b")), tool(1, "c1")]
    before = copy.deepcopy(transcript)
    next_step(transcript)
    assert transcript == before


# --- find_tool_call ----------------------------------------------------------------------------


def _step(iteration: int, call_id: str) -> Step:
    return Step(kind="Tool", iteration=iteration, tool_call_id=call_id, tool_name="x")


def test_find_tool_call() -> None:
    c1, c2 = call("c1", "a", '{"x": 1}'), call("c2", "b", '{"y": 2}')
    transcript = [llm(1, c1, c2), tool(1, "c1")]
    assert find_tool_call(transcript, _step(1, "c2")) == c2
    assert find_tool_call(transcript, _step(1, "c1")) == c1


def test_find_tool_call_picks_the_right_iteration_for_a_reused_id() -> None:
    old, new = call("dup", "a", '{"n": 1}'), call("dup", "a", '{"n": 2}')
    transcript = [llm(1, old), tool(1, "dup"), llm(2, new)]
    assert find_tool_call(transcript, _step(1, "dup")) == old
    assert find_tool_call(transcript, _step(2, "dup")) == new


@pytest.mark.parametrize(("iteration", "call_id"), [(1, "nope"), (2, "c1"), (9, "c1")])
def test_find_tool_call_missing(iteration: int, call_id: str) -> None:
    transcript = [llm(1, call("c1", "a")), tool(1, "c1")]
    assert find_tool_call(transcript, _step(iteration, call_id)) is None


def test_find_tool_call_in_empty_transcript() -> None:
    assert find_tool_call([], _step(1, "c1")) is None


# --- project -----------------------------------------------------------------------------------


def test_project_empty() -> None:
    p = project([])
    assert (p.iterations, p.tool_calls, p.usage) == (0, 0, Usage())


def test_project_counts_and_sums_usage() -> None:
    transcript = [
        llm(1, call("c1", "a"), call("c2", "b"), usage=u(100, 10)),
        tool(1, "c1"),
        tool(1, "c2"),
        llm(2, call("c3", "a"), usage=u(200, 20, 225)),
        tool(2, "c3"),
        llm(3, content="done", usage=u(300, 5)),
    ]
    p = project(transcript)
    assert p.iterations == 3
    assert p.tool_calls == 3
    assert p.usage == Usage(prompt_tokens=600, completion_tokens=35, total_tokens=640)


def test_project_ignores_llm_entries_without_usage() -> None:
    transcript = [llm(1, call("c1", "a")), tool(1, "c1"), llm(2, content="x", usage=u(7, 3))]
    p = project(transcript)
    assert (p.iterations, p.tool_calls) == (2, 1)
    assert p.usage == u(7, 3)


def test_usage_addition() -> None:
    assert u(1, 2) + u(10, 20, 31) == Usage(prompt_tokens=11, completion_tokens=22, total_tokens=34)
    assert Usage() + Usage() == Usage()


def test_a_long_tool_result_is_clipped_for_the_model_only() -> None:
    big = "x" * 1000
    transcript = [llm(1, call("c1", "t")), tool(1, "c1", big)]
    spec = AgentTaskSpec.model_validate(
        {"input": "hi", "model": {"name": "m"}, "toolResultMaxChars": 300}
    )
    sent = request_messages(spec, transcript)[-1]["content"]
    assert sent.startswith("x" * 300) and "x" * 301 not in sent
    assert "clipped: the result has 1000 characters, 300 are shown" in sent
    assert transcript[1].message["content"] == big  # the transcript keeps it all
    wide = spec.model_copy(update={"tool_result_max_chars": 1000})
    assert request_messages(wide, transcript)[-1]["content"] == big
