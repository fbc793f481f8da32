"""Unit tests of parallel tool calls (``core.parallel`` and their place in ``decide``).

The calls of one answer after the step in flight start with it, as far as
``maxParallelToolCalls`` and ``budget.maxToolCalls`` allow and as long as none needs a person's
decision; each keeps its own attempts and result; a call left without a result becomes the step
in flight, with its counts, once the calls before it are done.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from test_decide import (
    NOW,
    TOOLS,
    apply,
    call,
    executed,
    llm,
    make_state,
    run_loop,
    running,
    tool,
    tool_step,
)

from agenttask_operator.core import Execute, Failure, WriteStatus, decide
from agenttask_operator.core.decide import on_parallel_failure
from agenttask_operator.models import (
    Budget,
    Entry,
    HttpToolSpec,
    ParallelCall,
    Step,
    TaskState,
    ToolSpec,
)

FOUR = llm(1, *(call(c, "echo") for c in "abcd"))


def four_model(iteration: int) -> Entry:
    """Iteration 1: four calls of echo; then the answer."""
    return FOUR if iteration == 1 else llm(iteration, content="done")


def first_action(**spec: Any) -> Execute:
    state = make_state(status=running([FOUR]), transcript=[FOUR], **spec)
    action = decide(state, NOW)
    assert isinstance(action, Execute), action
    return action


def ids(steps: tuple[Step, ...]) -> list[str | None]:
    return [s.tool_call_id for s in steps]


@pytest.mark.parametrize(
    ("limit", "extras"),
    [(1, []), (2, ["b"]), (3, ["b", "c"]), (4, ["b", "c", "d"]), (64, ["b", "c", "d"])],
)
def test_calls_start_together_up_to_the_limit(limit: int, extras: list[str]) -> None:
    action = first_action(max_parallel_tool_calls=limit)
    assert action.step.tool_call_id == "a"
    assert ids(action.extras) == extras
    stored = [p["toolCallId"] for p in action.intent.get("parallelCalls") or []]
    assert stored == extras  # their intents are in the same write, before anything runs
    for p in action.intent.get("parallelCalls") or []:
        assert (p["attempts"], p["iteration"], p["toolName"]) == (1, 1, "echo")
        assert p["startTime"] == "2025-03-01T12:05:30Z"


@pytest.mark.parametrize(("budget", "extras"), [(1, []), (2, ["b"]), (3, ["b", "c"])])
def test_the_tool_call_budget_counts_calls_in_flight(budget: int, extras: list[str]) -> None:
    action = first_action(budget=Budget(max_tool_calls=budget))
    assert ids(action.extras) == extras


def test_a_call_that_needs_approval_runs_alone_and_so_do_the_calls_after_it() -> None:
    deploy = ToolSpec(
        name="deploy", http=HttpToolSpec(url="http://t.invalid/d"), approval="Required"
    )
    answer = llm(1, call("a", "echo"), call("b", "deploy"), call("c", "echo"))
    state = make_state(status=running([answer]), transcript=[answer], tools=(*TOOLS, deploy))
    action = decide(state, NOW)
    assert isinstance(action, Execute) and action.extras == ()


def test_no_extras_from_an_earlier_answer_or_for_an_llm_step() -> None:
    state = make_state(status=running(), transcript=[])
    action = decide(state, NOW)
    assert isinstance(action, Execute) and action.step.kind == "LLM" and action.extras == ()


def test_the_whole_run_with_four_calls_at_once() -> None:
    final, log = run_loop(make_state(), four_model)
    assert final.status.phase == "Succeeded"
    assert executed(log) == [
        "exec:LLM:1:1",
        "exec:Tool(a):1:1",
        "exec:Tool(b):1:1 alongside",
        "exec:Tool(c):1:1 alongside",
        "exec:Tool(d):1:1 alongside",
        "exec:LLM:2:1",
    ]
    assert final.status.tool_calls == 4 and final.status.parallel_calls == ()


def crashed_batch(answered: str, current: str = "a") -> TaskState:
    """The operator died while calls a-d ran: ``answered`` have results stored."""
    entries = [
        ParallelCall(iteration=1, tool_call_id=c, tool_name="echo", start_time=NOW)
        for c in "abcd"
        if c != current
    ]
    status = running(
        [FOUR],
        current_step=tool_step(1, current, "echo", NOW),
        attempts=1,
        parallel_calls=tuple(entries),
    )
    transcript = [FOUR, *(tool(1, c) for c in answered)]
    return make_state(status=status, transcript=transcript)


def test_after_a_crash_only_the_unfinished_calls_run_again_each_under_its_own_counts() -> None:
    state = crashed_batch(answered="ac")
    final, log = run_loop(state, four_model)
    assert final.status.phase == "Succeeded"
    runs = executed(log)
    assert [r for r in runs if r.startswith("exec:Tool")] == [
        "exec:Tool(b):1:1",
        "exec:Tool(d):1:1",
    ]
    assert final.status.tool_calls == 4


def test_an_interrupted_call_alongside_is_an_interruption_not_a_failure() -> None:
    state = crashed_batch(answered="acd")
    first = decide(state, NOW)
    # commit a (and drop c, d from parallelCalls), take b up as the step in flight, rerun it
    assert isinstance(first, Execute), first
    assert first.step.tool_call_id == "b" and first.attempt == 1
    assert first.intent["interruptions"] == 1
    assert first.intent.get("parallelCalls", "absent") in (None, "absent")
    assert first.event is not None and first.event.reason == "Interrupted"


def test_a_call_alongside_that_fails_is_retried_with_its_own_attempts() -> None:
    attempts: dict[str, int] = {}

    def fail(step: Step, attempt: int) -> Failure | None:
        if step.tool_call_id == "c":
            attempts["c"] = attempt
            if attempt < 3:
                return Failure("HTTP 503", True, "ToolUnavailable")
        return None

    final, log = run_loop(make_state(), four_model, fail=fail)
    assert final.status.phase == "Succeeded"
    assert [r for r in executed(log) if "Tool(c)" in r] == [
        "exec:Tool(c):1:1 alongside",
        "exec:Tool(c):1:2",
        "exec:Tool(c):1:3",
    ]
    assert attempts["c"] == 3
    assert final.status.attempts == 0 and final.status.parallel_calls == ()


def test_a_permanent_failure_alongside_ends_the_task_with_its_reason() -> None:
    action = first_action()
    state = make_state(status=apply(running([FOUR]), action.intent), transcript=[FOUR])
    out = on_parallel_failure(
        state, action.extras[0], Failure("HTTP 404", False, "ToolNotFound"), NOW, 0.0
    )
    assert isinstance(out, WriteStatus)
    assert (out.patch["phase"], out.patch["reason"]) == ("Failed", "ToolNotFound")
    assert "parallelCalls" in out.patch and out.patch["parallelCalls"] is None


def test_a_transient_failure_alongside_is_kept_in_its_entry() -> None:
    action = first_action()
    state = make_state(status=apply(running([FOUR]), action.intent), transcript=[FOUR])
    out = on_parallel_failure(state, action.extras[1], Failure("HTTP 503", True), NOW, 0.0)
    assert isinstance(out, ParallelCall)
    assert (out.tool_call_id, out.attempts, out.last_error) == ("c", 1, "HTTP 503")
    assert out.next_retry_time is not None and out.next_retry_time > NOW
    assert out.next_retry_time <= NOW + timedelta(seconds=10)


def test_answered_entries_are_dropped_when_nothing_else_is_to_do() -> None:
    """A stale entry whose result is stored (and no step in flight) is cleaned up, never run."""
    status = running(
        [FOUR, *(tool(1, c) for c in "abcd")],
        parallel_calls=(ParallelCall(iteration=1, tool_call_id="b", tool_name="echo"),),
    )
    state = make_state(status=status, transcript=[FOUR, *(tool(1, c) for c in "abcd")])
    action = decide(state, NOW)
    assert isinstance(action, Execute) and action.step.kind == "LLM"
    assert action.intent["parallelCalls"] is None
