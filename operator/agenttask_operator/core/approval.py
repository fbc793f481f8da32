"""Tool calls that wait for a person: which need approval, and the gate before they run. Pure.

**Which tools.** A tool needs approval when an explicit setting says ``Required``: the task's
``spec.tools[].approval``, or the AgentToolServer's (its ``tools[].approval`` for that tool,
else its ``approval``); ``Required`` from either wins over ``Never`` from the other, so a task
cannot waive what the server requires. With no explicit setting (``Auto``), an
MCP tool needs it when the server's hints say it may be destructive and is not read-only
(MCP's defaults: ``destructiveHint`` true, ``readOnlyHint`` false, so an unannotated tool
needs approval). Hints are untrusted: an explicit setting always wins. HTTP and built-in tools
need approval only when the task says so.

**Unknown outcomes.** When the operator stopped while a call ran, ``onUnknownOutcome`` says
what happens: the task's setting, else the server's per-tool one, else ``Redeliver`` for HTTP
and built-in tools (they get the idempotency key) and for MCP tools that are idempotent
(``tools[].idempotent``, ``idempotentHint``) or read-only, and ``AskApproval`` for the other
MCP tools. ``Fail`` is applied by ``core.decide`` (``ToolOutcomeUnknown``).

**The gate.** Before a call that needs a decision runs, the task records the exact call
(``status.approval``: tool, arguments, the digest of both) and waits. An AgentToolApproval of
this task, this call and this digest decides: the earliest one created (Deny first on a tie),
never one created before the task, never one already spent on this call. One with the call's
id but another digest is refused (marked ``Accepted=False``) and never applied. Past
``spec.approval.timeoutSeconds`` the timeout decides (``onTimeout: Deny``, the default, or
``Fail``). Approve → the call runs; Deny → the model gets a tool error saying so and why.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from agenttask_operator.core import status
from agenttask_operator.core.actions import Action, Event, Wait, WriteStatus
from agenttask_operator.core.conversation import find_tool_call
from agenttask_operator.core.deadline import deadline, later
from agenttask_operator.models import ApprovalRecord, Step, TaskState, ToolSpec
from agenttask_operator.models.approval import ApprovalNote, Decision
from agenttask_operator.models.spec import OnUnknownOutcome
from agenttask_operator.models.toolserver import AgentToolServerSpec, ToolStatus

ARGUMENTS_LIMIT = 4096  # characters of the arguments kept in status.approval
OPERATOR = "agenttask-operator"  # decidedBy of a decision the timeout made
Needs = Literal["Required", "Never"]


def call_digest(name: str, arguments: str) -> str:
    """``sha256:<hex>`` of the compact JSON array ``[name, arguments]`` (arguments as the
    model wrote them): what a reviewer approves, and what an approval must name.
    """  # noqa: D205
    text = json.dumps([name, arguments], ensure_ascii=False, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def mcp_policy(
    entry: ToolSpec, server: AgentToolServerSpec, tool: ToolStatus
) -> tuple[Needs, OnUnknownOutcome]:
    """The approval and unknown-outcome policy of one MCP tool, fixed when the task starts."""
    override = server.override(tool.name)
    # The server's setting: its per-tool one, else its own; then the stricter of it and the
    # task's (a task cannot waive what the server requires).
    by_server = override.approval if override and override.approval != "Auto" else None
    explicit = [entry.approval, by_server or server.approval]
    if "Required" in explicit:
        needs: Needs = "Required"
    elif "Never" in explicit:
        needs = "Never"
    else:  # Auto: the server's (untrusted) hints, MCP defaults filled in
        needs = "Required" if tool.destructive_hint and not tool.read_only_hint else "Never"
    if entry.on_unknown_outcome is not None:
        return needs, entry.on_unknown_outcome
    if override is not None and override.on_unknown_outcome is not None:
        return needs, override.on_unknown_outcome
    idempotent = override.idempotent if override and override.idempotent is not None else None
    if idempotent is None:
        idempotent = tool.idempotent_hint or tool.read_only_hint
    return needs, "Redeliver" if idempotent else "AskApproval"


@dataclass(frozen=True)
class ToolPolicy:
    """What a tool call needs: approval before it runs; what to do when its outcome is lost."""

    approval: bool
    on_unknown_outcome: OnUnknownOutcome


def policy(state: TaskState, name: str) -> ToolPolicy:
    """The policy of the tool ``name``: an MCP tool's as resolved at start, or the spec's."""
    for r in state.status.resolved_tools or ():
        if r.name == name:
            return ToolPolicy(r.approval == "Required", r.on_unknown_outcome)
    for t in state.spec.tools:
        if t.tool_server_ref is None and t.name == name:
            return ToolPolicy(t.approval == "Required", t.on_unknown_outcome or "Redeliver")
    return ToolPolicy(False, "Redeliver")  # unknown to the task: the call gets an error anyway


@dataclass(frozen=True)
class Proceed:
    """Run the call: it needs no decision, or it was approved."""


@dataclass(frozen=True)
class Denied:
    """Record ``message`` as the call's result (a tool error) instead of running it."""

    message: str


Gate = Action | Proceed | Denied


def record_for(state: TaskState, step: Step) -> ApprovalRecord | None:
    """``status.approval`` if it is about ``step``'s call."""
    rec = state.status.approval
    return rec if rec is not None and rec.for_step(step) else None


def gate(state: TaskState, step: Step, now: datetime, *, rerun: bool) -> Gate:
    """What stands between ``step`` (a tool call about to run) and its execution.

    ``rerun``: the call was interrupted and its policy says ``AskApproval``: it may run again
    only under a fresh decision for that execution. Otherwise the call needs a decision only
    if its tool requires one, and a decision holds for the retries of failed attempts (under
    the same idempotency key) and for redeliveries.
    """
    rec = record_for(state, step)
    if rerun:
        run = state.status.interruptions + 1
        if rec is None or rec.purpose != "Rerun" or rec.for_interruptions != run:
            return _request(state, step, "Rerun", run, now, rec)
    elif rec is None:
        if not policy(state, step.tool_name or "").approval:
            return Proceed()
        return _request(state, step, "Run", state.status.interruptions, now, None)
    if rec.decision == "Approve":
        return Proceed()
    if rec.decision == "Deny":
        return Denied(denial(rec))
    return _pending(state, rec, now)


def _request(
    state: TaskState,
    step: Step,
    purpose: Literal["Run", "Rerun"],
    run: int,
    now: datetime,
    previous: ApprovalRecord | None,
) -> WriteStatus:
    call = find_tool_call(state.transcript, step) or {}
    fn = call.get("function") if isinstance(call.get("function"), dict) else {}
    raw = (fn or {}).get("arguments") or ""
    arguments = raw if isinstance(raw, str) else json.dumps(raw, separators=(",", ":"))
    name = step.tool_name or ""
    used = previous.used if previous is not None else ()
    if previous is not None and previous.approval_uid:
        used = (*used, previous.approval_uid)
    timeout = state.spec.approval.timeout_seconds
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)  # as stored (milliseconds)
    rec = ApprovalRecord(
        iteration=step.iteration,
        tool_call_id=step.tool_call_id or "",
        tool_name=name,
        arguments=status.clip(arguments, ARGUMENTS_LIMIT),
        arguments_digest=call_digest(name, arguments),
        purpose=purpose,
        for_interruptions=run,
        requested_at=now,
        timeout_time=later(now, timeout) if timeout is not None else None,
        used=used,
    )
    what = f"tool call {name!r} ({rec.tool_call_id}) of iteration {step.iteration}"
    if purpose == "Rerun":
        why = (
            f"{what} was interrupted: the operator stopped while it ran, so its outcome is "
            "unknown; approve to run it again, or deny"
        )
    else:
        why = f"{what} needs approval before it runs"
    msg = (
        f"{why}: create an AgentToolApproval with task {state.name}, toolCallId "
        f"{rec.tool_call_id}, argumentsDigest {rec.arguments_digest}"
    )
    patch = {
        "approval": _record_api(rec),
        "phase": "WaitingForApproval",
        "reason": "ApprovalPending",
        "message": status.clip(msg, status.MESSAGE_LIMIT),
        "observedGeneration": state.generation,
        "conditions": [status.condition(state, "Unknown", "ApprovalPending", msg, now)],
    }
    if state.status.current_step is None:  # a new step: it is the one in flight from now on
        patch |= status.intent(state, step, 0, now)
    return WriteStatus(patch, f"ask approval of {what}", Event("Normal", "ApprovalRequested", msg))


def _record_api(rec: ApprovalRecord) -> dict[str, Any]:
    """The record as a merge patch that replaces the previous one field by field."""
    out: dict[str, Any] = {
        "decision": None, "decidedBy": None, "reason": None, "approvalName": None,
        "approvalUid": None, "decidedAt": None, "timeoutTime": None,
    }  # fmt: skip
    out |= rec.to_api()
    out["requestedAt"] = status.ts_ms(rec.requested_at)
    if rec.decided_at is not None:
        out["decidedAt"] = status.ts_ms(rec.decided_at)
    if rec.timeout_time is not None:
        out["timeoutTime"] = status.ts_ms(rec.timeout_time)
    out["used"] = list(rec.used)
    return out


def candidates(state: TaskState, rec: ApprovalRecord) -> list[Decision]:
    """Approvals that may decide ``rec``: this call, this digest, not spent, not older than
    the task (an approval of an earlier task of the same name never counts).
    """  # noqa: D205
    found = [
        d
        for d in state.approvals
        if d.spec.task == state.name
        and d.spec.tool_call_id == rec.tool_call_id
        and d.spec.arguments_digest == rec.arguments_digest
        and d.uid not in rec.used
        and (state.created is None or d.created >= state.created)
    ]
    return sorted(found, key=lambda d: (d.created, d.spec.decision != "Deny", d.name))


def _pending(state: TaskState, rec: ApprovalRecord, now: datetime) -> Action:
    found = candidates(state, rec)
    if found:
        d = found[0]
        return decided(state, rec, now, d.spec.decision, d.spec.decided_by, d.spec.reason, d)
    spec = state.spec.approval
    if rec.timeout_time is not None and now >= rec.timeout_time:
        limit = f"approval.timeoutSeconds={spec.timeout_seconds:g}"
        if spec.on_timeout == "Fail":
            msg = f"no decision on tool call {rec.tool_name!r} ({rec.tool_call_id}) within {limit}"
            patch = status.finish(state, now, succeeded=False, reason="ApprovalTimedOut",
                                  message=msg)  # fmt: skip
            return WriteStatus(patch, msg, Event("Warning", "ApprovalTimedOut", msg))
        why = f"no decision within {limit}"
        return decided(state, rec, now, "Deny", OPERATOR, why, None)
    if state.status.phase != "WaitingForApproval":  # e.g. resumed after a suspension
        msg = state.status.message or "waiting for approval"
        patch = {
            "phase": "WaitingForApproval",
            "reason": "ApprovalPending",
            "conditions": [status.condition(state, "Unknown", "ApprovalPending", msg, now)],
        }
        return WriteStatus(patch, "waiting for approval")
    until = [t for t in (rec.timeout_time, deadline(state.spec, state.status)) if t is not None]
    return Wait(min(until) if until else None, f"approval of tool call {rec.tool_call_id}")


def decided(
    state: TaskState,
    rec: ApprovalRecord,
    now: datetime,
    decision: Literal["Approve", "Deny"],
    by: str,
    reason: str,
    approval: Decision | None,
) -> WriteStatus:
    """Record a decision on ``rec``; the task carries on (the call runs, or is denied)."""
    done = rec.model_copy(
        update={
            "decision": decision,
            "decided_by": by,
            "reason": reason or None,
            "approval_name": approval.name if approval else None,
            "approval_uid": approval.uid if approval else None,
            "decided_at": now,
        }
    )
    verb = "approved" if decision == "Approve" else "denied"
    source = f" (AgentToolApproval {approval.name})" if approval else ""
    msg = f"tool call {rec.tool_name!r} ({rec.tool_call_id}) {verb} by {by}{source}"
    if reason:
        msg += f": {reason}"
    reason_ = "ApprovalGranted" if decision == "Approve" else "ApprovalDenied"
    patch = {
        "approval": _record_api(done),
        "phase": "Running",
        "reason": reason_,
        "message": status.clip(msg, status.MESSAGE_LIMIT),
        "conditions": [status.condition(state, "Unknown", reason_, msg, now)],
    }
    kind: Literal["Normal", "Warning"] = "Normal" if decision == "Approve" else "Warning"
    return WriteStatus(patch, msg, Event(kind, reason_, msg))


def denial(rec: ApprovalRecord) -> str:
    """The tool error the model gets for a denied call."""
    why = f": {rec.reason}" if rec.reason else ""
    if rec.purpose == "Rerun":
        return (
            "error: this call was interrupted (the operator stopped while it ran), so whether "
            f"it took effect is unknown; running it again was denied by {rec.decided_by}{why}"
        )
    return f"error: this call was denied by {rec.decided_by}{why}; it did not run"


def note(state: TaskState, step: Step) -> ApprovalNote | None:
    """Who decided about ``step``'s call, for its transcript entry."""
    rec = record_for(state, step)
    if rec is None or rec.decision is None:
        return None
    return ApprovalNote(
        decision=rec.decision,
        decided_by=rec.decided_by or "",
        reason=rec.reason,
        approval=rec.approval_name,
    )


@dataclass(frozen=True)
class Mark:
    """The ``Accepted`` condition to write on an AgentToolApproval."""

    name: str
    status: Literal["True", "False"]
    reason: str
    message: str


def marks(state: TaskState) -> list[Mark]:
    """What to mark on the AgentToolApprovals read: the one that decided the call (Applied),
    those naming the pending call with another digest (refused), each only once.
    """  # noqa: D205
    rec = state.status.approval
    if rec is None:
        return []
    out = []
    for d in state.approvals:
        if d.spec.tool_call_id != rec.tool_call_id or d.spec.task != state.name:
            continue
        if rec.approval_uid == d.uid:
            mark = Mark(d.name, "True", "Applied", f"{d.spec.decision} applied to the call")
        elif d.spec.arguments_digest != rec.arguments_digest and rec.decision is None:
            mark = Mark(
                d.name,
                "False",
                "ArgumentsDigestMismatch",
                f"argumentsDigest {d.spec.arguments_digest} is not the pending call's "
                f"({rec.arguments_digest}): the call's arguments are not the ones reviewed; "
                "nothing was applied",
            )
        else:
            continue
        if d.accepted != mark.reason:
            out.append(mark)
    return out
