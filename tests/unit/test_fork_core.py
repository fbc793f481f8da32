"""Unit tests of ``core.fork``: step numbering, the default step, and what a fork does before it
starts (resolve ``spec.forkFrom``, wait, refuse, copy), then how ``decide`` goes on from the
copy. No I/O, no clock.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agenttask_operator.core import Execute, Wait, WriteStatus, decide, queue
from agenttask_operator.core import fork as fork_
from agenttask_operator.core.fork import Copy, Ready, Source, decide_fork
from agenttask_operator.core.status import apply
from agenttask_operator.models import (
    AgentTaskSpec,
    AgentTaskStatus,
    Budget,
    Entry,
    ForkedFrom,
    ForkFrom,
    HttpToolSpec,
    ModelSpec,
    OperatorPolicy,
    TaskState,
    ToolSpec,
    Usage,
)

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
SRC_UID = "5a1e0000-0000-4000-8000-000000000001"
LOST = "the transcript lost committed entries: status recorded 4, 2 are stored"
ECHO = ToolSpec(name="echo", http=HttpToolSpec(url="http://tools.invalid/echo"))


def call(call_id: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": "echo", "arguments": "{}"}}


def llm(iteration: int, *calls: str, content: str | None = None, tokens: int = 15) -> Entry:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [call(c) for c in calls]
    return Entry(
        kind="LLM",
        iteration=iteration,
        message=message,
        usage=Usage(prompt_tokens=tokens - 5, completion_tokens=5, total_tokens=tokens),
        finish_reason="tool_calls" if calls else "stop",
    )


def tool(iteration: int, call_id: str, *, error: bool = False) -> Entry:
    return Entry(
        kind="Tool",
        iteration=iteration,
        tool_call_id=call_id,
        message={"role": "tool", "tool_call_id": call_id, "content": f"result {call_id}"},
        is_error=error,
    )


# A source that failed at its third tool call: answer 1 asked for a and b (both answered),
# answer 2 asked for c, which failed (no entry).
FAILED = (llm(1, "a", "b"), tool(1, "a"), tool(1, "b"), llm(2, "c"))
# A source that succeeded: the same, then c's result and the final answer.
SUCCEEDED = (*FAILED, tool(2, "c"), llm(3, content="done"))


def state(
    *,
    fork_from: ForkFrom | None = ForkFrom(name="src"),  # noqa: B008 - immutable model
    forked: ForkedFrom | None = None,
    transcript: tuple[Entry, ...] = (),
    status: dict[str, Any] | None = None,
    **spec: Any,
) -> TaskState:
    return TaskState(
        namespace="ns",
        name="fork",
        uid="f0f0f0f0-0000-4000-8000-000000000002",
        generation=1,
        spec=AgentTaskSpec(
            input="do it", model=ModelSpec(name="m"), tools=(ECHO,), fork_from=fork_from, **spec
        ),
        status=AgentTaskStatus.model_validate(
            (status or {}) | ({"forkedFrom": forked.to_api()} if forked else {})
        ),
        transcript=transcript,
        policy=OperatorPolicy(default_base_url="https://llm.example/v1", default_key=True),
    )


def source(entries: tuple[Entry, ...] | None = FAILED, phase: str = "Failed", **kw: Any) -> Source:
    return Source("src", SRC_UID, phase, entries, **kw)


def failed_with(outcome: object, reason: str) -> dict[str, Any]:
    assert isinstance(outcome, WriteStatus), outcome
    patch = outcome.patch
    assert (patch["phase"], patch["reason"]) == ("Failed", reason), patch
    assert outcome.event is not None and outcome.event.reason == reason
    apply(state(), patch)  # the status model reads it back
    return patch


# --- numbering and the default step -------------------------------------------------------------


def test_steps_are_numbered_from_one_in_transcript_order() -> None:
    assert fork_.numbered(FAILED) == [
        (1, FAILED[0]),
        (2, FAILED[1]),
        (3, FAILED[2]),
        (4, FAILED[3]),
    ]
    assert fork_.numbered(()) == []


@pytest.mark.parametrize(
    ("entries", "step"),
    [
        ((), 0),  # failed before the first answer: nothing to copy
        (FAILED, 4),  # ends with an answer asking for a tool: all of it (the call runs again)
        (FAILED[:3], 3),  # ends with a tool result: all of it
        (FAILED[:2], 2),  # in the middle of an answer's calls: all of it (b runs in the fork)
        (SUCCEEDED, 5),  # ends with the final answer: not that one (the model is asked again)
        ((llm(1, content="cut off"),), 0),  # a lone final answer (e.g. OutputTruncated)
        ((*FAILED[:3], tool(1, "x", error=True)), 4),  # a tool error is a committed step
    ],
)
def test_the_default_step(entries: tuple[Entry, ...], step: int) -> None:
    assert fork_.default_step(entries) == step


def test_a_final_answer_is_an_answer_without_tool_calls() -> None:
    assert fork_.final_answer(llm(3, content="done"))
    assert not fork_.final_answer(llm(1, "a"))
    assert not fork_.final_answer(tool(1, "a"))
    odd = Entry(kind="LLM", iteration=1, message={"role": "assistant", "tool_calls": "junk"})
    assert fork_.final_answer(odd)  # as next_step reads it: no call to run


# --- resolving spec.forkFrom ----------------------------------------------------------------------


def test_no_fork_from_is_ready() -> None:
    assert decide_fork(state(fork_from=None), None, NOW) == Ready()


def test_the_source_needs_reading_until_the_copy_is_complete() -> None:
    assert fork_.needs_source(state())
    forked = ForkedFrom(name="src", uid=SRC_UID, step=2)
    assert fork_.needs_source(state(forked=forked, transcript=FAILED[:1]))
    assert not fork_.needs_source(state(forked=forked, transcript=FAILED[:2]))
    assert fork_.needs_source(state(forked=forked, transcript=FAILED[:3]))  # too many: check


def test_a_task_cannot_fork_itself() -> None:
    outcome = decide_fork(state(fork_from=ForkFrom(name="fork")), None, NOW)
    assert "is this task itself" in failed_with(outcome, "InvalidForkFrom")["message"]


def test_no_such_source_fails_fork_source_not_found() -> None:
    patch = failed_with(decide_fork(state(), None, NOW), "ForkSourceNotFound")
    assert "AgentTask ns/src not found" in patch["message"]
    assert "forkedFrom" not in patch


@pytest.mark.parametrize("phase", [None, "Pending", "Running", "WaitingForApproval", "Suspended"])
def test_a_source_that_has_not_ended_is_waited_for(phase: str | None) -> None:
    st = state()
    outcome = decide_fork(st, Source("src", SRC_UID, phase), NOW)
    assert isinstance(outcome, WriteStatus)
    patch = outcome.patch
    assert (patch["phase"], patch["reason"]) == ("Pending", "WaitingForForkSource")
    assert f"phase {phase or 'none yet'}" in patch["message"]
    assert outcome.event is not None and outcome.event.type == "Normal"
    assert "forkedFrom" not in patch
    # Once it says so: wait (no second write, no second Event), and read the source again later.
    again = decide_fork(apply(st, patch), Source("src", SRC_UID, phase), NOW)
    assert again == Wait(NOW + timedelta(seconds=fork_.RECHECK_SECONDS), patch["message"])


def test_a_source_whose_transcript_lost_entries_is_refused() -> None:
    patch = failed_with(decide_fork(state(), source(lost=LOST), NOW), "ForkSourceTranscriptLost")
    assert LOST in patch["message"]
    with_step = state(fork_from=ForkFrom(name="src", step=1))
    failed_with(decide_fork(with_step, source(lost=LOST), NOW), "ForkSourceTranscriptLost")


@pytest.mark.parametrize("step", [5, 6, 10_000_000])
def test_a_step_beyond_the_sources_steps_is_refused(step: int) -> None:
    st = state(fork_from=ForkFrom(name="src", step=step))
    patch = failed_with(decide_fork(st, source(), NOW), "ForkStepOutOfRange")
    assert f"has 4 committed step(s): forkFrom.step {step} is beyond them" in patch["message"]


@pytest.mark.parametrize(
    ("step", "entries", "phase", "recorded"),
    [
        (None, FAILED, "Failed", 4),
        (None, SUCCEEDED, "Succeeded", 5),
        (None, (), "Failed", 0),
        (0, FAILED, "Failed", 0),
        (1, FAILED, "Failed", 1),
        (4, FAILED, "Failed", 4),
        (6, SUCCEEDED, "Succeeded", 6),  # up to the final answer: the fork ends at once
    ],
)
def test_the_resolved_fork_is_recorded_before_anything_is_copied(
    step: int | None, entries: tuple[Entry, ...], phase: str, recorded: int
) -> None:
    st = state(fork_from=ForkFrom(name="src", step=step))
    outcome = decide_fork(st, source(entries, phase), NOW)
    assert isinstance(outcome, WriteStatus)
    patch = outcome.patch
    assert patch["forkedFrom"] == {"name": "src", "uid": SRC_UID, "step": recorded}
    assert (patch["phase"], patch["reason"]) == ("Pending", "Forking")
    assert outcome.event is not None and outcome.event.reason == "Forking"
    assert f"of its {len(entries)} committed." in patch["message"]
    after = apply(st, patch)
    assert after.status.forked_from == ForkedFrom(name="src", uid=SRC_UID, step=recorded)
    assert after.status.start_time is None  # not started: the copy comes first


# --- copying ------------------------------------------------------------------------------------

FORKED = ForkedFrom(name="src", uid=SRC_UID, step=3)


@pytest.mark.parametrize("copied", [0, 1, 2])
def test_what_is_left_is_copied_in_order(copied: int) -> None:
    st = state(forked=FORKED, transcript=FAILED[:copied])
    assert decide_fork(st, source(), NOW) == Copy(FAILED[copied:3], copied + 1)


def test_a_complete_copy_is_ready_without_reading_the_source() -> None:
    st = state(forked=FORKED, transcript=FAILED[:3])
    assert decide_fork(st, None, NOW) == Ready()
    assert decide_fork(st, source(), NOW) == Ready()
    nothing = state(forked=FORKED.model_copy(update={"step": 0}))
    assert not fork_.needs_source(nothing)
    assert decide_fork(nothing, None, NOW) == Ready()


@pytest.mark.parametrize(
    "found",
    [None, Source("src", "another-uid", "Failed", FAILED), Source("src", "another-uid", "Running")],
    ids=["deleted", "re-created-ended", "re-created-running"],
)
def test_a_source_gone_before_the_copy_completed_fails(found: Source | None) -> None:
    st = state(forked=FORKED, transcript=FAILED[:1])
    patch = failed_with(decide_fork(st, found, NOW), "ForkSourceNotFound")
    assert "deleted before the copy of its steps 1-3 completed (1 copied)" in patch["message"]


@pytest.mark.parametrize(
    "own",
    [
        (FAILED[1],),  # not its first step
        (FAILED[0], tool(1, "a", error=True)),  # a different second step
        FAILED,  # more than the fork copies
    ],
)
def test_entries_that_are_not_the_sources_first_steps_fail(own: tuple[Entry, ...]) -> None:
    st = state(forked=FORKED, transcript=own)
    failed_with(decide_fork(st, source(), NOW), "ForkCopyMismatch")


def test_a_source_that_lost_steps_meanwhile_fails() -> None:
    st = state(forked=FORKED, transcript=FAILED[:1])
    patch = failed_with(decide_fork(st, source(FAILED[:2]), NOW), "ForkSourceTranscriptLost")
    assert "steps 1-3 cannot be copied: it holds 2 committed step(s) now" in patch["message"]
    failed_with(decide_fork(st, source(lost=LOST), NOW), "ForkSourceTranscriptLost")


def test_every_step_of_every_source_is_copied_once_whatever_is_copied_already() -> None:
    """Exhaustive over small transcripts: from any point of the copy (a restart may come at
    any), copying what ``decide_fork`` says until it is Ready leaves exactly the source's
    steps 1 to N in the fork, each once, in order.
    """
    sources = [(), FAILED[:1], FAILED, SUCCEEDED]
    for entries, step in itertools.chain.from_iterable(
        ((e, s) for s in [None, *range(len(e) + 2)]) for e in sources
    ):
        st = state(fork_from=ForkFrom(name="src", step=step))
        first = decide_fork(st, source(entries), NOW)
        if step is not None and step > len(entries):
            failed_with(first, "ForkStepOutOfRange")
            continue
        assert isinstance(first, WriteStatus)
        wanted = step if step is not None else fork_.default_step(entries)
        for already in range(wanted + 1):
            own = entries[:already]
            for _ in range(wanted + 1):
                current = apply(st, first.patch)
                current = replace(current, transcript=own)
                outcome = decide_fork(current, source(entries), NOW)
                if isinstance(outcome, Ready):
                    break
                assert isinstance(outcome, Copy), outcome
                assert outcome.first == len(own) + 1
                own = (*own, *outcome.entries[:1])  # a restart after each appended entry
            assert own == entries[:wanted]


# --- after the copy: decide starts the fork from the copied steps ---------------------------------


def copied(entries: tuple[Entry, ...], **spec: Any) -> TaskState:
    forked = ForkedFrom(name="src", uid=SRC_UID, step=len(entries))
    st = state(forked=forked, transcript=entries, **spec)
    recorded = decide_fork(state(**spec), source(entries), NOW)
    assert isinstance(recorded, WriteStatus)
    return replace(apply(st, recorded.patch), transcript=entries)


def test_the_fork_starts_with_the_copied_counters_and_runs_the_uncopied_call() -> None:
    st = copied(FAILED)
    assert decide_fork(st, None, NOW) == Ready()
    action = decide(st, NOW)
    assert isinstance(action, Execute)
    assert "startTime" in action.intent
    assert (action.step.kind, action.step.tool_call_id, action.step.iteration) == ("Tool", "c", 2)
    assert action.intent["iterations"] == 2 and action.intent["toolCalls"] == 2
    assert action.intent["usage"]["totalTokens"] == 30  # the copied answers' usage counts


def test_a_cut_in_the_middle_of_an_answers_calls_runs_the_rest() -> None:
    action = decide(copied(FAILED[:2]), NOW)
    assert isinstance(action, Execute)
    assert (action.step.kind, action.step.tool_call_id) == ("Tool", "b")


def test_the_iterations_go_on_from_the_copied_ones() -> None:
    action = decide(copied(SUCCEEDED[:5]), NOW)
    assert isinstance(action, Execute)
    assert (action.step.kind, action.step.iteration) == ("LLM", 3)


def ended(st: TaskState) -> AgentTaskStatus:
    """The status once the writes ``decide`` asks for are made, up to the task's end."""
    for _ in range(5):
        action = decide(st, NOW)
        assert isinstance(action, WriteStatus), action
        st = apply(st, action.patch)
        if st.status.terminal:
            return st.status
    raise AssertionError("no end")


def test_the_copied_usage_counts_toward_the_budget() -> None:
    st = ended(copied(SUCCEEDED[:5], budget=Budget(max_total_tokens=30)))
    assert st.reason == "BudgetExceeded"
    assert st.message is not None and "(30 tokens used)" in st.message
    assert st.usage.total_tokens == 30


def test_the_copied_iterations_count_toward_max_iterations() -> None:
    st = ended(copied(SUCCEEDED[:5], max_iterations=2))
    assert (st.reason, st.iterations) == ("MaxIterationsExceeded", 2)


def test_a_fork_up_to_the_final_answer_ends_at_once_with_it() -> None:
    st = ended(copied(SUCCEEDED))
    assert (st.phase, st.result, st.iterations, st.tool_calls) == ("Succeeded", "done", 3, 3)


# --- any state: decide_fork never raises, and never copies anything but the source's steps ------

POOL = (*SUCCEEDED, tool(1, "x", error=True), llm(9, "z"))
PHASES = [None, "Pending", "Running", "Suspended", "WaitingForApproval", "Succeeded", "Failed"]


@settings(max_examples=400, deadline=None)
@given(
    own=st.lists(st.sampled_from(POOL), max_size=7).map(tuple),
    theirs=st.one_of(st.none(), st.lists(st.sampled_from(POOL), max_size=7).map(tuple)),
    phase=st.sampled_from(PHASES),
    same_uid=st.booleans(),
    lost=st.sampled_from([None, LOST]),
    step=st.one_of(st.none(), st.integers(0, 9)),
    recorded=st.one_of(st.none(), st.integers(0, 9)),
    found=st.booleans(),
    name=st.sampled_from(["src", "fork"]),
)
def test_decide_fork_never_raises_and_copies_only_the_sources_steps(
    own: tuple[Entry, ...],
    theirs: tuple[Entry, ...] | None,
    phase: str | None,
    same_uid: bool,
    lost: str | None,
    step: int | None,
    recorded: int | None,
    found: bool,
    name: str,
) -> None:
    forked = None if recorded is None else ForkedFrom(name="src", uid=SRC_UID, step=recorded)
    st_ = state(fork_from=ForkFrom(name=name, step=step), forked=forked, transcript=own)
    src = Source("src", SRC_UID if same_uid else "other", phase, theirs, lost) if found else None
    outcome = decide_fork(st_, src, NOW)
    if isinstance(outcome, WriteStatus):
        json.dumps(outcome.patch, allow_nan=False)
        after = apply(st_, outcome.patch)
        if "forkedFrom" in outcome.patch:  # recorded only once, from an ended source
            assert forked is None and src is not None and src.ended and theirs is not None
            assert after.status.forked_from is not None
            assert after.status.forked_from.step <= len(theirs)
    elif isinstance(outcome, Copy):
        assert forked is not None and src is not None and src.uid == forked.uid
        assert theirs is not None and lost is None
        assert own == theirs[: len(own)] and outcome.first == len(own) + 1
        assert (*own, *outcome.entries) == theirs[: forked.step]
    elif isinstance(outcome, Ready):
        assert forked is not None and len(own) == forked.step
    else:
        assert isinstance(outcome, Wait) and forked is None


def test_a_fork_waiting_for_its_source_holds_no_place_in_a_queue() -> None:
    def seen(status: dict[str, Any]) -> bool:
        meta = {"uid": "u", "name": "f", "namespace": "ns", "creationTimestamp": "t"}
        found = queue.seen({"metadata": meta, "spec": {}, "status": status})
        assert found is not None
        return found.waiting

    assert not seen({"phase": "Pending", "reason": "WaitingForForkSource"})
    assert seen({"phase": "Pending", "reason": "Forking"})  # it will start: it queues
    assert seen({})
