"""Unit tests of ``core.approval`` and of how ``decide`` gates tool calls on a person's decision.

No I/O, no clock: the task's status is advanced the way the loop advances it (write the patch,
or write the intent and store the step's result), and AgentToolApprovals are plain values.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from test_decide import (
    GEN,
    NOW,
    T0,
    after,
    call,
    execute,
    llm,
    make_state,
    running,
    tool,
    tool_step,
    write,
)

from agenttask_operator.core import Execute, Wait, WriteStatus, decide
from agenttask_operator.core.approval import (
    OPERATOR,
    call_digest,
    marks,
    mcp_policy,
    note,
    policy,
)
from agenttask_operator.core.status import apply
from agenttask_operator.models import (
    ApprovalRecord,
    HttpToolSpec,
    ResolvedTool,
    TaskState,
    ToolServerRef,
    ToolSpec,
)
from agenttask_operator.models.approval import AgentToolApprovalSpec, Decision
from agenttask_operator.models.spec import ApprovalPolicy
from agenttask_operator.models.toolserver import AgentToolServerSpec, ToolOverride, ToolStatus

DEPLOY = ToolSpec(
    name="deploy", http=HttpToolSpec(url="http://tools.invalid/deploy"), approval="Required"
)
ARGS = '{"version": "1.2.3"}'
DIGEST = call_digest("deploy", ARGS)
CREATED = T0 - timedelta(minutes=1)  # the task's creationTimestamp


def waiting_for_deploy(**spec: Any) -> TaskState:
    """A task whose model asked for ``deploy`` (which needs approval); nothing decided yet."""
    transcript = [llm(1, call("c1", "deploy", ARGS))]
    state = make_state(status=running(transcript), transcript=transcript, tools=[DEPLOY], **spec)
    return replace(state, created=CREATED)


def approval(
    decision: str = "Approve",
    *,
    name: str = "a1",
    digest: str = DIGEST,
    call_id: str = "c1",
    created: datetime = NOW,
    by: str = "alice",
    reason: str = "looks right",
) -> Decision:
    spec = AgentToolApprovalSpec(
        task="task",
        tool_call_id=call_id,
        arguments_digest=digest,
        decision=decision,
        reason=reason,
        decided_by=by,
    )
    return Decision(name, f"uid-{name}", created, spec)


def step(state: TaskState, now: datetime = NOW, *approvals: Decision) -> tuple[TaskState, Any]:
    """Decide once with these approvals, and the state once the action's patch is stored."""
    state = replace(state, approvals=approvals)
    action = decide(state, now)
    if isinstance(action, WriteStatus):
        return apply(state, action.patch), action
    if isinstance(action, Execute):
        return apply(state, action.intent), action
    return state, action


def asked(state: TaskState) -> TaskState:
    """The state once the approval of ``deploy`` was asked for."""
    state, action = step(state)
    assert isinstance(action, WriteStatus) and action.event is not None
    assert action.event.reason == "ApprovalRequested"
    return state


# --- which tools need approval -----------------------------------------------------------------


def hints(
    read_only: bool = False, destructive: bool = True, idempotent: bool = False
) -> ToolStatus:
    return ToolStatus(
        name="t",
        input_schema_digest="sha256:x",
        read_only_hint=read_only,
        destructive_hint=destructive,
        idempotent_hint=idempotent,
    )


def entry(approval: str | None = None, on_unknown: str | None = None) -> ToolSpec:
    return ToolSpec(
        name="srv",
        tool_server_ref=ToolServerRef(name="srv"),
        approval=approval,
        on_unknown_outcome=on_unknown,
    )


def server(default: Any = "Auto", **override: Any) -> AgentToolServerSpec:
    tools = (ToolOverride(name="t", **override),) if override else ()
    return AgentToolServerSpec(url="http://mcp.invalid/mcp", approval=default, tools=tools)


@pytest.mark.parametrize(
    ("task", "srv", "override", "tool", "needs"),
    [
        (None, "Auto", None, hints(), "Required"),  # unannotated: MCP defaults say destructive
        (None, "Auto", None, hints(read_only=True), "Never"),
        (None, "Auto", None, hints(destructive=False), "Never"),
        (None, "Never", None, hints(), "Never"),  # explicit wins over hints
        (None, "Required", None, hints(read_only=True), "Required"),
        (None, "Required", "Never", hints(), "Never"),  # the per-tool setting wins for its tool
        (None, "Never", "Required", hints(read_only=True), "Required"),
        (None, "Never", "Auto", hints(), "Never"),  # Auto per tool: the server's setting
        ("Never", "Auto", None, hints(), "Never"),  # the task's explicit Never beats the hints
        ("Never", "Required", None, hints(), "Required"),  # but not the server's Required
        ("Never", "Auto", "Required", hints(), "Required"),
        ("Required", "Never", None, hints(read_only=True), "Required"),
    ],
)
def test_which_mcp_tools_need_approval(
    task: str | None, srv: str, override: str | None, tool: ToolStatus, needs: str
) -> None:
    spec = server(srv, approval=override) if override else server(srv)
    assert mcp_policy(entry(task), spec, tool)[0] == needs


@pytest.mark.parametrize(
    ("task", "override", "idempotent", "tool", "expected"),
    [
        (None, None, None, hints(), "AskApproval"),  # destructive, not idempotent
        (None, None, None, hints(destructive=False), "AskApproval"),  # additive: may double
        (None, None, None, hints(idempotent=True), "Redeliver"),
        (None, None, None, hints(read_only=True), "Redeliver"),
        (None, None, True, hints(), "Redeliver"),  # the server's override wins over hints
        (None, None, False, hints(idempotent=True), "AskApproval"),
        (None, "Fail", None, hints(idempotent=True), "Fail"),
        ("Redeliver", "Fail", None, hints(), "Redeliver"),  # the task's setting wins
        ("Fail", None, None, hints(read_only=True), "Fail"),
    ],
)
def test_what_an_unknown_outcome_does_by_default(
    task: str | None, override: str | None, idempotent: bool | None, tool: ToolStatus, expected: str
) -> None:
    given = {"on_unknown_outcome": override, "idempotent": idempotent}
    fields = {k: v for k, v in given.items() if v is not None}
    spec = server(**fields) if fields else server()
    assert mcp_policy(entry(None, task), spec, tool)[1] == expected


def test_http_and_builtin_tools_need_approval_only_when_the_task_says_so() -> None:
    state = make_state(tools=[DEPLOY, ToolSpec(name="check_disk")])
    assert policy(state, "deploy").approval is True
    assert policy(state, "check_disk").approval is False
    assert policy(state, "check_disk").on_unknown_outcome == "Redeliver"
    resolved = ResolvedTool(
        name="rm", server="s", input_schema_digest="d", approval="Required",
        on_unknown_outcome="Fail",
    )  # fmt: skip
    state = replace(state, status=running(resolved_tools=(resolved,)))
    assert (policy(state, "rm").approval, policy(state, "rm").on_unknown_outcome) == (True, "Fail")


def test_the_digest_covers_the_tool_and_its_arguments() -> None:
    d = call_digest("deploy", ARGS)
    assert d.startswith("sha256:") and len(d) == 7 + 64
    assert d != call_digest("deploy", '{"version": "1.2.4"}')
    assert d != call_digest("rollback", ARGS)
    assert call_digest("a", "b,c") != call_digest("a,b", "c")  # no ambiguity in the encoding


# --- asking -------------------------------------------------------------------------------------


def test_a_call_that_needs_approval_is_recorded_and_waits() -> None:
    state = waiting_for_deploy()
    action = write(decide(state, NOW))
    st = after(state, action)
    assert st.phase == "WaitingForApproval" and st.reason == "ApprovalPending"
    assert st.conditions[0].status == "Unknown" and st.conditions[0].reason == "ApprovalPending"
    rec = st.approval
    assert rec is not None
    assert (rec.tool_call_id, rec.tool_name, rec.arguments, rec.arguments_digest) == (
        "c1", "deploy", ARGS, DIGEST,
    )  # fmt: skip
    assert (rec.purpose, rec.for_interruptions, rec.decision) == ("Run", 0, None)
    assert st.current_step is not None and st.current_step.tool_call_id == "c1"
    assert st.attempts == 0  # nothing ran
    assert action.event is not None and DIGEST in action.event.message
    assert "toolCallId c1" in action.event.message
    # Nothing more to do until a decision comes: no deadline, no timeout → wait for a change.
    waited = decide(apply(state, action.patch), NOW + timedelta(hours=5))
    assert isinstance(waited, Wait) and waited.until is None


def test_the_wait_ends_at_the_timeout_or_the_deadline() -> None:
    state = asked(waiting_for_deploy(approval=ApprovalPolicy(timeout_seconds=600)))
    assert state.status.approval is not None
    ms = NOW.replace(microsecond=123000)  # stored with milliseconds
    assert state.status.approval.timeout_time == ms + timedelta(seconds=600)
    waited = decide(state, NOW)
    assert isinstance(waited, Wait) and waited.until == ms + timedelta(seconds=600)
    state = asked(waiting_for_deploy(active_deadline_seconds=400))  # T0 + 400 s
    waited = decide(state, NOW)
    assert isinstance(waited, Wait) and waited.until == T0 + timedelta(seconds=400)
    failed = write(decide(state, T0 + timedelta(seconds=401)))
    assert failed.patch["reason"] == "DeadlineExceeded"


def test_long_arguments_are_clipped_in_status_but_the_digest_covers_them_all() -> None:
    long = '{"x": "' + "y" * 10_000 + '"}'
    transcript = [llm(1, call("c1", "deploy", long))]
    state = make_state(status=running(transcript), transcript=transcript, tools=[DEPLOY])
    rec = after(state, decide(state, NOW)).approval
    assert rec is not None and len(rec.arguments) <= 4096 and "truncated" in rec.arguments
    assert rec.arguments_digest == call_digest("deploy", long)


# --- deciding -----------------------------------------------------------------------------------


def test_approve_runs_the_call_once_in_the_same_write() -> None:
    state = asked(waiting_for_deploy())
    state, action = step(state, NOW, approval("Approve"))
    run = execute(action)
    assert run.result is None and run.attempt == 1
    assert run.event is not None and run.event.reason == "ApprovalGranted"
    assert "alice" in run.event.message
    st = state.status
    assert st.phase == "Running" and st.attempts == 1
    assert st.approval is not None
    assert (st.approval.decision, st.approval.decided_by, st.approval.approval_name) == (
        "Approve", "alice", "a1",
    )  # fmt: skip
    assert note(state, tool_step(1, "c1", "deploy")) is not None
    assert [m.reason for m in marks(replace(state, approvals=(approval(),)))] == ["Applied"]


def test_deny_gives_the_model_a_tool_error_and_runs_nothing() -> None:
    state = asked(waiting_for_deploy())
    state, action = step(state, NOW, approval("Deny", by="bob", reason="not on a Friday"))
    run = execute(action)
    assert run.result is not None
    assert "denied by bob: not on a Friday" in run.result and "did not run" in run.result
    assert run.event is not None and run.event.reason == "ApprovalDenied"
    # The same denial is recorded again if that write of the result was lost.
    again = execute(decide(state, NOW))
    assert again.result == run.result


def test_a_decision_with_another_digest_is_refused_and_never_applied() -> None:
    state = asked(waiting_for_deploy())
    wrong = approval(digest=call_digest("deploy", '{"version": "6.6.6"}'))
    waited = decide(replace(state, approvals=(wrong,)), NOW)
    assert isinstance(waited, Wait)
    refused = marks(replace(state, approvals=(wrong,)))
    assert [(m.name, m.status, m.reason) for m in refused] == [
        ("a1", "False", "ArgumentsDigestMismatch")
    ]
    marked = replace(wrong, accepted="ArgumentsDigestMismatch")
    assert marks(replace(state, approvals=(marked,))) == []  # marked once, not at every wake-up


def test_approvals_of_other_calls_tasks_or_incarnations_do_not_count() -> None:
    state = asked(waiting_for_deploy())
    others = (
        approval(call_id="c2"),
        approval(created=CREATED - timedelta(seconds=1)),  # for an earlier task of this name
        replace(approval(), spec=approval().spec.model_copy(update={"task": "other"})),
    )
    assert isinstance(decide(replace(state, approvals=others), NOW), Wait)


def test_the_earliest_decision_wins_and_deny_wins_a_tie() -> None:
    state = asked(waiting_for_deploy())
    later = approval("Deny", name="late", created=NOW + timedelta(seconds=5))
    _, action = step(state, NOW, later, approval("Approve", name="early"))
    assert execute(action).result is None
    tie = (approval("Approve", name="a"), approval("Deny", name="b"))
    _, action = step(state, NOW, *tie)
    assert execute(action).result is not None


def test_a_timeout_denies_by_default() -> None:
    state = asked(waiting_for_deploy(approval=ApprovalPolicy(timeout_seconds=60)))
    _, action = step(state, NOW + timedelta(seconds=61))
    run = execute(action)
    assert run.result is not None and f"denied by {OPERATOR}" in run.result
    assert "approval.timeoutSeconds=60" in run.result


def test_a_timeout_can_fail_the_task() -> None:
    policy_ = ApprovalPolicy(timeout_seconds=60, on_timeout="Fail")
    state = asked(waiting_for_deploy(approval=policy_))
    action = write(decide(state, NOW + timedelta(seconds=61)))
    assert (action.patch["phase"], action.patch["reason"]) == ("Failed", "ApprovalTimedOut")


def test_an_approval_holds_for_the_retries_of_failed_attempts() -> None:
    state = asked(waiting_for_deploy())
    state, _ = step(state, NOW, approval())
    state = apply(state, {"attempts": 1, "nextRetryTime": "2020-01-01T00:00:00.000Z"})
    run = execute(decide(state, NOW))
    assert run.attempt == 2 and run.result is None


def test_suspended_while_waiting_then_resumed_waits_again() -> None:
    state = asked(waiting_for_deploy())
    suspended = replace(state, spec=state.spec.model_copy(update={"suspend": True}))
    state, _ = step(suspended, NOW)
    assert state.status.phase == "Suspended"
    state = replace(state, spec=state.spec.model_copy(update={"suspend": False}))
    state, _ = step(state, NOW)  # resumed
    state, _ = step(state, NOW)
    assert state.status.phase == "WaitingForApproval"
    assert isinstance(decide(state, NOW), Wait)


def test_a_commit_and_the_next_request_are_one_write() -> None:
    transcript = [llm(1, call("c0", "check_disk"), call("c1", "deploy", ARGS))]
    status = running(transcript[:1], current_step=tool_step(1, "c0", "check_disk"), attempts=1)
    done = [*transcript, tool(1, "c0")]
    state = make_state(status=status, transcript=done, tools=[DEPLOY, ToolSpec(name="check_disk")])
    st = after(state, write(decide(state, NOW)))
    assert st.tool_calls == 1 and st.phase == "WaitingForApproval"
    assert st.approval is not None and st.approval.tool_call_id == "c1"


# --- unknown outcomes ---------------------------------------------------------------------------


def interrupted_mcp(on_unknown: str, needs: str = "Never") -> TaskState:
    """An MCP call in flight (intent stored, no result): the operator stopped meanwhile."""
    resolved = ResolvedTool(
        name="rm", server="srv", input_schema_digest="d", approval=needs,
        on_unknown_outcome=on_unknown,
    )  # fmt: skip
    srv = ToolSpec(name="srv", tool_server_ref=ToolServerRef(name="srv"))
    transcript = [llm(1, call("c1", "rm", '{"path": "/tmp/x"}'))]
    status = running(
        transcript,
        current_step=tool_step(1, "c1", "rm"),
        attempts=1,
        resolved_tools=(resolved,),
    )
    state = make_state(status=status, transcript=transcript, tools=[srv])
    return replace(state, created=CREATED)


def test_redeliver_runs_the_call_again_under_the_same_number() -> None:
    run = execute(decide(interrupted_mcp("Redeliver"), NOW))
    assert run.attempt == 1 and run.intent["interruptions"] == 1 and run.result is None


def test_fail_ends_the_task_tool_outcome_unknown() -> None:
    action = write(decide(interrupted_mcp("Fail"), NOW))
    assert (action.patch["phase"], action.patch["reason"]) == ("Failed", "ToolOutcomeUnknown")
    assert "tool call 'rm' (c1)" in action.patch["message"]


def test_ask_approval_waits_and_runs_again_only_after_a_fresh_decision() -> None:
    state = interrupted_mcp("AskApproval")
    state, action = step(state)
    rec = state.status.approval
    assert rec is not None and (rec.purpose, rec.for_interruptions) == ("Rerun", 1)
    assert state.status.phase == "WaitingForApproval"
    assert "outcome is unknown" in action.event.message
    assert isinstance(decide(state, NOW), Wait)  # still interrupted: it does not just run
    digest = call_digest("rm", '{"path": "/tmp/x"}')
    state, action = step(state, NOW, approval(digest=digest))
    run = execute(action)
    assert run.result is None and run.intent["interruptions"] == 1
    # Interrupted again during the rerun: the decision was spent; a new one is needed.
    state, action = step(state, NOW + timedelta(seconds=1), approval(digest=digest))
    rec = state.status.approval
    assert isinstance(action, WriteStatus)
    assert rec is not None and (rec.for_interruptions, rec.decision) == (2, None)
    assert rec.used == ("uid-a1",)
    assert isinstance(decide(replace(state, approvals=(approval(digest=digest),)), NOW), Wait)
    _, action = step(state, NOW, approval(digest=digest, name="a2"))
    assert execute(action).intent["interruptions"] == 2


def test_a_denied_rerun_tells_the_model_the_outcome_is_unknown() -> None:
    state, _ = step(interrupted_mcp("AskApproval"))
    digest = call_digest("rm", '{"path": "/tmp/x"}')
    _, action = step(state, NOW, approval("Deny", digest=digest, reason="checked: it ran"))
    run = execute(action)
    assert run.result is not None
    assert "unknown" in run.result and "checked: it ran" in run.result


def test_an_approved_call_that_is_interrupted_follows_its_unknown_outcome_policy() -> None:
    state = interrupted_mcp("Redeliver", needs="Required")
    rec = ApprovalRecord(
        iteration=1, tool_call_id="c1", tool_name="rm", arguments="{}", arguments_digest="x",
        requested_at=T0, decision="Approve", decided_by="alice",
    )  # fmt: skip
    state = replace(state, status=state.status.model_copy(update={"approval": rec}))
    run = execute(decide(state, NOW))
    assert run.result is None and run.intent["interruptions"] == 1  # redelivered, not re-asked


def test_the_poison_pill_limit_still_applies_while_asking() -> None:
    state = interrupted_mcp("AskApproval")
    state = replace(state, status=state.status.model_copy(update={"interruptions": 5}))
    action = write(decide(state, NOW))
    assert action.patch["reason"] == "StepInterrupted"


def test_every_approval_patch_records_the_generation() -> None:
    state = waiting_for_deploy()
    action = write(decide(state, NOW))
    assert action.patch["observedGeneration"] == GEN
