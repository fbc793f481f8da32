"""``decide(state, now)``: the next action for a task, from its whole state. Level-triggered.

Every wake-up reads spec, status and the committed transcript, and calls ``decide``; it never
matters whether this is a creation, an update or a resume after a crash:

1. ended → wait for ``ttlSecondsAfterFinished``, then delete; otherwise nothing, ever;
   being deleted → nothing; committed transcript entries gone → Failed ``TranscriptLost``
   (never run a finished step again);
2. what the operator will not give: a tool neither built in nor HTTP → Failed ``UnknownTool``;
   built-ins outside their allowed namespaces → ``ToolNotAllowed``; a URL whose host is not on
   the allow-list → ``URLNotAllowed``; the default endpoint without a default key →
   ``ModelCredentialsMissing``; a ``modelRef`` to no AgentModel → ``AgentModelNotFound``
   (checked at every wake-up: nothing is sent before);
3. a step in flight whose result is stored → commit it (never run it again);
4. ``spec.suspend`` → record the suspension and wait; unsuspended → record the resumption;
5. not started → resolve the tools of ``toolServerRef`` entries (``core.tooling``: refuse, or
   wait for a server's first discovery), then start, storing what ``modelRef`` and
   ``toolServerRef`` resolved to;
   past ``activeDeadlineSeconds`` → Failed ``DeadlineExceeded``;
6. a step in flight without result: wait for its retry time; an attempt interrupted (intent
   stored, no outcome) runs again under the same number — not counted against ``maxAttempts`` —
   up to ``maxInterruptions`` times (``StepInterrupted``); give up after ``maxAttempts``
   (``RetriesExhausted``), or run the next attempt (an LLM step's intent also records in
   ``status.model`` where requests go and with which credential, when that changes);
7. otherwise the next step: a tool call without result, the next LLM request (at most
   ``maxIterations``, else ``MaxIterationsExceeded``; within ``budget``, else
   ``BudgetExceeded``), or the final answer (``Succeeded``).

Bookkeeping writes (start, resume, commit) are merged with the write that follows them (the
next step's intent, or the end), so that each step costs one status write.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from agenttask_operator.core import approval, parallel, status, transcript
from agenttask_operator.core.actions import Action, Delete, Event, Execute, Noop, Wait, WriteStatus
from agenttask_operator.core.conversation import Answer, next_step, project
from agenttask_operator.core.credentials import model_access, refused_urls
from agenttask_operator.core.deadline import attempt_timeout, deadline, deadline_passed, later
from agenttask_operator.core.errors import Failure
from agenttask_operator.core.retry import next_retry_time
from agenttask_operator.core.tooling import (
    RETRY_SECONDS,
    NotYet,
    Refusal,
    resolve_tools,
    server_refs,
)
from agenttask_operator.models import AgentTaskStatus, ParallelCall, Step, TaskState


def describe(step: Step) -> str:
    """Human wording of a step for messages and logs."""
    if step.kind == "LLM":
        return f"LLM request {step.iteration}"
    return f"tool call {step.tool_name!r} ({step.tool_call_id}) of iteration {step.iteration}"


def unknown_tools(state: TaskState) -> list[str]:
    """Tools that are neither HTTP nor MCP tools nor built-ins of this operator."""
    return [t.name for t in state.spec.tools if t.builtin and t.name not in state.builtin_tools]


def _refused(state: TaskState) -> tuple[str, str] | None:
    """``(reason, message)`` if the task asks for what this operator will not give it."""
    unknown = unknown_tools(state)
    if unknown:
        known = ", ".join(sorted(state.builtin_tools)) or "none"
        msg = (
            f"unknown built-in tool(s) {', '.join(unknown)}: give them an `http:` endpoint or use "
            f"a built-in of this operator ({known})"
        )
        return "UnknownTool", msg
    policy = state.policy
    builtins = [t.name for t in state.spec.tools if t.builtin]
    if builtins and not policy.builtins_allowed(state.namespace):
        msg = (
            f"built-in tool(s) {', '.join(builtins)} are not enabled for namespace "
            f"{state.namespace!r} (the operator allows them in: "
            f"{', '.join(policy.builtin_namespaces)})"
        )
        return "ToolNotAllowed", msg
    model = state.model
    ref = state.spec.model.model_ref
    if model is None and ref is not None:
        msg = f"spec.model.modelRef: AgentModel {state.namespace}/{ref.name} not found"
        return "AgentModelNotFound", msg
    refused = refused_urls(state.spec, policy, model)
    if refused:
        hosts = ", ".join(policy.allowed_hosts)
        named = "; ".join(f"{field} {url}" for field, url in refused)
        return "URLNotAllowed", f"{named}: host not in the operator's allowed hosts ({hosts})"
    if model is not None and model_access(model, policy).missing:
        msg = "no API key: set spec.model.apiKeySecretRef or the operator's OPENAI_API_KEY"
        return "ModelCredentialsMissing", msg
    return None


def fail(state: TaskState, now: datetime, reason: str, message: str) -> WriteStatus:
    """End the task Failed with ``reason``."""
    patch = status.finish(state, now, succeeded=False, reason=reason, message=message)
    return WriteStatus(patch, message, Event("Warning", reason, message))


def decide(state: TaskState, now: datetime) -> Action:
    """Return the next action for ``state`` at time ``now``."""
    st, spec = state.status, state.spec
    if st.terminal:
        return _after_end(state, now)
    if state.deleting:
        return Noop("task is being deleted")
    missing = None if state.stored is None else transcript.lost(st.transcript, state.stored)
    if missing is not None:
        return fail(state, now, "TranscriptLost", missing)
    refused = _refused(state)
    if refused is not None:
        return fail(state, now, *refused)
    step = st.current_step
    if step is not None and any(e.answers(step) for e in state.transcript):
        commit = status.commit(state, project(state.transcript))
        return _then(state, commit, now, f"commit {describe(step)}")
    if spec.suspend:
        if st.suspended_since is None:
            patch = status.suspend(state, now)
            return WriteStatus(patch, "suspend", Event("Normal", "Suspended", patch["message"]))
        return Wait(None, "suspended until spec.suspend is false")
    if st.suspended_since is not None:
        patch = status.resume(state, now)
        return _then(state, patch, now, "resume", Event("Normal", "Resumed", patch["message"]))
    if st.start_time is None:
        tools = resolve_tools(state)
        if isinstance(tools, Refusal):
            return fail(state, now, tools.reason, tools.message)
        if isinstance(tools, NotYet):
            return Wait(later(now, RETRY_SECONDS), tools.why)
        patch = status.start(state, now)
        if server_refs(state):
            patch["resolvedTools"] = [t.to_api() for t in tools]
        if spec.model.model_ref is not None and state.model is not None:
            # Fixed for the whole run: an edit of the AgentModel never changes a task in flight.
            patch["resolvedModel"] = state.model.to_api()
        return _then(state, patch, now, "start", Event("Normal", "Started", patch["message"]))
    if deadline_passed(spec, st, now):
        last = f"; last error: {st.last_error}" if st.last_error else ""
        msg = f"activeDeadlineSeconds={spec.active_deadline_seconds:g} passed{last}"
        return fail(state, now, "DeadlineExceeded", msg)

    projection = project(state.transcript)
    step = st.current_step
    if step is not None:
        if st.next_retry_time is not None and now < st.next_retry_time:
            return Wait(st.next_retry_time, f"retry {describe(step)}")
        if interrupted(st):
            return _after_interruption(state, step, now)
        if st.attempts >= spec.retry.max_attempts:  # on_failure ends such tasks already
            msg = f"{describe(step)} failed {st.attempts} time(s); last error: {st.last_error}"
            return fail(state, now, "RetriesExhausted", msg)
        return _gated(state, step, st.attempts + 1, now, rerun=False)

    if (st.iterations, st.tool_calls, st.usage) != (
        projection.iterations,
        projection.tool_calls,
        projection.usage,
    ) or len(status.open_calls(state)) < len(st.parallel_calls):
        return _then(state, status.commit(state, projection), now, "bring counters up to date")

    nxt = next_step(state.transcript)
    entry = None if isinstance(nxt, Answer) else parallel.entry_for(state, nxt)
    if entry is not None:  # it ran alongside the step before and has no result yet
        patch = parallel.promote(state, entry)
        return _then(state, patch, now, f"take up {describe(entry.step)}")
    if isinstance(nxt, Answer):
        return _final(state, nxt, now)
    if nxt.kind == "LLM" and nxt.iteration > spec.max_iterations:
        msg = f"the model still asked for tools after maxIterations={spec.max_iterations} LLM calls"
        return fail(state, now, "MaxIterationsExceeded", msg)
    over = _over_budget(state, nxt)
    if over:
        return fail(state, now, "BudgetExceeded", over)
    started = now.replace(microsecond=0)  # as persisted: status timestamps have seconds
    return _gated(state, nxt.model_copy(update={"start_time": started}), 1, now, rerun=False)


def interrupted(st: AgentTaskStatus) -> bool:
    """Whether the attempt in flight was interrupted: its intent is stored, no outcome is.

    A failed attempt records ``nextRetryTime`` (or ends the task); a stored result is committed
    before this is asked. So an intent alone means the operator stopped (or lost the task)
    while the attempt ran: a restart, a rollout, a crash — not a failure of the step.
    """
    return st.current_step is not None and st.attempts >= 1 and st.next_retry_time is None


def _after_interruption(state: TaskState, step: Step, now: datetime) -> Action:
    """Run the interrupted attempt again, under the same number: an interruption is not a failed
    attempt and never uses up ``retry.maxAttempts``. Past ``maxInterruptions`` of the same
    step it may be the step that stops the operator (a poison pill): ``StepInterrupted``.
    """  # noqa: D205
    st, limit = state.status, state.spec.max_interruptions
    n = st.interruptions + 1
    if n > limit:
        msg = (
            f"{describe(step)} was interrupted {st.interruptions} time(s) (maxInterruptions="
            f"{limit}): the operator stopped or lost the task each time it ran; it may be what "
            f"stops the operator (attempt {st.attempts}, "
            f"started {status.ts(step.start_time or now)})"
        )
        return fail(state, now, "StepInterrupted", msg)
    rerun = False
    rec = approval.record_for(state, step)
    if step.kind == "Tool" and not (rec is not None and rec.decision == "Deny"):
        # Whether the call took effect is unknown: the tool's onUnknownOutcome decides.
        on_unknown = approval.policy(state, step.tool_name or "").on_unknown_outcome
        if on_unknown == "Fail":
            msg = (
                f"{describe(step)} was interrupted (attempt {st.attempts}, started "
                f"{status.ts(step.start_time or now)}): the operator stopped while it ran, so "
                "whether it took effect is unknown, and its onUnknownOutcome is Fail"
            )
            return fail(state, now, "ToolOutcomeUnknown", msg)
        rerun = on_unknown == "AskApproval"
    action = _gated(state, step, max(st.attempts, 1), now, rerun=rerun)
    if not isinstance(action, Execute):
        return action  # waiting for a decision to run it again
    why = f"{describe(step)}, attempt {st.attempts} was interrupted ({n} of {limit} allowed)"
    event = Event("Warning", "Interrupted", f"{why}; running it again")
    return replace(action, intent=action.intent | {"interruptions": n}, event=event)


def _gated(state: TaskState, step: Step, attempt: int, now: datetime, *, rerun: bool) -> Action:
    """Execute ``step``, unless it is a tool call that must wait for a person's decision."""
    if step.kind == "Tool":
        gate = approval.gate(state, step, now, rerun=rerun)
        if isinstance(gate, approval.Denied):
            return replace(_execute(state, step, attempt, now, alone=True), result=gate.message)
        if isinstance(gate, WriteStatus) and (gate.patch.get("approval") or {}).get("decision"):
            # A decision was just found: record it in the same write as what it leads to.
            return _then(state, gate.patch, now, gate.why, gate.event)
        if not isinstance(gate, approval.Proceed):
            return gate
    return _execute(state, step, attempt, now)


def _execute(
    state: TaskState, step: Step, attempt: int, now: datetime, *, alone: bool = False
) -> Execute:
    timeout = attempt_timeout(state.spec, state.status, now)
    intent = status.intent(state, step, attempt, now)
    extras = [] if alone else parallel.extras(state, step, now)
    if extras:  # their intents go in the same write as the step's
        intent["parallelCalls"] = parallel.entries(state, extras)
    model = state.model
    if step.kind == "LLM" and model is not None:  # where requests go, with which key
        access = model_access(model, state.policy).status()
        if state.status.model != access:
            intent["model"] = access.to_api()
    return Execute(step, attempt, intent, timeout, extras=tuple(extras))


def _then(
    state: TaskState, patch: dict[str, object], now: datetime, why: str, event: Event | None = None
) -> Action:
    """Write ``patch`` together with whatever comes right after it (an intent or the end)."""
    after = decide(status.apply(state, patch), now)
    if isinstance(after, Execute):
        return replace(after, intent=patch | after.intent, event=event or after.event)
    if isinstance(after, WriteStatus) and "phase" in after.patch and event is None:
        return WriteStatus(patch | after.patch, f"{why}; {after.why}", after.event)
    return WriteStatus(dict(patch), why, event)


def _over_budget(state: TaskState, step: Step) -> str | None:
    budget, st = state.spec.budget, state.status
    tokens, calls = budget.max_total_tokens, budget.max_tool_calls
    if step.kind == "LLM" and tokens is not None and st.usage.total_tokens >= tokens:
        return (
            f"budget.maxTotalTokens={tokens} reached ({st.usage.total_tokens} tokens used) "
            f"before LLM request {step.iteration}"
        )
    if step.kind == "Tool" and calls is not None and st.tool_calls >= calls:
        return f"budget.maxToolCalls={calls} reached before {describe(step)}"
    return None


def _after_end(state: TaskState, now: datetime) -> Action:
    ttl = state.spec.ttl_seconds_after_finished
    done = state.status.completion_time
    if ttl is None or done is None:
        return Noop(f"task has ended ({state.status.phase})")
    expiry = later(done, ttl)
    if now >= expiry:
        return Delete(f"ttlSecondsAfterFinished={ttl:g} has passed")
    return Wait(expiry, f"delete at ttlSecondsAfterFinished={ttl:g}")


def _final(state: TaskState, answer: Answer, now: datetime) -> WriteStatus:
    if answer.finish_reason == "length":
        msg = "the model's answer was cut off at maxTokens (finish_reason=length)"
        patch = status.finish(
            state,
            now,
            succeeded=False,
            reason="OutputTruncated",
            message=msg,
            result=answer.content,
        )
        return WriteStatus(patch, msg, Event("Warning", "OutputTruncated", msg))
    if answer.finish_reason == "content_filter":
        return fail(
            state, now, "ContentFiltered", "the model's answer was withheld by its content filter"
        )
    msg = f"The model answered after {state.status.iterations} LLM call(s)."
    patch = status.finish(
        state, now, succeeded=True, reason="Completed", message=msg, result=answer.content
    )
    return WriteStatus(patch, "final answer", Event("Normal", "Succeeded", msg))


def on_failure(
    state: TaskState, step: Step, attempt: int, failure: Failure, now: datetime, jitter: float
) -> WriteStatus:
    """The status patch after attempt ``attempt`` of ``step`` failed.

    Past the deadline → ``DeadlineExceeded``. Permanent → Failed with the failure's reason.
    Transient → retry at a backoff time computed from the attempt count (or the server's
    Retry-After if longer, but never beyond the deadline), unless attempts are used up.
    """
    spec, st = state.spec, state.status
    if deadline_passed(spec, st, now):
        limit_s = f"activeDeadlineSeconds={spec.active_deadline_seconds:g}"
        msg = f"{limit_s} passed during {describe(step)}: {failure.message}"
        return fail(state, now, "DeadlineExceeded", msg)
    if not failure.transient:
        return fail(state, now, failure.reason, f"{describe(step)} failed: {failure.message}")
    policy = spec.retry
    if attempt >= policy.max_attempts:
        msg = f"{describe(step)} failed {attempt} time(s); last error: {failure.message}"
        return fail(state, now, "RetriesExhausted", msg)
    at = next_retry_time(policy, attempt, now, jitter, failure.retry_after)
    limit = deadline(spec, st)
    if limit is not None and at > limit:
        at = limit
    wait = (at - now).total_seconds()
    msg = f"{describe(step)}, attempt {attempt} failed: {failure.message}; retry in {wait:.1f}s"
    return WriteStatus(
        status.retry_later(attempt, failure.message, at), msg, Event("Warning", "Retrying", msg)
    )


def on_parallel_failure(
    state: TaskState, step: Step, failure: Failure, now: datetime, jitter: float
) -> WriteStatus | ParallelCall:
    """After a call run alongside the step in flight failed: the task's end (as
    :func:`on_failure` would decide for a step of its own), or its ``parallelCalls`` entry
    with the failure and the time of its next attempt, taken up once the calls before it are
    done.
    """  # noqa: D205
    entry = parallel.entry_for(state, step)
    attempt = entry.attempts if entry is not None else 1
    outcome = on_failure(state, step, attempt, failure, now, jitter)
    if "phase" in outcome.patch:
        return outcome
    base = entry or ParallelCall(
        iteration=step.iteration,
        tool_call_id=str(step.tool_call_id),
        tool_name=step.tool_name,
        start_time=step.start_time,
    )
    return ParallelCall.model_validate(base.to_api() | outcome.patch)


def on_batch_failure(
    state: TaskState,
    action: Execute,
    failures: Sequence[Failure | None],
    now: datetime,
    jitters: Sequence[float],
) -> WriteStatus:
    """The one status write after some of a batch failed (``failures``: one per step of
    ``action``, the step first, then its extras; None where the result is stored): the step's
    failure as :func:`on_failure` records it, each failed extra's in its ``parallelCalls``
    entry (:func:`on_parallel_failure`) — or, if any failure ends the task, that end alone.
    ``jitters``: one per step, as for :func:`on_failure`.
    """  # noqa: D205
    patch: dict[str, Any] = {}
    why: list[str] = []
    event = None
    steps = (action.step, *action.extras)
    for step, failure, jitter in zip(steps, failures, jitters, strict=True):
        if failure is None:
            continue
        if step is action.step:
            outcome: WriteStatus | ParallelCall = on_failure(
                state, step, action.attempt, failure, now, jitter
            )
        else:
            outcome = on_parallel_failure(state, step, failure, now, jitter)
        if isinstance(outcome, WriteStatus) and "phase" in outcome.patch:
            return outcome  # the end: nothing else matters
        if isinstance(outcome, WriteStatus):
            patch |= outcome.patch
            event = event or outcome.event
            why.append(outcome.why)
            continue
        calls = patch.get("parallelCalls") or [p.to_api() for p in state.status.parallel_calls]
        patch["parallelCalls"] = [
            outcome.to_api() if p["toolCallId"] == outcome.tool_call_id else p for p in calls
        ]
        msg = f"{describe(step)} failed: {failure.message}; it will be retried"
        event = event or Event("Warning", "Retrying", msg)
        why.append(msg)
    return WriteStatus(patch, "; ".join(why), event)
