"""Unit tests of ``core.decide``: ``decide(state, now)`` and ``on_failure``. No I/O, no clock.

Bookkeeping writes (start, resume, commit) may be merged with the write that follows them, so
most tests look at the outcome: the status as it is once the action's patch has been applied
with JSON merge-patch semantics (as the API server applies it), and which step runs next.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agenttask_operator.core import Execute, Failure, Noop, Wait, WriteStatus, decide, on_failure
from agenttask_operator.core.actions import Action, Delete, Event
from agenttask_operator.core.decide import on_batch_failure
from agenttask_operator.core.status import MESSAGE_LIMIT, RESULT_LIMIT, ts, ts_ms
from agenttask_operator.models import (
    AgentTaskSpec,
    AgentTaskStatus,
    Budget,
    Condition,
    Entry,
    HttpToolSpec,
    ModelAccess,
    ModelSpec,
    OperatorPolicy,
    RetryPolicy,
    Step,
    TaskState,
    ToolSpec,
    Usage,
)

GEN = 7
T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)  # when the task started
NOW = datetime(2025, 3, 1, 12, 5, 30, 123456, tzinfo=UTC)  # the fake clock: T0 + 330.123456 s
NOW_S = NOW.replace(microsecond=0)  # new steps start at NOW, persisted to the second
BUILTINS = frozenset({"check_disk", "clean_logs"})
POLICY = RetryPolicy(
    max_attempts=5, initial_backoff_seconds=1.0, backoff_factor=2.0, max_backoff_seconds=300.0
)
DISK = ToolSpec(name="check_disk")
CLEAN = ToolSpec(name="clean_logs")
ECHO = ToolSpec(name="echo", http=HttpToolSpec(url="http://tools.invalid/echo"))
TOOLS = (DISK, CLEAN, ECHO)
OPERATOR = OperatorPolicy(default_base_url="https://llm.example/v1", default_key=True)
ACCESS = ModelAccess(base_url="https://llm.example/v1", credential="OperatorDefault")


# --- factories ---------------------------------------------------------------------------------


def call(call_id: str, name: str, arguments: str = "{}") -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def llm(
    iteration: int,
    *calls: dict[str, Any],
    content: str | None = None,
    finish: str | None = None,
    usage: Usage | None = None,
) -> Entry:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = list(calls)
    return Entry(
        kind="LLM",
        iteration=iteration,
        message=message,
        usage=usage,
        finish_reason=finish if finish is not None else ("tool_calls" if calls else "stop"),
    )


def tool(iteration: int, call_id: str, content: str = "ok") -> Entry:
    return Entry(
        kind="Tool",
        iteration=iteration,
        tool_call_id=call_id,
        message={"role": "tool", "tool_call_id": call_id, "content": content},
    )


def usage(prompt: int, completion: int) -> Usage:
    return Usage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )


def same_step(a: Step | None, b: Step) -> bool:
    """Both name the same unit of work (timestamps aside)."""
    assert a is not None
    return (a.kind, a.iteration, a.tool_call_id) == (b.kind, b.iteration, b.tool_call_id)


def llm_step(iteration: int, start: datetime | None = T0) -> Step:
    return Step(kind="LLM", iteration=iteration, start_time=start)


def tool_step(iteration: int, call_id: str, name: str, start: datetime | None = T0) -> Step:
    return Step(
        kind="Tool", iteration=iteration, tool_call_id=call_id, tool_name=name, start_time=start
    )


def running_condition(since: datetime = T0) -> Condition:
    return Condition(
        type="Succeeded",
        status="Unknown",
        reason="Running",
        message="The agent loop has started.",
        last_transition_time=since,
        observed_generation=GEN,
    )


def running(
    transcript: Sequence[Entry] = (),
    *,
    current_step: Step | None = None,
    attempts: int = 0,
    next_retry_time: datetime | None = None,
    last_error: str | None = None,
    **overrides: Any,
) -> AgentTaskStatus:
    """A started task's status whose counters match ``transcript`` (unless overridden)."""
    total = Usage()
    for e in transcript:
        if e.kind == "LLM" and e.usage is not None:
            total = total + e.usage
    fields: dict[str, Any] = {
        "phase": "Running",
        "reason": "Running",
        "start_time": T0,
        "observed_generation": GEN,
        "conditions": (running_condition(),),
        "iterations": sum(1 for e in transcript if e.kind == "LLM"),
        "tool_calls": sum(1 for e in transcript if e.kind == "Tool"),
        "usage": total,
        "current_step": current_step,
        "attempts": attempts,
        "next_retry_time": next_retry_time,
        "last_error": last_error,
        "model": ACCESS,
    }
    fields.update(overrides)
    return AgentTaskStatus(**fields)


def make_state(
    *,
    status: AgentTaskStatus | None = None,
    transcript: Sequence[Entry] = (),
    tools: Sequence[ToolSpec] = TOOLS,
    builtins: frozenset[str] = BUILTINS,
    deleting: bool = False,
    policy: OperatorPolicy = OPERATOR,
    **spec: Any,
) -> TaskState:
    spec.setdefault("retry", POLICY)
    return TaskState(
        namespace="ns",
        name="task",
        uid="0b9c2a4e-1111-2222-3333-444455556666",
        generation=GEN,
        spec=AgentTaskSpec(
            input="Free some disk space.",
            model=ModelSpec(name="gpt-test"),
            tools=tuple(tools),
            **spec,
        ),
        status=status if status is not None else AgentTaskStatus(),
        transcript=tuple(transcript),
        builtin_tools=builtins,
        deleting=deleting,
        policy=policy,
    )


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge(out.get(key), value)
    return out


def written(action: Action) -> dict[str, Any]:
    """The status patch an action writes (nothing for Noop, Wait and Delete)."""
    if isinstance(action, WriteStatus):
        return action.patch
    if isinstance(action, Execute):
        return action.intent
    return {}


def apply(status: AgentTaskStatus, patch: dict[str, Any]) -> AgentTaskStatus:
    return AgentTaskStatus.model_validate(merge(status.to_api(), patch))


def after(state: TaskState, action: Action) -> AgentTaskStatus:
    """The status once ``action``'s patch is written."""
    return apply(state.status, written(action))


def write(action: Action) -> WriteStatus:
    assert isinstance(action, WriteStatus), action
    return action


def execute(action: Action) -> Execute:
    assert isinstance(action, Execute), action
    return action


def status_of(phase: str, **fields: Any) -> AgentTaskStatus:
    return AgentTaskStatus.model_validate({"phase": phase, **fields})


# --- 1. ended / being deleted ------------------------------------------------------------------


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
@pytest.mark.parametrize(
    "variant",
    ["plain", "deleting", "unknown-tool", "step-in-flight", "not-started", "stale-counters"],
)
def test_ended_task_is_never_touched(phase: str, variant: str) -> None:
    status = running(phase=phase)
    kwargs: dict[str, Any] = {}
    if variant == "deleting":
        kwargs["deleting"] = True
    elif variant == "unknown-tool":
        kwargs["tools"] = [ToolSpec(name="rm_rf")]
    elif variant == "step-in-flight":
        status = running(phase=phase, current_step=llm_step(1), attempts=1)
    elif variant == "not-started":
        status = status_of(phase)
    elif variant == "stale-counters":
        status = running(phase=phase, iterations=99)
    action = decide(make_state(status=status, **kwargs), NOW)
    assert isinstance(action, Noop)
    assert phase in action.why


@pytest.mark.parametrize(
    ("ttl", "completed", "wait_until"),
    [
        (60, NOW - timedelta(seconds=59), NOW + timedelta(seconds=1)),
        (60, NOW - timedelta(seconds=60), None),
        (60, NOW - timedelta(days=3), None),
        (0, NOW, None),
        (3600, NOW, NOW + timedelta(hours=1)),
    ],
)
def test_ended_task_is_deleted_after_its_ttl(
    ttl: float, completed: datetime, wait_until: datetime | None
) -> None:
    status = running(phase="Succeeded", completion_time=completed)
    action = decide(make_state(status=status, ttl_seconds_after_finished=ttl), NOW)
    if wait_until is None:
        assert isinstance(action, Delete)
    else:
        assert isinstance(action, Wait)
        assert action.until == wait_until


def test_ended_task_without_completion_time_is_not_deleted() -> None:
    status = running(phase="Failed")
    assert isinstance(decide(make_state(status=status, ttl_seconds_after_finished=1), NOW), Noop)


@pytest.mark.parametrize(
    "status",
    [AgentTaskStatus(), running(), running(current_step=llm_step(1), attempts=2)],
    ids=["new", "running", "in-flight"],
)
def test_deleting_task_is_left_alone(status: AgentTaskStatus) -> None:
    action = decide(make_state(status=status, deleting=True, tools=[ToolSpec(name="nope")]), NOW)
    assert action == Noop("task is being deleted")


# --- 2. unknown tools --------------------------------------------------------------------------


def test_unknown_builtin_tool_fails_the_task() -> None:
    state = make_state(tools=[DISK, ToolSpec(name="rm_rf")])
    action = write(decide(state, NOW))
    patch = action.patch
    assert patch["phase"] == "Failed"
    assert patch["reason"] == "UnknownTool"
    assert "rm_rf" in patch["message"]
    assert "check_disk, clean_logs" in patch["message"]  # the known built-ins, sorted
    assert patch["error"] == patch["message"]
    assert patch["completionTime"] == ts(NOW)
    assert patch["observedGeneration"] == GEN
    assert "result" not in patch
    [cond] = patch["conditions"]
    assert (cond["type"], cond["status"], cond["reason"]) == ("Succeeded", "False", "UnknownTool")
    assert cond["lastTransitionTime"] == ts(NOW)
    assert cond["observedGeneration"] == GEN
    assert action.event == Event("Warning", "UnknownTool", patch["message"])
    st = after(state, action)
    assert (st.current_step, st.next_retry_time) == (None, None)


def test_all_unknown_tools_are_named_in_spec_order() -> None:
    state = make_state(tools=[ToolSpec(name="zeta"), CLEAN, ToolSpec(name="alpha")])
    msg = write(decide(state, NOW)).patch["message"]
    assert "unknown built-in tool(s) zeta, alpha:" in msg


def test_unknown_tool_without_any_builtins_says_none() -> None:
    state = make_state(tools=[DISK], builtins=frozenset())
    patch = write(decide(state, NOW)).patch
    assert patch["reason"] == "UnknownTool"
    assert "(none)" in patch["message"]


@pytest.mark.parametrize("builtins", [BUILTINS, frozenset()])
def test_http_tools_are_never_unknown(builtins: frozenset[str]) -> None:
    state = make_state(
        tools=[ECHO, ToolSpec(name="rm_rf", http=HttpToolSpec(url="http://x"))], builtins=builtins
    )
    action = decide(state, NOW)
    assert after(state, action).phase == "Running"


def test_unknown_tool_is_caught_even_after_start() -> None:
    state = make_state(status=running(), tools=[ToolSpec(name="gone")])
    assert write(decide(state, NOW)).patch["reason"] == "UnknownTool"


# --- 3. start ----------------------------------------------------------------------------------


@pytest.mark.parametrize("phase", [None, "Pending"])
def test_not_started_task_starts_with_llm_request_one(phase: str | None) -> None:
    state = make_state(status=AgentTaskStatus.model_validate({"phase": phase}))
    action = decide(state, NOW)
    patch = written(action)
    assert patch["phase"] == "Running"
    assert patch["reason"] == "Running"
    assert patch["startTime"] == ts(NOW)
    assert patch["observedGeneration"] == GEN
    assert patch["conditions"] == [
        {
            "type": "Succeeded",
            "status": "Unknown",
            "reason": "Running",
            "message": "The agent loop has started.",
            "lastTransitionTime": ts(NOW),
            "observedGeneration": GEN,
        }
    ]
    st = after(state, action)
    assert st.start_time == NOW.replace(microsecond=0)
    ex = execute(action)  # the start is written together with the first step's intent
    assert ex.step == Step(kind="LLM", iteration=1, start_time=NOW_S)
    assert ex.attempt == 1
    assert ex.event == Event("Normal", "Started", "The agent loop has started.")
    assert st.current_step is not None
    assert same_step(st.current_step, ex.step)
    assert st.attempts == 1


def test_start_keeps_an_existing_unknown_conditions_transition_time() -> None:
    status = AgentTaskStatus(conditions=(running_condition(since=T0),))
    patch = written(decide(make_state(status=status), NOW))
    assert patch["conditions"][0]["lastTransitionTime"] == ts(T0)
    assert patch["startTime"] == ts(NOW)


# --- 4. a step in flight whose result is stored → commit, never run it again -------------------


def test_llm_step_with_stored_result_is_committed() -> None:
    transcript = [llm(1, call("c1", "check_disk"), usage=usage(10, 5))]
    status = running(current_step=llm_step(1), attempts=2, last_error="x", iterations=0)
    state = make_state(status=status, transcript=transcript)
    action = decide(state, NOW)
    st = after(state, action)
    assert (st.iterations, st.tool_calls) == (1, 0)
    assert st.usage == usage(10, 5)
    assert st.last_error is None
    assert st.observed_generation == GEN
    # and the next step (the tool call) is what runs now, not LLM request 1 again
    ex = execute(action)
    assert ex.step.kind == "Tool"
    assert ex.step.tool_call_id == "c1"
    assert ex.attempt == 1
    assert st.attempts == 1


def test_tool_step_with_stored_result_is_committed() -> None:
    transcript = [llm(1, call("c1", "check_disk"), call("c2", "clean_logs")), tool(1, "c1")]
    status = running(transcript[:1], current_step=tool_step(1, "c1", "check_disk"), attempts=3)
    state = make_state(status=status, transcript=transcript)
    action = decide(state, NOW)
    st = after(state, action)
    assert (st.iterations, st.tool_calls) == (1, 1)
    ex = execute(action)
    assert ex.step.tool_call_id == "c2"
    assert ex.attempt == 1
    assert st.current_step is not None
    assert st.current_step.tool_call_id == "c2"


def test_commit_before_the_final_answer_ends_the_task() -> None:
    transcript = [
        llm(1, call("c1", "check_disk"), usage=usage(5, 5)),
        tool(1, "c1"),
        llm(2, content="done", usage=usage(7, 3)),
    ]
    status = running(transcript[:2], current_step=llm_step(2), attempts=1)
    state = make_state(status=status, transcript=transcript)
    action = write(decide(state, NOW))
    st = after(state, action)
    assert st.phase == "Succeeded"
    assert st.result == "done"
    assert (st.iterations, st.tool_calls, st.usage.total_tokens) == (2, 1, 20)
    assert st.current_step is None
    assert st.message == "The model answered after 2 LLM call(s)."


@pytest.mark.parametrize(
    ("attempts", "retry_at"),
    [(5, None), (9, None), (1, NOW + timedelta(hours=1)), (5, NOW + timedelta(seconds=1))],
    ids=["exhausted", "over-exhausted", "waiting", "waiting-and-exhausted"],
)
def test_stored_result_wins_over_wait_and_exhaustion(
    attempts: int, retry_at: datetime | None
) -> None:
    transcript = [llm(1, content="done")]
    status = running(
        current_step=llm_step(1),
        attempts=attempts,
        next_retry_time=retry_at,
        last_error="boom",
        iterations=0,
    )
    state = make_state(status=status, transcript=transcript)
    st = after(state, decide(state, NOW))
    assert st.phase == "Succeeded"
    assert st.reason == "Completed"
    assert st.iterations == 1


def test_stored_result_is_committed_even_when_suspended() -> None:
    transcript = [llm(1, call("c1", "check_disk"), usage=usage(1, 1))]
    status = running(current_step=llm_step(1), attempts=1, iterations=0, usage=Usage())
    state = make_state(status=status, transcript=transcript, suspend=True)
    action = decide(state, NOW)
    st = after(state, action)
    assert st.iterations == 1
    assert st.current_step is None
    assert st.phase == "Suspended"


def test_result_of_another_tool_call_does_not_count() -> None:
    transcript = [llm(1, call("c1", "check_disk"), call("c2", "clean_logs")), tool(1, "c2")]
    status = running(
        transcript, current_step=tool_step(1, "c1", "check_disk"), attempts=1, next_retry_time=T0
    )
    action = execute(decide(make_state(status=status, transcript=transcript), NOW))
    assert action.step.tool_call_id == "c1"
    assert action.attempt == 2


def test_llm_result_of_another_iteration_does_not_count() -> None:
    transcript = [llm(1, call("c1", "check_disk")), tool(1, "c1")]
    status = running(transcript, current_step=llm_step(2), attempts=1, next_retry_time=T0)
    action = execute(decide(make_state(status=status, transcript=transcript), NOW))
    assert same_step(action.step, llm_step(2))
    assert action.attempt == 2


def test_step_recorded_after_a_merged_commit_is_exactly_the_next_step() -> None:
    transcript = [llm(1, call("c1", "check_disk")), tool(1, "c1")]
    status = running(transcript[:1], current_step=tool_step(1, "c1", "check_disk"), attempts=1)
    state = make_state(status=status, transcript=transcript)
    action = execute(decide(state, NOW))
    assert action.step.kind == "LLM"
    assert after(state, action).current_step == action.step


# --- 5. a step in flight without result → wait, give up, or run again --------------------------


@pytest.mark.parametrize(
    "delta", [timedelta(microseconds=1), timedelta(seconds=3), timedelta(days=2)]
)
def test_step_waits_for_its_retry_time(delta: timedelta) -> None:
    at = NOW + delta
    status = running(current_step=llm_step(1), attempts=2, next_retry_time=at, last_error="503")
    action = decide(make_state(status=status), NOW)
    assert action == Wait(at, "retry LLM request 1")


def test_tool_step_wait_names_the_tool() -> None:
    transcript = [llm(1, call("c1", "check_disk"))]
    at = NOW + timedelta(seconds=5)
    status = running(
        transcript, current_step=tool_step(1, "c1", "check_disk"), attempts=1, next_retry_time=at
    )
    action = decide(make_state(status=status, transcript=transcript), NOW)
    assert action == Wait(at, "retry tool call 'check_disk' (c1) of iteration 1")


@pytest.mark.parametrize(
    "retry_at",
    [NOW, NOW - timedelta(microseconds=1), NOW - timedelta(days=1)],
    ids=["exactly-now", "just-passed", "long-passed"],
)
@pytest.mark.parametrize("attempts", [0, 1, 4])
def test_step_runs_its_next_attempt(retry_at: datetime | None, attempts: int) -> None:
    step = llm_step(1, start=T0)
    status = running(current_step=step, attempts=attempts, next_retry_time=retry_at)
    action = execute(decide(make_state(status=status), NOW))
    assert action.step == step  # same step, original start time kept
    assert action.attempt == attempts + 1
    assert action.timeout == 120.0
    assert action.intent == {
        "currentStep": {
            "toolCallId": None,
            "toolName": None,
            "kind": "LLM",
            "iteration": 1,
            "startTime": ts(T0),
        },
        "attempts": attempts + 1,
        "nextRetryTime": None,
        "observedGeneration": GEN,
    }


def test_in_flight_step_without_start_time_gets_now() -> None:
    status = running(current_step=llm_step(1, start=None), attempts=1)
    action = execute(decide(make_state(status=status), NOW))
    assert action.intent["currentStep"]["startTime"] == ts(NOW)


def test_tool_step_intent_carries_the_tool() -> None:
    transcript = [llm(1, call("c1", "check_disk"))]
    status = running(
        transcript, current_step=tool_step(1, "c1", "check_disk"), attempts=1, next_retry_time=T0
    )
    action = execute(decide(make_state(status=status, transcript=transcript), NOW))
    assert action.intent["currentStep"] == {
        "kind": "Tool",
        "iteration": 1,
        "toolCallId": "c1",
        "toolName": "check_disk",
        "startTime": ts(T0),
    }
    assert action.attempt == 2


@pytest.mark.parametrize(("max_attempts", "attempts"), [(1, 1), (5, 5), (5, 6), (3, 100)])
def test_attempts_exhausted_fail_the_task(max_attempts: int, attempts: int) -> None:
    status = running(
        current_step=llm_step(2), attempts=attempts, last_error="HTTP 503: busy", next_retry_time=T0
    )
    state = make_state(status=status, retry=RetryPolicy(max_attempts=max_attempts))
    action = write(decide(state, NOW))
    patch = action.patch
    msg = f"LLM request 2 failed {attempts} time(s); last error: HTTP 503: busy"
    assert (patch["phase"], patch["reason"], patch["message"]) == (
        "Failed",
        "RetriesExhausted",
        msg,
    )
    assert patch["completionTime"] == ts(NOW)
    assert patch["conditions"][0]["status"] == "False"
    assert action.event == Event("Warning", "RetriesExhausted", msg)
    assert after(state, action).current_step is None


@pytest.mark.parametrize("attempts", [1, 5])
def test_an_interrupted_attempt_runs_again_without_using_up_attempts(attempts: int) -> None:
    """An intent without an outcome: the operator stopped while the attempt ran."""
    status = running(current_step=llm_step(1), attempts=attempts, interruptions=1)
    action = execute(decide(make_state(status=status), NOW))
    assert action.attempt == attempts  # the same attempt, even the last one allowed
    assert action.intent["attempts"] == attempts
    assert action.intent["interruptions"] == 2
    assert action.event is not None and action.event.reason == "Interrupted"
    assert "attempt " + str(attempts) + " was interrupted (2 of 5 allowed)" in action.event.message


def test_a_step_that_keeps_getting_interrupted_fails_step_interrupted() -> None:
    status = running(current_step=tool_step(1, "c1", "check_disk"), attempts=2, interruptions=3)
    transcript = [llm(1, call("c1", "check_disk"))]
    state = make_state(status=status, transcript=transcript, max_interruptions=3)
    patch = write(decide(state, NOW)).patch
    assert (patch["phase"], patch["reason"]) == ("Failed", "StepInterrupted")
    assert "tool call 'check_disk' (c1) of iteration 1 was interrupted 3 time(s)" in patch["error"]
    assert "maxInterruptions=3" in patch["error"]


def test_a_commit_forgets_the_interruptions_of_the_step_before() -> None:
    transcript = [llm(1, call("c1", "check_disk")), tool(1, "c1")]
    status = running(
        transcript[:1], current_step=tool_step(1, "c1", "check_disk"), attempts=1, interruptions=2
    )
    state = make_state(status=status, transcript=transcript)
    assert after(state, decide(state, NOW)).interruptions == 0


def test_one_below_max_attempts_still_runs() -> None:
    status = running(current_step=llm_step(1), attempts=4, last_error="x", next_retry_time=T0)
    assert execute(decide(make_state(status=status), NOW)).attempt == 5


# --- stale counters ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stale",
    [{"iterations": 0}, {"tool_calls": 0}, {"usage": Usage()}, {"iterations": 5, "tool_calls": 9}],
    ids=["iterations", "tool-calls", "usage", "too-high"],
)
def test_stale_counters_are_brought_up_to_date(stale: dict[str, Any]) -> None:
    transcript = [
        llm(1, call("c1", "check_disk"), usage=usage(100, 20)),
        tool(1, "c1"),
        llm(2, call("c2", "clean_logs"), usage=usage(150, 30)),
    ]
    state = make_state(status=running(transcript, **stale), transcript=transcript)
    action = decide(state, NOW)
    st = after(state, action)
    assert (st.iterations, st.tool_calls) == (2, 1)
    assert st.usage == Usage(prompt_tokens=250, completion_tokens=50, total_tokens=300)
    assert execute(action).step.tool_call_id == "c2"


# --- 6. the next step --------------------------------------------------------------------------


def test_first_step_of_a_started_task_is_llm_request_one() -> None:
    action = execute(decide(make_state(status=running()), NOW))
    assert action.step == Step(kind="LLM", iteration=1, start_time=NOW_S)
    assert action.attempt == 1
    assert action.timeout == 120.0
    assert action.intent == {
        "currentStep": {
            "toolCallId": None,
            "toolName": None,
            "kind": "LLM",
            "iteration": 1,
            "startTime": ts(NOW),
        },
        "attempts": 1,
        "nextRetryTime": None,
        "observedGeneration": GEN,
    }


def test_tool_calls_run_in_order() -> None:
    calls = [call("c1", "check_disk"), call("c2", "clean_logs"), call("c3", "echo")]
    transcript: list[Entry] = [llm(1, *calls)]
    for expected_id, expected_name in [("c1", "check_disk"), ("c2", "clean_logs"), ("c3", "echo")]:
        state = make_state(status=running(transcript), transcript=transcript)
        action = execute(decide(state, NOW))
        assert action.step == Step(
            kind="Tool",
            iteration=1,
            tool_call_id=expected_id,
            tool_name=expected_name,
            start_time=NOW_S,
        )
        assert action.attempt == 1
        assert action.intent["currentStep"]["toolCallId"] == expected_id
        transcript.append(tool(1, expected_id))
    state = make_state(status=running(transcript), transcript=transcript)
    assert execute(decide(state, NOW)).step == Step(kind="LLM", iteration=2, start_time=NOW_S)


def test_tool_calls_answered_out_of_order_pick_the_first_unanswered() -> None:
    transcript = [llm(1, call("c1", "a"), call("c2", "b"), call("c3", "c")), tool(1, "c2")]
    state = make_state(status=running(transcript), transcript=transcript)
    assert execute(decide(state, NOW)).step.tool_call_id == "c1"


def test_next_llm_iteration_after_all_tool_results() -> None:
    transcript = [
        llm(1, call("c1", "check_disk")),
        tool(1, "c1"),
        llm(2, call("c2", "clean_logs"), call("c3", "check_disk")),
        tool(2, "c2"),
        tool(2, "c3"),
    ]
    state = make_state(status=running(transcript), transcript=transcript)
    action = execute(decide(state, NOW))
    assert action.step == Step(kind="LLM", iteration=3, start_time=NOW_S)
    assert action.intent["currentStep"] == {
        "toolCallId": None,
        "toolName": None,
        "kind": "LLM",
        "iteration": 3,
        "startTime": ts(NOW),
    }


@pytest.mark.parametrize("finish", ["stop", None, "tool_calls", "something_else"])
def test_final_answer_succeeds(finish: str | None) -> None:
    transcript = [
        llm(1, call("c1", "check_disk")),
        tool(1, "c1"),
        Entry(
            kind="LLM",
            iteration=2,
            message={"role": "assistant", "content": "Freed 3 GB."},
            finish_reason=finish,
        ),
    ]
    state = make_state(status=running(transcript), transcript=transcript)
    action = write(decide(state, NOW))
    assert action.why == "final answer"
    patch = action.patch
    assert (patch["phase"], patch["reason"]) == ("Succeeded", "Completed")
    assert patch["result"] == "Freed 3 GB."
    assert patch["message"] == "The model answered after 2 LLM call(s)."
    assert patch["completionTime"] == ts(NOW)
    assert patch["observedGeneration"] == GEN
    assert "error" not in patch
    [cond] = patch["conditions"]
    assert (cond["status"], cond["reason"], cond["lastTransitionTime"]) == (
        "True",
        "Completed",
        ts(NOW),
    )
    assert action.event == Event("Normal", "Succeeded", patch["message"])
    st = after(state, action)
    assert (st.current_step, st.next_retry_time) == (None, None)


def test_final_answer_without_content_has_empty_result() -> None:
    transcript = [llm(1, content=None)]
    patch = write(decide(make_state(status=running(transcript), transcript=transcript), NOW)).patch
    assert patch["phase"] == "Succeeded"
    assert patch["result"] == ""


def test_final_answer_with_empty_tool_call_list_is_an_answer() -> None:
    entry = Entry(
        kind="LLM",
        iteration=1,
        message={"role": "assistant", "content": "hi", "tool_calls": []},
        finish_reason="stop",
    )
    state = make_state(status=running([entry]), transcript=[entry])
    assert write(decide(state, NOW)).patch["result"] == "hi"


def test_long_final_answer_is_clipped_in_status() -> None:
    content = "x" * (RESULT_LIMIT + 10)
    transcript = [llm(1, content=content)]
    patch = write(decide(make_state(status=running(transcript), transcript=transcript), NOW)).patch
    assert len(patch["result"]) == RESULT_LIMIT
    assert patch["result"].endswith(f"[truncated, {len(content)} characters in all]")


def test_truncated_answer_fails_with_output_truncated() -> None:
    transcript = [llm(1, content="The answer is 4", finish="length")]
    action = write(decide(make_state(status=running(transcript), transcript=transcript), NOW))
    patch = action.patch
    assert (patch["phase"], patch["reason"]) == ("Failed", "OutputTruncated")
    assert patch["result"] == "The answer is 4"
    assert "finish_reason=length" in patch["message"]
    assert patch["error"] == patch["message"]
    assert patch["conditions"][0]["status"] == "False"
    assert action.event == Event("Warning", "OutputTruncated", patch["message"])


def test_filtered_answer_fails_with_content_filtered_and_no_result() -> None:
    transcript = [llm(1, content="[withheld]", finish="content_filter")]
    action = write(decide(make_state(status=running(transcript), transcript=transcript), NOW))
    patch = action.patch
    assert (patch["phase"], patch["reason"]) == ("Failed", "ContentFiltered")
    assert "result" not in patch
    assert "content filter" in patch["message"]
    assert action.event is not None
    assert action.event.reason == "ContentFiltered"


def test_length_with_tool_calls_still_runs_the_tools() -> None:
    transcript = [llm(1, call("c1", "check_disk"), finish="length")]
    state = make_state(status=running(transcript), transcript=transcript)
    assert execute(decide(state, NOW)).step.kind == "Tool"


def _iterations_of_tools(n: int) -> list[Entry]:
    transcript: list[Entry] = []
    for i in range(1, n + 1):
        transcript += [llm(i, call(f"c{i}", "check_disk")), tool(i, f"c{i}")]
    return transcript


@pytest.mark.parametrize("max_iterations", [1, 2, 3, 10])
def test_max_iterations_exceeded(max_iterations: int) -> None:
    transcript = _iterations_of_tools(max_iterations)
    state = make_state(
        status=running(transcript), transcript=transcript, max_iterations=max_iterations
    )
    patch = write(decide(state, NOW)).patch
    assert (patch["phase"], patch["reason"]) == ("Failed", "MaxIterationsExceeded")
    assert f"maxIterations={max_iterations}" in patch["message"]


@pytest.mark.parametrize("max_iterations", [2, 3, 10])
def test_last_allowed_iteration_still_runs(max_iterations: int) -> None:
    transcript = _iterations_of_tools(max_iterations - 1)
    state = make_state(
        status=running(transcript), transcript=transcript, max_iterations=max_iterations
    )
    assert execute(decide(state, NOW)).step.iteration == max_iterations


def test_tool_calls_of_the_last_allowed_iteration_still_run() -> None:
    transcript = [llm(1, call("c1", "check_disk"))]
    state = make_state(status=running(transcript), transcript=transcript, max_iterations=1)
    assert execute(decide(state, NOW)).step.tool_call_id == "c1"


def test_final_answer_at_max_iterations_succeeds() -> None:
    transcript = [llm(1, call("c1", "check_disk")), tool(1, "c1"), llm(2, content="done")]
    state = make_state(status=running(transcript), transcript=transcript, max_iterations=2)
    assert write(decide(state, NOW)).patch["phase"] == "Succeeded"


# --- budget ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("limit", "stops"), [(100, True), (120, True), (121, False)])
def test_token_budget_is_checked_before_an_llm_request(limit: int, stops: bool) -> None:
    transcript = [llm(1, call("c1", "check_disk"), usage=usage(100, 20)), tool(1, "c1")]
    state = make_state(
        status=running(transcript),
        transcript=transcript,
        budget=Budget(max_total_tokens=limit),
    )
    action = decide(state, NOW)
    if stops:
        patch = write(action).patch
        assert (patch["phase"], patch["reason"]) == ("Failed", "BudgetExceeded")
        assert f"budget.maxTotalTokens={limit}" in patch["message"]
        assert "before LLM request 2" in patch["message"]
    else:
        assert execute(action).step.kind == "LLM"


def test_token_budget_does_not_stop_tool_calls_or_the_answer() -> None:
    transcript = [llm(1, call("c1", "check_disk"), usage=usage(500, 500))]
    state = make_state(
        status=running(transcript), transcript=transcript, budget=Budget(max_total_tokens=10)
    )
    assert execute(decide(state, NOW)).step.kind == "Tool"
    answered = [llm(1, content="hi", usage=usage(500, 500))]
    state = make_state(
        status=running(answered), transcript=answered, budget=Budget(max_total_tokens=10)
    )
    assert write(decide(state, NOW)).patch["phase"] == "Succeeded"


@pytest.mark.parametrize(("limit", "stops"), [(0, True), (1, True), (2, False)])
def test_tool_call_budget_is_checked_before_a_tool_call(limit: int, stops: bool) -> None:
    transcript = [llm(1, call("c1", "check_disk"), call("c2", "clean_logs")), tool(1, "c1")]
    state = make_state(
        status=running(transcript), transcript=transcript, budget=Budget(max_tool_calls=limit)
    )
    action = decide(state, NOW)
    if stops:
        patch = write(action).patch
        assert patch["reason"] == "BudgetExceeded"
        assert f"budget.maxToolCalls={limit}" in patch["message"]
        assert "'clean_logs' (c2)" in patch["message"]
    else:
        assert execute(action).step.tool_call_id == "c2"


# --- suspend / resume --------------------------------------------------------------------------


def test_suspend_records_the_suspension() -> None:
    state = make_state(status=running(), suspend=True)
    action = write(decide(state, NOW))
    patch = action.patch
    assert patch["phase"] == "Suspended"
    assert patch["suspendedSince"] == ts_ms(NOW)
    assert patch["observedGeneration"] == GEN
    [cond] = patch["conditions"]
    assert (cond["status"], cond["reason"]) == ("Unknown", "Suspended")
    assert cond["lastTransitionTime"] == ts(T0)  # still Unknown: no transition
    assert action.event is not None
    assert action.event.reason == "Suspended"


def test_suspended_task_waits_for_a_change() -> None:
    status = running(phase="Suspended", suspended_since=T0)
    action = decide(make_state(status=status, suspend=True), NOW)
    assert isinstance(action, Wait)
    assert action.until is None


def test_suspended_before_start_never_starts() -> None:
    state = make_state(suspend=True)
    st = after(state, decide(state, NOW))
    assert st.phase == "Suspended"
    assert st.start_time is None


def test_resume_adds_up_suspended_time_and_carries_on() -> None:
    since = NOW - timedelta(seconds=90)
    status = running(
        phase="Suspended", suspended_since=since, suspended_seconds=10.5, next_retry_time=None
    )
    state = make_state(status=status)
    action = decide(state, NOW)
    st = after(state, action)
    assert st.phase == "Running"
    assert st.suspended_since is None
    assert st.suspended_seconds == pytest.approx(100.5)
    ex = execute(action)
    assert ex.step.kind == "LLM"
    assert ex.event is not None
    assert ex.event.reason == "Resumed"


def test_resume_before_start_then_starts() -> None:
    status = AgentTaskStatus.model_validate({"phase": "Suspended", "suspendedSince": ts_ms(T0)})
    state = make_state(status=status)
    action = decide(state, NOW)
    st = after(state, action)
    assert st.phase == "Running"
    assert st.start_time == NOW.replace(microsecond=0)
    assert st.suspended_seconds == pytest.approx((NOW - T0).total_seconds(), abs=1e-3)
    assert same_step(execute(action).step, llm_step(1))


# --- activeDeadlineSeconds ---------------------------------------------------------------------

ELAPSED = (NOW - T0).total_seconds()  # 330.123456


@pytest.mark.parametrize("deadline", [1.0, 330.0, ELAPSED])
def test_deadline_passed_fails_the_task(deadline: float) -> None:
    status = running(current_step=llm_step(1), attempts=1, last_error="HTTP 503")
    action = write(decide(make_state(status=status, active_deadline_seconds=deadline), NOW))
    patch = action.patch
    assert (patch["phase"], patch["reason"]) == ("Failed", "DeadlineExceeded")
    assert patch["message"] == (f"activeDeadlineSeconds={deadline:g} passed; last error: HTTP 503")


def test_suspended_time_does_not_count_against_the_deadline() -> None:
    status = running(suspended_seconds=100.0)
    action = execute(decide(make_state(status=status, active_deadline_seconds=300.0), NOW))
    assert action.timeout == pytest.approx(400.0 - ELAPSED)


@pytest.mark.parametrize(
    ("deadline", "timeout"), [(None, 120.0), (10_000.0, 120.0), (400.0, 400.0 - ELAPSED)]
)
def test_attempt_timeout_is_cut_short_by_the_deadline(
    deadline: float | None, timeout: float
) -> None:
    state = make_state(status=running(), active_deadline_seconds=deadline)
    assert execute(decide(state, NOW)).timeout == pytest.approx(timeout)


# --- conditions and observedGeneration ---------------------------------------------------------


def test_failing_keeps_transition_time_of_an_existing_false_condition() -> None:
    old = Condition(
        type="Succeeded",
        status="False",
        reason="Old",
        last_transition_time=T0,
        observed_generation=1,
    )
    status = running(conditions=(old,))
    patch = write(decide(make_state(status=status, tools=[ToolSpec(name="x")]), NOW)).patch
    [cond] = patch["conditions"]
    assert (cond["status"], cond["reason"]) == ("False", "UnknownTool")
    assert cond["lastTransitionTime"] == ts(T0)
    assert cond["observedGeneration"] == GEN


def test_succeeding_from_unknown_moves_transition_time() -> None:
    transcript = [llm(1, content="ok")]
    state = make_state(status=running(transcript), transcript=transcript)
    assert write(decide(state, NOW)).patch["conditions"][0]["lastTransitionTime"] == ts(NOW)


def test_other_condition_types_do_not_count() -> None:
    other = Condition(type="Ready", status="False", reason="X", last_transition_time=T0)
    status = running(conditions=(other,))
    patch = write(decide(make_state(status=status, tools=[ToolSpec(name="x")]), NOW)).patch
    assert patch["conditions"][0]["lastTransitionTime"] == ts(NOW)


def _every_kind_of_state() -> list[tuple[str, TaskState]]:
    convo = [llm(1, call("c1", "check_disk")), tool(1, "c1")]
    done = [*convo, llm(2, content="x")]
    spent = [llm(1, call("c1", "check_disk"), usage=Usage(total_tokens=15)), tool(1, "c1")]
    return [
        ("unknown-tool", make_state(tools=[ToolSpec(name="zz")])),
        ("start", make_state()),
        ("commit", make_state(status=running(current_step=llm_step(1)), transcript=convo)),
        ("exhausted", make_state(status=running(current_step=llm_step(1), attempts=5))),
        ("retry-attempt", make_state(status=running(current_step=llm_step(1), attempts=1))),
        ("stale", make_state(status=running(), transcript=convo)),
        ("next-llm", make_state(status=running(convo), transcript=convo)),
        ("next-tool", make_state(status=running(convo[:1]), transcript=convo[:1])),
        ("final", make_state(status=running(done), transcript=done)),
        (
            "truncated",
            make_state(
                status=running([llm(1, finish="length")]), transcript=[llm(1, finish="length")]
            ),
        ),
        (
            "filtered",
            make_state(
                status=running([llm(1, finish="content_filter")]),
                transcript=[llm(1, finish="content_filter")],
            ),
        ),
        ("max-iterations", make_state(status=running(convo), transcript=convo, max_iterations=1)),
        ("suspend", make_state(status=running(), suspend=True)),
        ("resume", make_state(status=running(phase="Suspended", suspended_since=T0))),
        ("deadline", make_state(status=running(), active_deadline_seconds=5)),
        (
            "budget",
            make_state(status=running(spent), transcript=spent, budget=Budget(max_total_tokens=15)),
        ),
    ]


EVERY_STATE = _every_kind_of_state()
IDS = [k for k, _ in EVERY_STATE]


@pytest.mark.parametrize(("kind", "state"), EVERY_STATE, ids=IDS)
def test_every_patch_records_the_observed_generation(kind: str, state: TaskState) -> None:
    patch = written(decide(state, NOW))
    assert patch["observedGeneration"] == GEN == state.generation
    for cond in patch.get("conditions", []):
        assert cond["observedGeneration"] == GEN


@pytest.mark.parametrize(("kind", "state"), EVERY_STATE, ids=IDS)
def test_decide_is_deterministic_and_pure(kind: str, state: TaskState) -> None:
    before = copy.deepcopy(state)
    first = decide(state, NOW)
    written(first)["phase"] = "tampered"  # a caller mutating its patch changes nothing later
    second = decide(state, NOW)
    third = decide(copy.deepcopy(before), NOW)
    assert second == third
    assert state == before


def test_decide_does_not_mutate_transcript_messages() -> None:
    transcript = [llm(1, call("c1", "check_disk"), call("c2", "clean_logs")), tool(1, "c1")]
    snapshot = copy.deepcopy([e.message for e in transcript])
    decide(make_state(status=running(transcript), transcript=transcript), NOW)
    assert [e.message for e in transcript] == snapshot


# --- on_failure --------------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", [1, 3, 5, 50])
@pytest.mark.parametrize(
    "reason", ["ModelAuthFailed", "ModelNotFound", "ModelRequestInvalid", "StepFailed"]
)
def test_permanent_failure_ends_the_task(attempt: int, reason: str) -> None:
    state = make_state(status=running(current_step=llm_step(1), attempts=attempt))
    failure = Failure("HTTP 401: bad key", transient=False, reason=reason, retry_after=30)
    action = on_failure(state, llm_step(1), attempt, failure, NOW, 0.5)
    patch = action.patch
    assert (patch["phase"], patch["reason"]) == ("Failed", reason)
    assert patch["message"] == "LLM request 1 failed: HTTP 401: bad key"
    assert patch["error"] == patch["message"]
    assert patch["completionTime"] == ts(NOW)
    assert patch["conditions"][0]["reason"] == reason
    assert patch["observedGeneration"] == GEN
    assert action.event == Event("Warning", reason, patch["message"])
    assert after(state, action).current_step is None


def test_permanent_tool_failure_names_the_tool() -> None:
    step = tool_step(2, "call_9", "clean_logs")
    action = on_failure(make_state(status=running()), step, 1, Failure("nope", False), NOW, 0)
    assert action.patch["message"] == "tool call 'clean_logs' (call_9) of iteration 2 failed: nope"
    assert action.patch["reason"] == "StepFailed"


@pytest.mark.parametrize(("attempt", "seconds"), [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0)])
def test_transient_failure_schedules_a_retry(attempt: int, seconds: float) -> None:
    state = make_state(status=running(current_step=llm_step(1), attempts=attempt))
    action = on_failure(state, llm_step(1), attempt, Failure("HTTP 503", True), NOW, 0.0)
    at = NOW + timedelta(seconds=seconds)
    assert action.patch == {
        "attempts": attempt,
        "lastError": "HTTP 503",
        "nextRetryTime": ts_ms(at),
    }
    assert action.event is not None
    assert action.event.type == "Warning"
    assert action.event.reason == "Retrying"
    assert f"retry in {seconds:.1f}s" in action.event.message
    st = after(state, action)
    assert st.phase == "Running"
    assert st.current_step == llm_step(1)  # the step stays in flight until it is retried


@pytest.mark.parametrize(("jitter", "factor"), [(0.5, 0.9), (0.999999, 0.8000002), (1.0, 0.8)])
def test_transient_failure_jitter_shortens_the_delay(jitter: float, factor: float) -> None:
    policy = RetryPolicy(max_attempts=5, initial_backoff_seconds=10.0)
    state = make_state(status=running(), retry=policy)
    action = on_failure(state, llm_step(1), 1, Failure("x", True), NOW, jitter)
    assert action.patch["nextRetryTime"] == ts_ms(NOW + timedelta(seconds=10.0 * factor))


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [(None, 4.0), (0.0, 4.0), (3.999, 4.0), (4.0, 4.0), (4.5, 4.5), (120.0, 120.0)],
)
def test_transient_failure_honours_a_longer_retry_after(
    retry_after: float | None, expected: float
) -> None:
    state = make_state(status=running())
    failure = Failure("HTTP 429", True, "ModelUnavailable", retry_after)
    action = on_failure(state, llm_step(1), 3, failure, NOW, 0.0)  # backoff: 4 s
    assert action.patch["nextRetryTime"] == ts_ms(NOW + timedelta(seconds=expected))


def test_transient_failure_backoff_is_capped() -> None:
    state = make_state(
        status=running(), retry=RetryPolicy(max_attempts=100, max_backoff_seconds=60)
    )
    action = on_failure(state, llm_step(1), 30, Failure("x", True), NOW, 0.0)
    assert action.patch["nextRetryTime"] == ts_ms(NOW + timedelta(seconds=60))


def test_transient_failure_clips_a_long_error() -> None:
    state = make_state(status=running())
    action = on_failure(state, llm_step(1), 1, Failure("e" * 10_000, True), NOW, 0.0)
    assert len(action.patch["lastError"]) == MESSAGE_LIMIT
    assert "phase" not in action.patch


@pytest.mark.parametrize(("max_attempts", "attempt"), [(1, 1), (5, 5), (5, 7)])
def test_transient_failure_at_max_attempts_gives_up(max_attempts: int, attempt: int) -> None:
    state = make_state(status=running(), retry=RetryPolicy(max_attempts=max_attempts))
    failure = Failure("HTTP 502: bad gateway", True, "ModelUnavailable", 1.0)
    action = on_failure(state, llm_step(3), attempt, failure, NOW, 0.3)
    patch = action.patch
    assert (patch["phase"], patch["reason"]) == ("Failed", "RetriesExhausted")
    assert patch["message"] == (
        f"LLM request 3 failed {attempt} time(s); last error: HTTP 502: bad gateway"
    )
    assert after(state, action).next_retry_time is None


def test_transient_retry_never_goes_beyond_the_deadline() -> None:
    state = make_state(status=running(), active_deadline_seconds=ELAPSED + 2.0)
    failure = Failure("HTTP 429", True, "ModelUnavailable", retry_after=60.0)
    action = on_failure(state, llm_step(1), 1, failure, NOW, 0.0)
    assert action.patch["nextRetryTime"] == ts_ms(NOW + timedelta(seconds=2))


@pytest.mark.parametrize("transient", [True, False])
def test_failure_after_the_deadline_is_deadline_exceeded(transient: bool) -> None:
    state = make_state(status=running(), active_deadline_seconds=60.0)
    action = on_failure(state, llm_step(2), 1, Failure("timeout", transient), NOW, 0.0)
    patch = action.patch
    assert (patch["phase"], patch["reason"]) == ("Failed", "DeadlineExceeded")
    assert patch["message"] == "activeDeadlineSeconds=60 passed during LLM request 2: timeout"


def test_on_failure_is_deterministic_and_pure() -> None:
    state = make_state(status=running(current_step=llm_step(1), attempts=2))
    before = copy.deepcopy(state)
    failure = Failure("boom", True, retry_after=2.5)
    a = on_failure(state, llm_step(1), 2, failure, NOW, 0.25)
    b = on_failure(state, llm_step(1), 2, failure, NOW, 0.25)
    assert a == b
    assert state == before


def test_huge_retry_after_does_not_crash_on_failure() -> None:
    state = make_state(status=running())
    failure = Failure("HTTP 429", True, "ModelUnavailable", retry_after=1e12)
    patch = on_failure(state, llm_step(1), 1, failure, NOW, 0.0).patch
    assert "nextRetryTime" in patch


# --- the loop, simulated: decide → act → decide, as the runner does ----------------------------

Model = Callable[[int], Entry]


def scripted_model(iteration: int) -> Entry:
    """Iteration 1: two tool calls; iteration 2: one; iteration 3: the answer."""
    u = usage(10 * iteration, iteration)
    if iteration == 1:
        return llm(1, call("a", "check_disk"), call("b", "echo"), usage=u)
    if iteration == 2:
        return llm(2, call("c", "clean_logs"), usage=u)
    return llm(iteration, content="all done", usage=u)


def run_loop(
    state: TaskState,
    model: Model = scripted_model,
    *,
    fail: Callable[[Step, int], Failure | None] = lambda step, attempt: None,
    limit: int = 200,
) -> tuple[TaskState, list[str]]:
    """Drive ``decide`` to the end, with the clock advancing to each Wait."""
    clock = NOW
    log: list[str] = []
    for _ in range(limit):
        action = decide(state, clock)
        if isinstance(action, Noop | Delete):
            return state, log
        if isinstance(action, WriteStatus):
            log.append(f"write:{action.why}")
            state = replace(state, status=apply(state.status, action.patch))
        elif isinstance(action, Wait):
            assert action.until is not None
            log.append("wait")
            clock = action.until
        else:
            step = action.step
            name = step.kind if step.kind == "LLM" else f"Tool({step.tool_call_id})"
            log.append(f"exec:{name}:{step.iteration}:{action.attempt}")
            state = replace(state, status=apply(state.status, action.intent))
            ran = state  # the batch sees the task as its intent stored it
            for extra in action.extras:  # run alongside, each with its own outcome
                log.append(f"exec:Tool({extra.tool_call_id}):{extra.iteration}:1 alongside")
            batch = [(step, action.attempt), *((x, 1) for x in action.extras)]
            failures = [fail(s, attempt) for s, attempt in batch]
            for (s, _), failure in zip(batch, failures, strict=True):
                if failure is None:
                    entry = (
                        model(s.iteration)
                        if s.kind == "LLM"
                        else tool(s.iteration, s.tool_call_id or "", "42")
                    )
                    state = replace(state, transcript=(*state.transcript, entry))
            if any(f is not None for f in failures):
                failed = on_batch_failure(ran, action, failures, clock, [0.0] * len(failures))
                state = replace(state, status=apply(state.status, failed.patch))
        clock += timedelta(milliseconds=1)
    raise AssertionError(f"no end after {limit} actions: {log}")


def executed(log: list[str]) -> list[str]:
    return [line for line in log if line.startswith("exec:")]


def test_whole_conversation_runs_to_success() -> None:
    final, log = run_loop(make_state())
    st = final.status
    assert (st.phase, st.reason, st.result) == ("Succeeded", "Completed", "all done")
    assert (st.iterations, st.tool_calls) == (3, 3)
    assert st.usage == Usage(prompt_tokens=60, completion_tokens=6, total_tokens=66)
    assert (st.current_step, st.attempts) == (None, 0)
    assert executed(log) == [
        "exec:LLM:1:1",
        "exec:Tool(a):1:1",
        "exec:Tool(b):1:1 alongside",
        "exec:LLM:2:1",
        "exec:Tool(c):2:1",
        "exec:LLM:3:1",
    ]
    assert (st.interruptions, st.parallel_calls) == (0, ())


def test_one_call_at_a_time_when_parallel_calls_are_off() -> None:
    final, log = run_loop(make_state(max_parallel_tool_calls=1))
    assert final.status.phase == "Succeeded"
    assert executed(log) == [
        "exec:LLM:1:1",
        "exec:Tool(a):1:1",
        "exec:Tool(b):1:1",
        "exec:LLM:2:1",
        "exec:Tool(c):2:1",
        "exec:LLM:3:1",
    ]


def test_transient_failures_are_retried_after_waiting() -> None:
    def fail(step: Step, attempt: int) -> Failure | None:
        if step.tool_call_id == "b" and attempt < 3:
            return Failure("HTTP 503", True, "ToolUnavailable")
        return None

    final, log = run_loop(make_state(), fail=fail)
    assert final.status.phase == "Succeeded"
    assert log.count("wait") == 2
    assert [line for line in log if line.startswith("exec:Tool(b)")] == [
        "exec:Tool(b):1:1 alongside",
        "exec:Tool(b):1:2",
        "exec:Tool(b):1:3",
    ]
    assert final.status.last_error is None


def test_persistent_transient_failure_exhausts_retries() -> None:
    final, log = run_loop(
        make_state(retry=RetryPolicy(max_attempts=3)),
        fail=lambda step, attempt: Failure("HTTP 500", True),
    )
    assert (final.status.phase, final.status.reason) == ("Failed", "RetriesExhausted")
    assert executed(log) == ["exec:LLM:1:1", "exec:LLM:1:2", "exec:LLM:1:3"]


def test_permanent_failure_stops_at_once() -> None:
    final, log = run_loop(
        make_state(), fail=lambda step, attempt: Failure("HTTP 401", False, "ModelAuthFailed")
    )
    assert (final.status.phase, final.status.reason) == ("Failed", "ModelAuthFailed")
    assert executed(log) == ["exec:LLM:1:1"]


def test_resume_after_crash_between_intent_and_result_runs_the_step_again() -> None:
    transcript = [llm(1, call("a", "check_disk"), call("b", "echo"))]
    crashed = running(transcript, current_step=tool_step(1, "a", "check_disk"), attempts=1)
    final, log = run_loop(make_state(status=crashed, transcript=transcript))
    assert executed(log)[0] == "exec:Tool(a):1:1"  # the interrupted attempt, again
    assert final.status.phase == "Succeeded"


def test_resume_after_crash_between_result_and_commit_never_runs_the_step_again() -> None:
    transcript = [llm(1, call("a", "check_disk"), call("b", "echo")), tool(1, "a")]
    crashed = running(transcript[:1], current_step=tool_step(1, "a", "check_disk"), attempts=1)
    final, log = run_loop(make_state(status=crashed, transcript=transcript))
    assert not any(line.startswith("exec:Tool(a)") for line in log)
    assert executed(log)[0] == "exec:Tool(b):1:1"
    assert final.status.phase == "Succeeded"
    assert final.status.tool_calls == 3


@pytest.mark.parametrize("crash_after", range(12))
def test_restarting_decide_anywhere_reaches_the_same_end(crash_after: int) -> None:
    """Level-triggered: cutting the run anywhere and starting over from state gives one result."""
    reference, _ = run_loop(make_state())
    state = make_state()
    clock = NOW
    for _ in range(crash_after):  # run part of the way, then "restart" from the stored state
        action = decide(state, clock)
        if isinstance(action, WriteStatus):
            state = replace(state, status=apply(state.status, action.patch))
        elif isinstance(action, Execute):
            state = replace(state, status=apply(state.status, action.intent))
            step = action.step
            entry = (
                scripted_model(step.iteration)
                if step.kind == "LLM"
                else tool(step.iteration, step.tool_call_id or "", "42")
            )
            state = replace(state, transcript=(*state.transcript, entry))
        else:
            break
        clock += timedelta(milliseconds=1)
    final, _ = run_loop(state)
    for field in ("phase", "reason", "result", "iterations", "tool_calls", "usage"):
        assert getattr(final.status, field) == getattr(reference.status, field)
    assert [e.message for e in final.transcript] == [e.message for e in reference.transcript]


def test_a_wait_sleeps_until_its_time_and_never_a_negative_time() -> None:
    assert Wait(NOW + timedelta(seconds=2.5), "later").seconds(NOW) == 2.5
    assert Wait(NOW - timedelta(seconds=1), "overdue").seconds(NOW) == 0.0
    assert Wait(None, "until the task changes").seconds(NOW) is None
