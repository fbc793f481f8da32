"""The conversation as the model sees it, and which step comes next. Pure functions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agenttask_operator.models import AgentTaskSpec, Entry, Step, Usage


def request_messages(spec: AgentTaskSpec, transcript: Sequence[Entry]) -> list[dict[str, Any]]:
    """The messages of the next LLM request: system prompt, user input, then the transcript.

    A tool result longer than ``spec.toolResultMaxChars`` is clipped in what the model is
    shown, with a note; the transcript keeps the whole of it.
    """
    messages: list[dict[str, Any]] = []
    if spec.system_prompt:
        messages.append({"role": "system", "content": spec.system_prompt})
    messages.append({"role": "user", "content": spec.input})
    messages.extend(shown(e.message, spec.tool_result_max_chars) for e in transcript)
    return messages


def shown(message: dict[str, Any], limit: int) -> dict[str, Any]:
    """``message`` as the model sees it: a tool result cut to ``limit`` characters, saying so."""
    content = message.get("content")
    if message.get("role") != "tool" or not isinstance(content, str) or len(content) <= limit:
        return message
    note = (
        f"\n[… clipped: the result has {len(content)} characters, {limit} are shown; "
        "the full result is in the task's transcript]"
    )
    return message | {"content": content[:limit] + note}


@dataclass(frozen=True)
class Answer:
    """The model answered without tool calls: the task is over."""

    content: str
    finish_reason: str | None


def tool_calls_of(entry: Entry) -> list[dict[str, Any]]:
    """The tool calls an assistant entry asked for (possibly none)."""
    calls = entry.message.get("tool_calls") or []
    if not isinstance(calls, list):  # only a hand-edited transcript holds such things
        return []
    return [c for c in calls if isinstance(c, dict)]


def next_step(transcript: Sequence[Entry]) -> Step | Answer:
    """What comes after the committed transcript.

    No LLM answer yet → LLM step 1. The last LLM answer asked for tools → the first of its tool
    calls without a stored result, in order. All answered → the next LLM step. The last LLM
    answer asked for no tool → the final answer.
    """
    last_llm = next(
        (i for i in range(len(transcript) - 1, -1, -1) if transcript[i].kind == "LLM"), None
    )
    if last_llm is None:
        return Step(kind="LLM", iteration=1)
    llm = transcript[last_llm]
    calls = tool_calls_of(llm)
    if not calls:
        return Answer(
            content=str(llm.message.get("content") or ""), finish_reason=llm.finish_reason
        )
    answered = {e.tool_call_id for e in transcript[last_llm + 1 :] if e.kind == "Tool"}
    for call in calls:
        if call.get("id") not in answered:
            fn = call.get("function")
            return Step(
                kind="Tool",
                iteration=llm.iteration,
                tool_call_id=str(call.get("id")),
                tool_name=str(fn.get("name", "")) if isinstance(fn, dict) else "",
            )
    return Step(kind="LLM", iteration=llm.iteration + 1)


def answered_calls(transcript: Sequence[Entry]) -> frozenset[tuple[int, str]]:
    """``(iteration, tool_call_id)`` of every tool call whose result is stored."""
    return frozenset(
        (e.iteration, e.tool_call_id)
        for e in transcript
        if e.kind == "Tool" and e.tool_call_id is not None
    )


def find_tool_call(transcript: Sequence[Entry], step: Step) -> dict[str, Any] | None:
    """The assistant's tool call that ``step`` executes."""
    for entry in reversed(transcript):
        if entry.kind == "LLM" and entry.iteration == step.iteration:
            for call in tool_calls_of(entry):
                if call.get("id") == step.tool_call_id:
                    return call
    return None


@dataclass(frozen=True)
class Projection:
    """Status counters derived from the transcript alone."""

    iterations: int
    tool_calls: int
    usage: Usage


def project(transcript: Sequence[Entry]) -> Projection:
    """Derive iterations, tool calls and token usage from the transcript."""
    usage = Usage()
    iterations = tool_calls = 0
    for e in transcript:
        if e.kind == "LLM":
            iterations += 1
            if e.usage is not None:
                usage = usage + e.usage
        else:
            tool_calls += 1
    return Projection(iterations=iterations, tool_calls=tool_calls, usage=usage)
