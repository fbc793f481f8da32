"""Status merge patches: start, intent, commit and finish. Pure: ``now`` is passed in.

Status = the ``Succeeded`` condition (True / False / Unknown, CamelCase reason,
observedGeneration) plus ``phase``, derived from it for printer columns.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from agenttask_operator.core.conversation import Projection, answered_calls
from agenttask_operator.models import AgentTaskStatus, Condition, ParallelCall, Step, TaskState

RESULT_LIMIT = (
    64 * 1024
)  # status stays small: longer answers are cut here (full text in transcript)
MESSAGE_LIMIT = 4 * 1024


def clip(text: str, limit: int) -> str:
    """Cut ``text`` to at most ``limit`` characters, saying so."""
    if len(text) <= limit:
        return text
    note = f"… [truncated, {len(text)} characters in all]"
    if limit <= len(note):
        return text[:limit]
    return text[: limit - len(note)] + note


def ts(when: datetime) -> str:
    """RFC 3339 timestamp with a Z, as Kubernetes writes them."""
    return f"{when.year:04d}" + when.strftime("-%m-%dT%H:%M:%SZ")


def ts_ms(when: datetime) -> str:
    """RFC 3339 timestamp with milliseconds, for times that must not be rounded (retries)."""
    return (
        f"{when.year:04d}" + when.strftime("-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
    )


def condition(
    state: TaskState, status: str, reason: str, message: str, now: datetime
) -> dict[str, Any]:
    """The ``Succeeded`` condition; lastTransitionTime moves only when its status changes."""
    previous = next((c for c in state.status.conditions if c.type == "Succeeded"), None)
    since = previous.last_transition_time if previous and previous.status == status else now
    return Condition(
        type="Succeeded",
        status="Unknown" if status == "Unknown" else ("True" if status == "True" else "False"),
        reason=reason,
        message=clip(message, MESSAGE_LIMIT),
        last_transition_time=since,
        observed_generation=state.generation,
    ).to_api() | {"lastTransitionTime": ts(since)}


def start(state: TaskState, now: datetime) -> dict[str, Any]:
    """The task is picked up: Running, with a persisted start time."""
    return {
        "phase": "Running",
        "reason": "Running",
        "message": "The agent loop has started.",
        "startTime": ts(now),
        "observedGeneration": state.generation,
        "conditions": [condition(state, "Unknown", "Running", "The agent loop has started.", now)],
    }


def current_step(step: Step, started: datetime) -> dict[str, Any]:
    """``status.currentStep`` for ``step``, started at ``started``.

    Every field named, absent ones as null: under a merge patch a field left out would keep
    the value of the step before (e.g. a tool name on the next LLM step).
    """
    current: dict[str, Any] = {"toolCallId": None, "toolName": None}
    current |= step.model_copy(update={"start_time": started}).to_api()
    return current | {"startTime": ts(started)}


def intent(state: TaskState, step: Step, attempt: int, now: datetime) -> dict[str, Any]:
    """Persisted before a step's attempt runs: what runs, which attempt, since when."""
    return {
        "currentStep": current_step(step, step.start_time or now),
        "attempts": attempt,
        "nextRetryTime": None,
        "observedGeneration": state.generation,
    }


def commit(state: TaskState, projection: Projection) -> dict[str, Any]:
    """The step's result is in the transcript: clear the step and update the counters."""
    patch: dict[str, Any] = {
        "currentStep": None,
        "attempts": 0,
        "nextRetryTime": None,
        "lastError": None,
        "iterations": projection.iterations,
        "toolCalls": projection.tool_calls,
        "usage": projection.usage.to_api(),
        "observedGeneration": state.generation,
    }
    if state.status.interruptions:  # the step they counted is done
        patch["interruptions"] = None
    left = open_calls(state)  # calls that ran alongside: keep those without a stored result
    if len(left) < len(state.status.parallel_calls):
        patch["parallelCalls"] = [p.to_api() for p in left] or None
    return patch


def open_calls(state: TaskState) -> list[ParallelCall]:
    """The ``parallelCalls`` entries whose result is not stored yet."""
    if not state.status.parallel_calls:
        return []
    done = answered_calls(state.transcript)
    return [p for p in state.status.parallel_calls if (p.iteration, p.tool_call_id) not in done]


def retry_later(attempt: int, error: str, at: datetime) -> dict[str, Any]:
    """A transient failure: remember it and when the next attempt may start."""
    return {
        "attempts": attempt,
        "lastError": clip(error, MESSAGE_LIMIT),
        "nextRetryTime": ts_ms(at),
    }


def finish(
    state: TaskState,
    now: datetime,
    *,
    succeeded: bool,
    reason: str,
    message: str,
    result: str | None = None,
) -> dict[str, Any]:
    """End the task: Succeeded or Failed, with a reason; never touched again afterwards."""
    patch: dict[str, Any] = {
        "phase": "Succeeded" if succeeded else "Failed",
        "reason": reason,
        "message": clip(message, MESSAGE_LIMIT),
        "completionTime": ts(now),
        "currentStep": None,
        "nextRetryTime": None,
        "observedGeneration": state.generation,
        "conditions": [condition(state, "True" if succeeded else "False", reason, message, now)],
    }
    if state.status.parallel_calls:
        patch["parallelCalls"] = None
    if result is not None:
        patch["result"] = clip(result, RESULT_LIMIT)
    if not succeeded:
        patch["error"] = clip(message, MESSAGE_LIMIT)
    return patch


def suspend(state: TaskState, now: datetime) -> dict[str, Any]:
    """Stop at this step boundary; the deadline clock pauses from now."""
    msg = "Suspended (spec.suspend is true); set it to false to resume where it stopped."
    return {
        "phase": "Suspended",
        "reason": "Suspended",
        "message": msg,
        "suspendedSince": ts_ms(now),
        "observedGeneration": state.generation,
        "conditions": [condition(state, "Unknown", "Suspended", msg, now)],
    }


def resume(state: TaskState, now: datetime) -> dict[str, Any]:
    """Carry on; the time spent suspended is added up so that the deadline excludes it."""
    st = state.status
    since = st.suspended_since or now
    spent = st.suspended_seconds + max((now - since).total_seconds(), 0.0)
    started = st.start_time is not None
    phase, msg = ("Running", "Resumed.") if started else ("Pending", "Resumed; not started yet.")
    return {
        "phase": phase,
        "reason": "Resumed",
        "message": msg,
        "suspendedSince": None,
        "suspendedSeconds": round(spent, 3),
        "observedGeneration": state.generation,
        "conditions": [condition(state, "Unknown", "Resumed", msg, now)],
    }


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch, as the API server applies it (None deletes a key)."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            current = out.get(key)
            out[key] = merge_patch(current if isinstance(current, dict) else {}, value)
        else:
            out[key] = value
    return out


def apply(state: TaskState, patch: dict[str, Any]) -> TaskState:
    """The state as it will be once ``patch`` is written."""
    merged = merge_patch(state.status.to_api(), patch)
    return replace(state, status=AgentTaskStatus.model_validate(merged))
