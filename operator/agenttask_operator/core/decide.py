"""``decide(state, now)``: the next action for a task, from its whole state. Level-triggered.

Every wake-up reads spec, status and the committed transcript, and calls ``decide``; it never
matters whether this is a creation, an update or a resume after a crash:

1. ended → nothing; being deleted → nothing;
2. a tool neither built in nor HTTP → Failed ``UnknownTool``; not started → start;
3. a step in flight whose result is stored → commit it (never run it again);
4. a step in flight without result: wait for its retry time, give up after ``maxAttempts``
   (``RetriesExhausted``), or run the next attempt;
5. otherwise the next step: a tool call without result, the next LLM request (at most
   ``maxIterations``, else ``MaxIterationsExceeded``), or the final answer (``Succeeded``).
"""

from __future__ import annotations

from datetime import datetime

from agenttask_operator.core import status
from agenttask_operator.core.actions import Action, Execute, Noop, Wait, WriteStatus
from agenttask_operator.core.conversation import Answer, next_step, project
from agenttask_operator.core.errors import Failure
from agenttask_operator.core.retry import next_retry_time
from agenttask_operator.models import Step, TaskState


def describe(step: Step) -> str:
    """Human wording of a step for messages and logs."""
    if step.kind == "LLM":
        return f"LLM request {step.iteration}"
    return f"tool call {step.tool_name!r} ({step.tool_call_id}) of iteration {step.iteration}"


def unknown_tools(state: TaskState) -> list[str]:
    """Tools that are neither HTTP tools nor built-ins of this operator."""
    return [
        t.name for t in state.spec.tools if t.http is None and t.name not in state.builtin_tools
    ]


def decide(state: TaskState, now: datetime) -> Action:
    """Return the next action for ``state`` at time ``now``."""
    st, spec = state.status, state.spec
    if st.terminal:
        return Noop(f"task has ended ({st.phase})")
    if state.deleting:
        return Noop("task is being deleted")
    unknown = unknown_tools(state)
    if unknown:
        known = ", ".join(sorted(state.builtin_tools)) or "none"
        msg = (
            f"unknown built-in tool(s) {', '.join(unknown)}: give them an `http:` endpoint or use "
            f"a built-in of this operator ({known})"
        )
        return WriteStatus(
            status.finish(state, now, succeeded=False, reason="UnknownTool", message=msg), msg
        )
    if st.start_time is None:
        return WriteStatus(status.start(state, now), "start")

    projection = project(state.transcript)
    step = st.current_step
    if step is not None:
        if any(e.answers(step) for e in state.transcript):
            return WriteStatus(status.commit(state, projection), f"commit {describe(step)}")
        if st.next_retry_time is not None and now < st.next_retry_time:
            return Wait(st.next_retry_time, f"retry {describe(step)}")
        if st.attempts >= spec.retry.max_attempts:
            last = st.last_error or "interrupted"
            msg = f"{describe(step)} failed {st.attempts} time(s); last error: {last}"
            return WriteStatus(
                status.finish(state, now, succeeded=False, reason="RetriesExhausted", message=msg),
                msg,
            )
        return Execute(step, st.attempts + 1, status.intent(state, step, st.attempts + 1, now))

    if (st.iterations, st.tool_calls, st.usage) != (
        projection.iterations,
        projection.tool_calls,
        projection.usage,
    ):
        return WriteStatus(status.commit(state, projection), "bring counters up to date")

    nxt = next_step(state.transcript)
    if isinstance(nxt, Answer):
        return _final(state, nxt, now)
    if nxt.kind == "LLM" and nxt.iteration > spec.max_iterations:
        msg = f"the model still asked for tools after maxIterations={spec.max_iterations} LLM calls"
        return WriteStatus(
            status.finish(state, now, succeeded=False, reason="MaxIterationsExceeded", message=msg),
            msg,
        )
    started = nxt.model_copy(update={"start_time": now})
    return Execute(started, 1, status.intent(state, started, 1, now))


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
        return WriteStatus(patch, msg)
    if answer.finish_reason == "content_filter":
        msg = "the model's answer was withheld by its content filter"
        return WriteStatus(
            status.finish(state, now, succeeded=False, reason="ContentFiltered", message=msg), msg
        )
    patch = status.finish(
        state,
        now,
        succeeded=True,
        reason="Completed",
        message=f"The model answered after {state.status.iterations} LLM call(s).",
        result=answer.content,
    )
    return WriteStatus(patch, "final answer")


def on_failure(
    state: TaskState, step: Step, attempt: int, failure: Failure, now: datetime, jitter: float
) -> WriteStatus:
    """The status patch after attempt ``attempt`` of ``step`` failed.

    Permanent → Failed with the failure's reason. Transient → retry at a backoff time computed
    from the attempt count (or the server's Retry-After), unless attempts are used up.
    """
    if not failure.transient:
        msg = f"{describe(step)} failed: {failure.message}"
        return WriteStatus(
            status.finish(state, now, succeeded=False, reason=failure.reason, message=msg), msg
        )
    policy = state.spec.retry
    if attempt >= policy.max_attempts:
        msg = f"{describe(step)} failed {attempt} time(s); last error: {failure.message}"
        return WriteStatus(
            status.finish(state, now, succeeded=False, reason="RetriesExhausted", message=msg), msg
        )
    at = next_retry_time(policy, attempt, now, jitter, failure.retry_after)
    return WriteStatus(
        status.retry_later(attempt, failure.message, at), f"retry at {status.ts_ms(at)}"
    )
