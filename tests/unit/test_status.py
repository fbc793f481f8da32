"""Unit tests of ``core.status``: clipping, timestamps and the status merge patches."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agenttask_operator.core import status
from agenttask_operator.core.conversation import Projection
from agenttask_operator.core.status import MESSAGE_LIMIT, RESULT_LIMIT, clip, ts, ts_ms
from agenttask_operator.models import (
    AgentTaskSpec,
    AgentTaskStatus,
    Condition,
    ModelSpec,
    Step,
    TaskState,
    Usage,
)

GEN = 4
T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
NOW = datetime(2025, 3, 1, 12, 5, 30, 987654, tzinfo=UTC)


def state(status: AgentTaskStatus | None = None, generation: int = GEN) -> TaskState:
    return TaskState(
        namespace="ns",
        name="task",
        uid="uid",
        generation=generation,
        spec=AgentTaskSpec(input="hi", model=ModelSpec(name="m")),
        status=status or AgentTaskStatus(),
    )


def with_condition(cond_status: str, since: datetime = T0, **fields: Any) -> AgentTaskStatus:
    cond = Condition.model_validate(
        {"type": "Succeeded", "status": cond_status, "reason": "R", "lastTransitionTime": since}
    )
    return AgentTaskStatus.model_validate({"conditions": [cond.to_api()], **fields})


# --- clip --------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "a", "short text", "x" * 100])
def test_clip_leaves_short_text_alone(text: str) -> None:
    assert clip(text, 100) == text


@pytest.mark.parametrize("length", [101, 102, 150, 1000, 10**6])
@pytest.mark.parametrize("limit", [60, 100])
def test_clip_cuts_to_exactly_the_limit_and_says_so(length: int, limit: int) -> None:
    text = "".join(chr(ord("a") + i % 26) for i in range(length))
    out = clip(text, limit)
    assert len(out) == limit
    note = f"… [truncated, {length} characters in all]"
    assert out.endswith(note)
    assert out == text[: limit - len(note)] + note


def test_clip_counts_characters_not_bytes() -> None:
    text = "é" * 10
    assert clip(text, 10) == text
    assert len(clip("😀" * 200, 100)) == 100


@pytest.mark.parametrize("limit", [RESULT_LIMIT, MESSAGE_LIMIT])
def test_clip_at_the_real_limits(limit: int) -> None:
    assert len(clip("y" * (limit + 1), limit)) == limit
    assert clip("y" * limit, limit) == "y" * limit


@pytest.mark.parametrize("limit", [0, 5, 20])
def test_clip_never_exceeds_a_small_limit(limit: int) -> None:
    assert len(clip("z" * 500, limit)) <= limit


# --- timestamps --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC), "2025-01-02T03:04:05Z"),
        (datetime(2025, 1, 2, 3, 4, 5, 999999, tzinfo=UTC), "2025-01-02T03:04:05Z"),
        (datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC), "1999-12-31T23:59:59Z"),
    ],
)
def test_ts(when: datetime, expected: str) -> None:
    assert ts(when) == expected


@pytest.mark.parametrize(
    ("micro", "expected"),
    [(0, "000"), (999, "000"), (1000, "001"), (5000, "005"), (123456, "123"), (999999, "999")],
)
def test_ts_ms_truncates_to_milliseconds(micro: int, expected: str) -> None:
    when = datetime(2025, 1, 2, 3, 4, 5, micro, tzinfo=UTC)
    assert ts_ms(when) == f"2025-01-02T03:04:05.{expected}Z"


@pytest.mark.parametrize("when", [T0, NOW, datetime(2030, 7, 8, 9, 10, 11, 12000, tzinfo=UTC)])
def test_timestamps_parse_back(when: datetime) -> None:
    parsed = AgentTaskStatus.model_validate({"startTime": ts(when), "nextRetryTime": ts_ms(when)})
    assert parsed.start_time == when.replace(microsecond=0)
    assert parsed.next_retry_time == when.replace(microsecond=when.microsecond // 1000 * 1000)


# --- condition ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("previous", "new", "moves"),
    [
        (None, "Unknown", True),
        (None, "True", True),
        ("Unknown", "Unknown", False),
        ("Unknown", "True", True),
        ("Unknown", "False", True),
        ("False", "False", False),
        ("True", "True", False),
        ("False", "Unknown", True),
    ],
)
def test_condition_transition_time_moves_only_on_status_change(
    previous: str | None, new: str, moves: bool
) -> None:
    st = with_condition(previous) if previous else AgentTaskStatus()
    cond = status.condition(state(st), new, "Why", "msg", NOW)
    assert cond["lastTransitionTime"] == ts(NOW if moves else T0)
    assert (cond["type"], cond["status"], cond["reason"], cond["message"]) == (
        "Succeeded",
        new,
        "Why",
        "msg",
    )
    assert cond["observedGeneration"] == GEN


def test_condition_message_is_clipped() -> None:
    cond = status.condition(state(), "False", "R", "m" * 9000, NOW)
    assert len(cond["message"]) == MESSAGE_LIMIT


# --- patches -----------------------------------------------------------------------------------


def test_start_patch() -> None:
    assert status.start(state(), NOW) == {
        "phase": "Running",
        "reason": "Running",
        "message": "The agent loop has started.",
        "startTime": "2025-03-01T12:05:30Z",
        "observedGeneration": GEN,
        "conditions": [
            {
                "type": "Succeeded",
                "status": "Unknown",
                "reason": "Running",
                "message": "The agent loop has started.",
                "lastTransitionTime": "2025-03-01T12:05:30Z",
                "observedGeneration": GEN,
            }
        ],
    }


@pytest.mark.parametrize(
    ("step", "expected_step"),
    [
        (
            Step(kind="LLM", iteration=3),
            {"kind": "LLM", "iteration": 3, "startTime": "2025-03-01T12:05:30Z"},
        ),
        (
            Step(kind="LLM", iteration=3, start_time=T0),
            {"kind": "LLM", "iteration": 3, "startTime": "2025-03-01T12:00:00Z"},
        ),
        (
            Step(kind="Tool", iteration=1, tool_call_id="c9", tool_name="t", start_time=T0),
            {
                "kind": "Tool",
                "iteration": 1,
                "toolCallId": "c9",
                "toolName": "t",
                "startTime": "2025-03-01T12:00:00Z",
            },
        ),
    ],
)
def test_intent_patch(step: Step, expected_step: dict[str, Any]) -> None:
    # Absent step fields are sent as null, so that a merge patch clears the previous step's.
    assert status.intent(state(), step, 2, NOW) == {
        "currentStep": {"toolCallId": None, "toolName": None} | expected_step,
        "attempts": 2,
        "nextRetryTime": None,
        "observedGeneration": GEN,
    }


def test_commit_patch() -> None:
    projection = Projection(
        iterations=3,
        tool_calls=5,
        usage=Usage(prompt_tokens=10, completion_tokens=2, total_tokens=12),
    )
    assert status.commit(state(), projection) == {
        "currentStep": None,
        "attempts": 0,
        "nextRetryTime": None,
        "lastError": None,
        "iterations": 3,
        "toolCalls": 5,
        "usage": {"promptTokens": 10, "completionTokens": 2, "totalTokens": 12},
        "observedGeneration": GEN,
    }


def test_retry_later_patch() -> None:
    assert status.retry_later(3, "HTTP 503", NOW) == {
        "attempts": 3,
        "lastError": "HTTP 503",
        "nextRetryTime": "2025-03-01T12:05:30.987Z",
    }
    assert len(status.retry_later(1, "e" * 5000, NOW)["lastError"]) == MESSAGE_LIMIT


def test_finish_succeeded_patch() -> None:
    patch = status.finish(
        state(with_condition("Unknown")),
        NOW,
        succeeded=True,
        reason="Completed",
        message="ok",
        result="42",
    )
    assert patch == {
        "phase": "Succeeded",
        "reason": "Completed",
        "message": "ok",
        "completionTime": "2025-03-01T12:05:30Z",
        "currentStep": None,
        "nextRetryTime": None,
        "observedGeneration": GEN,
        "conditions": [
            {
                "type": "Succeeded",
                "status": "True",
                "reason": "Completed",
                "message": "ok",
                "lastTransitionTime": "2025-03-01T12:05:30Z",
                "observedGeneration": GEN,
            }
        ],
        "result": "42",
    }


def test_finish_failed_patch_has_error_and_no_result_unless_given() -> None:
    patch = status.finish(state(), NOW, succeeded=False, reason="Boom", message="it broke")
    assert (patch["phase"], patch["reason"], patch["error"]) == ("Failed", "Boom", "it broke")
    assert "result" not in patch
    assert patch["conditions"][0]["status"] == "False"
    with_result = status.finish(state(), NOW, succeeded=False, reason="B", message="m", result="")
    assert with_result["result"] == ""


def test_finish_clips_message_error_and_result() -> None:
    patch = status.finish(
        state(), NOW, succeeded=False, reason="R", message="m" * 9000, result="r" * 70_000
    )
    assert len(patch["message"]) == len(patch["error"]) == MESSAGE_LIMIT
    assert len(patch["result"]) == RESULT_LIMIT


def test_suspend_patch() -> None:
    patch = status.suspend(state(with_condition("Unknown")), NOW)
    assert patch["phase"] == "Suspended"
    assert patch["reason"] == "Suspended"
    assert patch["suspendedSince"] == "2025-03-01T12:05:30.987Z"
    assert patch["observedGeneration"] == GEN
    assert patch["conditions"][0]["status"] == "Unknown"
    assert patch["conditions"][0]["lastTransitionTime"] == ts(T0)


@pytest.mark.parametrize(
    ("started", "phase"), [(True, "Running"), (False, "Pending")], ids=["started", "not-started"]
)
def test_resume_patch(started: bool, phase: str) -> None:
    fields: dict[str, Any] = {
        "suspendedSince": ts_ms(NOW - timedelta(seconds=30, milliseconds=500)),
        "suspendedSeconds": 12.25,
    }
    if started:
        fields["startTime"] = ts(T0)
    patch = status.resume(state(AgentTaskStatus.model_validate(fields)), NOW)
    assert patch["phase"] == phase
    assert patch["reason"] == "Resumed"
    assert patch["suspendedSince"] is None
    assert patch["suspendedSeconds"] == pytest.approx(12.25 + 30.5, abs=1e-3)
    assert patch["conditions"][0]["reason"] == "Resumed"


def test_resume_never_counts_negative_time() -> None:
    st = AgentTaskStatus.model_validate({"suspendedSince": ts_ms(NOW + timedelta(hours=1))})
    assert status.resume(state(st), NOW)["suspendedSeconds"] == 0.0


@pytest.mark.parametrize(
    "build",
    [
        lambda s: status.start(s, NOW),
        lambda s: status.intent(s, Step(kind="LLM", iteration=1), 1, NOW),
        lambda s: status.commit(s, Projection(0, 0, Usage())),
        lambda s: status.finish(s, NOW, succeeded=True, reason="C", message="m"),
        lambda s: status.suspend(s, NOW),
        lambda s: status.resume(s, NOW),
    ],
    ids=["start", "intent", "commit", "finish", "suspend", "resume"],
)
@pytest.mark.parametrize("generation", [1, 2, 99])
def test_patches_record_the_generation(build: Any, generation: int) -> None:
    assert build(state(generation=generation))["observedGeneration"] == generation


# --- merge_patch / apply -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [
        ({"a": 1}, {"a": 2}, {"a": 2}),
        ({"a": 1}, {"b": 2}, {"a": 1, "b": 2}),
        ({"a": 1, "b": 2}, {"a": None}, {"b": 2}),
        ({"a": 1}, {"missing": None}, {"a": 1}),
        ({"a": {"x": 1, "y": 2}}, {"a": {"y": 3}}, {"a": {"x": 1, "y": 3}}),
        ({"a": {"x": 1, "y": 2}}, {"a": {"y": None}}, {"a": {"x": 1}}),
        ({"a": [1, 2]}, {"a": [3]}, {"a": [3]}),
        ({"a": {"x": 1}}, {"a": 5}, {"a": 5}),
        ({}, {}, {}),
    ],
)
def test_merge_patch(target: dict[str, Any], patch: dict[str, Any], expected: Any) -> None:
    before = copy.deepcopy(target)
    assert status.merge_patch(target, patch) == expected
    assert target == before  # the input is not changed


@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [
        ({}, {"a": {"x": 1, "y": None}}, {"a": {"x": 1}}),
        ({"a": 5}, {"a": {"x": None}}, {"a": {}}),
    ],
)
def test_merge_patch_drops_nulls_inside_new_objects(
    target: dict[str, Any], patch: dict[str, Any], expected: Any
) -> None:
    assert status.merge_patch(target, patch) == expected


def test_apply_gives_the_status_after_a_patch() -> None:
    s = state(AgentTaskStatus.model_validate({"phase": "Running", "attempts": 2, "lastError": "x"}))
    projection = Projection(2, 1, Usage(prompt_tokens=1, completion_tokens=1, total_tokens=2))
    after = status.apply(s, status.commit(s, projection)).status
    assert (after.phase, after.attempts, after.last_error) == ("Running", 0, None)
    assert (after.iterations, after.tool_calls, after.usage.total_tokens) == (2, 1, 2)
    assert s.status.attempts == 2  # the original state is untouched
