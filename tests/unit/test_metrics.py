"""effects.metrics: error classes, bounded labels, the task gauges, and the exposition."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agenttask_operator.core.answers import Reply
from agenttask_operator.core.errors import Failure
from agenttask_operator.effects import metrics, tools
from agenttask_operator.effects.llm import StepFailed
from agenttask_operator.effects.registry import ToolContext
from agenttask_operator.models import ModelSpec, ToolSpec
from agenttask_operator.models.status import Usage

TASK, UID, NAMESPACE = "payroll-run-secret", "3f1c9a52-7a8e-4d0b-9c1e-5b2f0e6d7a11", "team-payroll"
LABELS = {"phase", "reason", "kind", "outcome", "model", "class", "tool", "le"}


def value(name: str, **labels: str) -> float:
    found = metrics.REGISTRY.get_sample_value(name, labels)
    return found or 0.0


@pytest.mark.parametrize(
    ("failure", "klass"),
    [
        (Failure("HTTP 429", True, "ModelUnavailable", 2.0, 429), "rate_limit"),
        (Failure("HTTP 500", True, "ModelUnavailable", None, 500), "server_error"),
        (Failure("HTTP 503", True, "ModelUnavailable", None, 503), "server_error"),
        (Failure("HTTP 408", True, "ModelUnavailable", None, 408), "timeout"),
        (Failure("no complete answer", True, "ModelTimeout"), "timeout"),
        (Failure("connection refused", True, "ModelUnavailable"), "connection"),
        (Failure("not JSON", True, "ModelResponseInvalid"), "invalid_response"),
        (Failure("HTTP 401", False, "ModelAuthFailed"), "auth"),
        (Failure("HTTP 403", False, "ModelPermissionDenied"), "auth"),
        (Failure("HTTP 404", False, "ModelNotFound"), "not_found"),
        (Failure("HTTP 400", False, "ModelRequestInvalid"), "invalid_request"),
        (Failure("HTTP 418", False, "ModelRequestFailed"), "client_error"),
        (Failure("HTTP 409", True, "ModelUnavailable", None, 409), "other"),
        (Failure("ValueError: x", True, "ModelError"), "other"),
    ],
)
def test_llm_error_classes(failure: Failure, klass: str) -> None:
    assert metrics.llm_error_class(failure) == klass


@pytest.mark.parametrize(
    ("reason", "klass"),
    [
        ("ToolTimeout", "timeout"),
        ("ToolUnavailable", "unavailable"),
        ("ToolServerUnavailable", "unavailable"),
        ("ToolServerRefused", "refused"),
        ("ToolServerChanged", "refused"),
        ("StepFailed", "exception"),
        ("SomethingNew", "other"),
    ],
)
def test_tool_error_classes(reason: str, klass: str) -> None:
    assert metrics.tool_error_class(Failure("x", True, reason)) == klass


def test_a_tool_label_is_a_declared_name_or_other() -> None:
    declared = (
        ToolSpec(name="check_disk"),
        ToolSpec.model_validate({"name": "mcp", "toolServerRef": {"name": "srv"}}),
    )

    def call(name: str) -> dict[str, Any]:
        return {"id": "c", "function": {"name": name, "arguments": "{}"}}

    assert tools.tool_label(call("check_disk"), declared) == "check_disk"
    assert tools.tool_label(call("mcp"), declared) == "other"  # an entry, not a tool name
    assert tools.tool_label(call(TASK), declared) == "other"  # whatever the model made up
    assert tools.tool_label({}, declared) == "other"


def obj(uid: str, phase: str | None = None, reason: str = "", **status: Any) -> dict[str, Any]:
    st = ({"phase": phase, "reason": reason} if phase else {}) | status
    return {"metadata": {"uid": uid, "name": TASK, "namespace": NAMESPACE}, "status": st}


def gauges(index: metrics.TaskIndex) -> dict[tuple[str, tuple[str, ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.values()))): s.value
        for family in index.collect()
        for s in family.samples
    }


def test_task_gauges_count_the_tasks_assigned_here() -> None:
    index = metrics.TaskIndex()
    index.observe(None, obj("a"))  # just created: no status yet
    index.observe("ADDED", obj("b", "Pending", "Queued"))
    index.observe("ADDED", obj("c", "Pending", "Queued"))
    pending = {"toolCallId": "x", "toolName": "deploy"}
    index.observe("MODIFIED", obj("d", "WaitingForApproval", "ApprovalPending", approval=pending))
    index.observe("MODIFIED", obj("e", "Succeeded", "Completed", approval=pending))
    index.observe("MODIFIED", obj("f", "Running", "Running"))
    index.observe("DELETED", obj("f", "Running", "Running"))
    index.observe("ADDED", {"metadata": {}})  # no uid: ignored
    assert gauges(index) == {
        ("agenttask_tasks", ("", "Pending")): 1,
        ("agenttask_tasks", ("Pending", "Queued")): 2,
        ("agenttask_tasks", ("ApprovalPending", "WaitingForApproval")): 1,
        ("agenttask_tasks", ("Completed", "Succeeded")): 1,
        ("agenttask_tasks_queued", ()): 2,
        ("agenttask_approvals_pending", ()): 1,  # an ended task waits for nothing
    }
    # Another replica counts the rest: every task is counted by exactly one.
    index.mine = lambda uid: uid in ("b", "d")
    mine = gauges(index)
    index.mine = lambda uid: uid not in ("b", "d")
    theirs = gauges(index)
    assert mine[("agenttask_tasks_queued", ())] + theirs[("agenttask_tasks_queued", ())] == 2
    assert mine[("agenttask_approvals_pending", ())] == 1
    assert theirs[("agenttask_approvals_pending", ())] == 0
    index.mine = lambda uid: False
    assert gauges(index) == {
        ("agenttask_tasks_queued", ()): 0,
        ("agenttask_approvals_pending", ()): 0,
    }


def test_starts_and_ends_are_counted_once() -> None:
    started = value("agenttask_tasks_started_total")
    ended = value("agenttask_tasks_finished_total", phase="Failed", reason="BudgetExceeded")
    running = {"phase": "Running", "startTime": "2026-01-01T00:00:00Z"}
    failed = running | {"phase": "Failed", "reason": "BudgetExceeded"}
    metrics.status_written({}, running)
    metrics.status_written(running, running | {"iterations": 1})  # a step, not a start
    metrics.status_written(running, failed)
    metrics.status_written(failed, failed | {"ttl": 1})  # already ended
    assert value("agenttask_tasks_started_total") == started + 1
    assert value("agenttask_tasks_finished_total", phase="Failed", reason="BudgetExceeded") == (
        ended + 1
    )


def test_retries_are_counted_unless_the_failure_ended_the_task() -> None:
    before = value("agenttask_retries_total", kind="Tool", reason="ToolTimeout")
    timeout = Failure("slow", True, "ToolTimeout")
    metrics.retries(["LLM", "Tool"], [None, timeout], {"attempts": 2})
    metrics.retries(["Tool"], [timeout], {"phase": "Failed", "reason": "RetriesExhausted"})
    assert value("agenttask_retries_total", kind="Tool", reason="ToolTimeout") == before + 1


def test_interruption_reasons_are_a_fixed_set() -> None:
    before = {
        r: value("agenttask_interruptions_total", kind="Tool", reason=r)
        for r in ("stopped", "taken_over", "lease_lost", "other")
    }
    metrics.interrupted(["Tool"], "stopped")
    metrics.interrupted(["Tool", "Tool"], "another replica took the task")
    metrics.interrupted(["Tool"], "the Lease was not renewed")
    metrics.interrupted(["Tool"], f"something about {TASK}")
    after = {r: value("agenttask_interruptions_total", kind="Tool", reason=r) for r in before}
    assert {r: after[r] - before[r] for r in before} == {
        "stopped": 1,
        "taken_over": 2,
        "lease_lost": 1,
        "other": 1,
    }


async def test_chat_and_tool_calls_are_timed_and_classified(tmp_path: Path) -> None:
    model = ModelSpec(name="unit-model")
    usage = Usage(prompt_tokens=11, completion_tokens=4, total_tokens=15)

    @metrics.timed_chat
    async def answered(spec: ModelSpec) -> Reply:
        return Reply({"role": "assistant", "content": "hi"}, usage, "stop")

    @metrics.timed_chat
    async def limited(spec: ModelSpec) -> Reply:
        raise StepFailed(Failure("HTTP 429", True, "ModelUnavailable", None, 429))

    count = value("agenttask_llm_request_duration_seconds_count", model="unit-model")
    await answered(model)
    with pytest.raises(StepFailed):
        await limited(model)
    assert value("agenttask_llm_request_duration_seconds_count", model="unit-model") == count + 2
    assert value("agenttask_llm_errors_total", model="unit-model", **{"class": "rate_limit"}) == 1
    assert value("agenttask_llm_tokens_total", model="unit-model", kind="prompt") == 11
    assert value("agenttask_llm_tokens_total", model="unit-model", kind="completion") == 4

    # A tool call of a name the task does not declare runs nothing and counts as "other".
    ctx = ToolContext("k", NAMESPACE, TASK, UID, "call_1", tmp_path)
    call = {"id": "call_1", "function": {"name": TASK, "arguments": "{}"}}
    errors = value("agenttask_tool_errors_total", tool="other", **{"class": "tool_error"})
    async with aiohttp.ClientSession() as session:
        result = await tools.execute(call, (ToolSpec(name="check_disk"),), {}, ctx, session)
    assert result.is_error
    assert value("agenttask_tool_errors_total", tool="other", **{"class": "tool_error"}) == (
        errors + 1
    )


def test_the_exposition_names_no_task() -> None:
    """Whatever was recorded (a task observed, a step, a transcript segment), no label names a
    task, its namespace or its uid, and every label is one of a fixed set of names.
    """
    metrics.TASKS.observe("ADDED", obj(UID, "Running", "Running"))
    metrics.step_stored("Tool", False)
    metrics.transcript_segment(f'{{"task": "{TASK}"}}\n')
    metrics.status_written({}, {"startTime": "2026-01-01T00:00:00Z", "phase": "Running"})
    text = generate_latest(metrics.REGISTRY).decode()
    for word in (TASK, UID, NAMESPACE, UID[:8]):
        assert word not in text
    names = {
        name
        for family in text_string_to_metric_families(text)
        if family.name.startswith("agenttask_")
        for sample in family.samples
        for name in sample.labels
    }
    assert names <= LABELS, names - LABELS
    metrics.TASKS.observe("DELETED", obj(UID))
