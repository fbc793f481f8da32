"""Status merge patches: start, intent, commit and finish. Pure: ``now`` is passed in.

Status = the ``Succeeded`` condition (True / False / Unknown, CamelCase reason,
observedGeneration) plus ``phase``, derived from it for printer columns.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from agenttask_operator.core.conversation import Projection
from agenttask_operator.models import Condition, Step, TaskState

RESULT_LIMIT = (
    64 * 1024
)  # status stays small: longer answers are cut here (full text in transcript)
MESSAGE_LIMIT = 4 * 1024


def clip(text: str, limit: int) -> str:
    """Cut ``text`` to at most ``limit`` characters, saying so."""
    if len(text) <= limit:
        return text
    note = f"… [truncated, {len(text)} characters in all]"
    return text[: limit - len(note)] + note


def ts(when: datetime) -> str:
    """RFC 3339 timestamp with a Z, as Kubernetes writes them."""
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def ts_ms(when: datetime) -> str:
    """RFC 3339 timestamp with milliseconds, for times that must not be rounded (retries)."""
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


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


def intent(state: TaskState, step: Step, attempt: int, now: datetime) -> dict[str, Any]:
    """Persisted before a step's attempt runs: what runs, which attempt, since when."""
    started = step.start_time or now
    return {
        "currentStep": step.model_copy(update={"start_time": started}).to_api()
        | {"startTime": ts(started)},
        "attempts": attempt,
        "nextRetryTime": None,
        "observedGeneration": state.generation,
    }


def commit(state: TaskState, projection: Projection) -> dict[str, Any]:
    """The step's result is in the transcript: clear the step and update the counters."""
    return {
        "currentStep": None,
        "attempts": 0,
        "nextRetryTime": None,
        "lastError": None,
        "iterations": projection.iterations,
        "toolCalls": projection.tool_calls,
        "usage": projection.usage.to_api(),
        "observedGeneration": state.generation,
    }


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
    if result is not None:
        patch["result"] = clip(result, RESULT_LIMIT)
    if not succeeded:
        patch["error"] = clip(message, MESSAGE_LIMIT)
    return patch
