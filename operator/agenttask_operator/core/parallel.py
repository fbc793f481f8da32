"""Tool calls of one answer run at once, up to ``spec.maxParallelToolCalls``. Pure.

The step in flight stays ``status.currentStep``, with everything the sequential loop knows
about it (attempts, retry time, interruptions, approval). Calls of the same answer started
alongside it are *extras*: each gets an entry in ``status.parallelCalls`` — written in the same
status write as the step's intent, before any of them runs — and its own idempotency key and
result. When the batch is over, a call without a stored result (it failed, or the operator
stopped while it ran) waits in ``parallelCalls`` until the calls before it are done, then
becomes ``currentStep`` carrying its attempts, retry time and interruptions (see
:func:`promote`), and goes on exactly as a sequential step would: retried, run again after an
interruption (per its ``onUnknownOutcome``), or failed.

Only calls that need nobody's decision run as extras: a call that needs an approval waits
until it is the step in flight, as before. ``budget.maxToolCalls`` counts the calls in flight.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from agenttask_operator.core import approval
from agenttask_operator.core.conversation import answered_calls, tool_calls_of
from agenttask_operator.core.status import current_step, open_calls, ts
from agenttask_operator.models import ParallelCall, Step, TaskState


def entry_for(state: TaskState, step: Step) -> ParallelCall | None:
    """The ``parallelCalls`` entry of ``step``'s call, if it has one."""
    return next(
        (
            p
            for p in state.status.parallel_calls
            if step.kind == "Tool"
            and p.iteration == step.iteration
            and p.tool_call_id == step.tool_call_id
        ),
        None,
    )


def extras(state: TaskState, step: Step, now: datetime) -> list[Step]:
    """The calls to start alongside ``step`` (a tool call about to run): the next calls of the
    same answer that have no result, no entry and need no decision, in order, as many as
    ``maxParallelToolCalls`` and ``budget.maxToolCalls`` allow.
    """  # noqa: D205
    limit = state.spec.max_parallel_tool_calls
    if step.kind != "Tool" or limit <= 1:
        return []
    llm = next(
        (e for e in reversed(state.transcript) if e.kind == "LLM"),
        None,
    )
    if llm is None or llm.iteration != step.iteration:
        return []
    st = state.status
    taken = {c for i, c in answered_calls(state.transcript) if i == step.iteration}
    taken.add(str(step.tool_call_id))
    taken |= {p.tool_call_id for p in st.parallel_calls if p.iteration == step.iteration}
    budget = state.spec.budget.max_tool_calls
    in_flight = st.tool_calls + 1 + len(st.parallel_calls)  # counted against the budget
    started = now.replace(microsecond=0)
    out: list[Step] = []
    for call in tool_calls_of(llm):
        call_id = str(call.get("id"))
        if call_id in taken:
            continue
        if len(out) + 1 >= limit or (budget is not None and in_flight + len(out) >= budget):
            break
        fn = call.get("function")
        name = str(fn.get("name", "")) if isinstance(fn, dict) else ""
        extra = Step(
            kind="Tool",
            iteration=step.iteration,
            tool_call_id=call_id,
            tool_name=name,
            start_time=started,
        )
        if not isinstance(approval.gate(state, extra, now, rerun=False), approval.Proceed):
            break  # it waits for a decision as the step in flight; so do the calls after it
        out.append(extra)
    return out


def entries(state: TaskState, started: list[Step]) -> list[dict[str, Any]] | None:
    """``parallelCalls`` as written with an intent: the unfinished entries and ``started``."""
    new = [
        ParallelCall(
            iteration=s.iteration,
            tool_call_id=str(s.tool_call_id),
            tool_name=s.tool_name,
            start_time=s.start_time,
        ).to_api()
        | {"startTime": ts(s.start_time)}
        for s in started
        if s.start_time is not None
    ]
    return [p.to_api() for p in open_calls(state)] + new or None


def promote(state: TaskState, entry: ParallelCall) -> dict[str, Any]:
    """The status patch that makes ``entry`` the step in flight, with its own counts."""
    rest = [p.to_api() for p in open_calls(state) if p != entry]
    step = entry.step
    current = (
        {"toolCallId": None, "toolName": None} | step.to_api()
        if step.start_time is None  # only a hand-edited entry has none: none is written
        else current_step(step, step.start_time)
    )
    return {
        "currentStep": current,
        "attempts": entry.attempts,
        "nextRetryTime": entry.to_api().get("nextRetryTime"),
        "lastError": entry.last_error,
        "interruptions": entry.interruptions or None,
        "parallelCalls": rest or None,
    }
