"""Forks (``spec.forkFrom``): a task that starts from a copy of another task's transcript. Pure.

**Steps** are the committed transcript entries of a task, numbered 1, 2, 3 … in transcript
order: step N is the N-th complete entry that ``effects.transcript.TranscriptStore.load``
reads — a model answer (kind ``LLM``) or the result of one tool call (kind ``Tool``); a torn
write is no step. :func:`numbered` is that numbering, the one ``forkFrom.step`` names and
``kubectl agenttask steps`` prints.

**What a fork does**, before its first step (:func:`decide_fork`):

1. ``status.forkedFrom`` not recorded yet → resolve ``spec.forkFrom`` against the source as
   read now: the task itself → Failed ``InvalidForkFrom``; no such AgentTask in the namespace →
   Failed ``ForkSourceNotFound``; not ended yet → ``Pending``/``WaitingForForkSource``,
   checked again every :data:`RECHECK_SECONDS`; a step beyond its committed steps → Failed
   ``ForkStepOutOfRange``; a transcript that lost committed entries (``core.transcript``) →
   Failed ``ForkSourceTranscriptLost``. Otherwise record ``forkedFrom`` (name, uid, step) — the
   intent, persisted before anything is copied.
2. ``forkedFrom`` recorded, fewer entries than its ``step`` → copy the source's next entries
   (:class:`Copy`), after checking that those already copied are the source's first ones; the
   source is the recorded uid, never another task that took its name. Gone → Failed
   ``ForkSourceNotFound``; its transcript lost entries meanwhile → ``ForkSourceTranscriptLost``.
3. All copied → :class:`Ready`: the task starts (``core.decide``), and its counters
   (iterations, tool calls, usage) are brought up to date from the copied entries like any
   other committed step's.

**The default step** (no ``forkFrom.step``): every committed step of the source, except a final
answer at its end (a model answer asking for no tool): that answer ended the run (Succeeded, or
Failed ``OutputTruncated`` / ``ContentFiltered``), and copying it would end the fork at once with
the same outcome; without it the fork asks the model again. A failed step is never in the
transcript (only its intent was, in status), so it is never copied: the fork runs it again, as
its own delivery under its own idempotency key (``<fork uid>:<tool call id>``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agenttask_operator.core.actions import Event, Wait, WriteStatus
from agenttask_operator.core.conversation import tool_calls_of
from agenttask_operator.core.deadline import later
from agenttask_operator.core.status import condition, finish
from agenttask_operator.models import TERMINAL_PHASES, Entry, ForkedFrom, TaskState

RECHECK_SECONDS = 5.0  # how often a fork waiting for its source to end reads it again
WAITING = "WaitingForForkSource"  # the reason of a fork whose source has not ended: not queued


@dataclass(frozen=True)
class Source:
    """The AgentTask ``spec.forkFrom`` names, as read: identity, phase, and — once it has ended
    — its committed entries and what its transcript lost (``core.transcript.lost``), if anything.
    """  # noqa: D205

    name: str
    uid: str
    phase: str | None
    entries: tuple[Entry, ...] | None = None  # None: not read (it has not ended)
    lost: str | None = None

    @property
    def ended(self) -> bool:
        """Whether the source has ended (Succeeded or Failed): its transcript is final."""
        return self.phase in TERMINAL_PHASES


@dataclass(frozen=True)
class Copy:
    """Append ``entries`` to the fork's transcript, in order: steps ``first`` … of the source."""

    entries: tuple[Entry, ...]
    first: int


@dataclass(frozen=True)
class Ready:
    """The copy is complete: the task may start."""


Outcome = WriteStatus | Wait | Copy | Ready


def numbered(entries: Sequence[Entry]) -> list[tuple[int, Entry]]:
    """The steps of a transcript: ``(N, entry)``, N from 1, in transcript order."""
    return list(enumerate(entries, start=1))


def final_answer(entry: Entry) -> bool:
    """Whether ``entry`` is a model answer that asks for no tool (it ends a run)."""
    return entry.kind == "LLM" and not tool_calls_of(entry)


def default_step(entries: Sequence[Entry]) -> int:
    """The step a fork copies up to when ``forkFrom.step`` is not set: the last committed one,
    or the one before it if that is a final answer (see the module's docstring).
    """  # noqa: D205
    n = len(entries)
    return n - 1 if n and final_answer(entries[-1]) else n


def needs_source(state: TaskState) -> bool:
    """Whether :func:`decide_fork` needs the source read: to resolve ``forkFrom``, or to copy."""
    forked = state.status.forked_from
    return forked is None or len(state.transcript) != forked.step


def _fail(state: TaskState, now: datetime, reason: str, message: str) -> WriteStatus:
    patch = finish(state, now, succeeded=False, reason=reason, message=message)
    return WriteStatus(patch, message, Event("Warning", reason, message))


def _pending(state: TaskState, reason: str, message: str, now: datetime) -> dict[str, Any]:
    return {
        "phase": "Pending",
        "reason": reason,
        "message": message,
        "observedGeneration": state.generation,
        "conditions": [condition(state, "Unknown", reason, message, now)],
    }


def decide_fork(state: TaskState, source: Source | None, now: datetime) -> Outcome:
    """What a task with ``spec.forkFrom`` does before it starts (see the module's docstring).

    ``source``: the AgentTask of that name as read now (None: there is none, or it was not read
    because :func:`needs_source` said so), with its entries if it has ended.
    """
    fork_from = state.spec.fork_from
    if fork_from is None:
        return Ready()
    forked = state.status.forked_from
    if forked is not None:
        return _copy(state, forked, source, now)
    ref = f"spec.forkFrom: AgentTask {state.namespace}/{fork_from.name}"
    if fork_from.name == state.name:
        return _fail(state, now, "InvalidForkFrom", f"{ref} is this task itself")
    if source is None:
        msg = f"{ref} not found (a fork names a task of its own namespace)"
        return _fail(state, now, "ForkSourceNotFound", msg)
    if not source.ended or source.entries is None:
        why = (
            f"{ref} has not ended (phase {source.phase or 'none yet'}): a fork starts from a "
            f"finished task; checked again every {RECHECK_SECONDS:g}s"
        )
        if state.status.reason == WAITING and state.status.message == why:
            return Wait(later(now, RECHECK_SECONDS), why)
        patch = _pending(state, WAITING, why, now)
        return WriteStatus(patch, why, Event("Normal", WAITING, why))
    if source.lost is not None:
        return _fail(state, now, "ForkSourceTranscriptLost", f"{ref}: {source.lost}")
    n = len(source.entries)
    step = fork_from.step
    if step is not None and step > n:
        msg = f"{ref} has {n} committed step(s): forkFrom.step {step} is beyond them"
        return _fail(state, now, "ForkStepOutOfRange", msg)
    if step is None:
        step = default_step(source.entries)
    record = ForkedFrom(name=source.name, uid=source.uid, step=step)
    what = f"steps 1-{step}" if step > 1 else ("step 1" if step == 1 else "no step")
    of = f"Forked from AgentTask {source.name} ({source.uid})"
    msg = f"{of}: copying {what} of its {n} committed."
    patch = _pending(state, "Forking", msg, now) | {"forkedFrom": record.to_api()}
    return WriteStatus(patch, msg, Event("Normal", "Forking", msg))


def _copy(state: TaskState, forked: ForkedFrom, source: Source | None, now: datetime) -> Outcome:
    """Step 2 and 3 of the module's docstring: what is left to copy, or Ready."""
    own = state.transcript
    ref = f"AgentTask {state.namespace}/{forked.name} ({forked.uid})"
    if len(own) == forked.step and source is None:
        return Ready()  # complete; nothing to check against
    if source is None or source.uid != forked.uid or source.entries is None:
        msg = (
            f"spec.forkFrom: {ref} is gone: it was deleted before the copy of its steps "
            f"1-{forked.step} completed ({len(own)} copied)"
        )
        return _fail(state, now, "ForkSourceNotFound", msg)
    theirs = source.entries
    if len(own) > forked.step or tuple(own) != tuple(theirs[: len(own)]):
        msg = (
            f"the transcript holds {len(own)} entries that are not steps 1-{len(own)} of {ref}: "
            "its ConfigMaps were changed by someone else"
        )
        return _fail(state, now, "ForkCopyMismatch", msg)
    if source.lost is not None or len(theirs) < forked.step:
        lost = source.lost or f"it holds {len(theirs)} committed step(s) now"
        msg = f"spec.forkFrom: {ref}: steps 1-{forked.step} cannot be copied: {lost}"
        return _fail(state, now, "ForkSourceTranscriptLost", msg)
    if len(own) == forked.step:
        return Ready()
    return Copy(tuple(theirs[len(own) : forked.step]), len(own) + 1)
