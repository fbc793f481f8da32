"""Step numbers: step N is the N-th committed transcript entry, counted from 1. Pure.

One numbering for everything that names a step to a person: ``kubectl agenttask steps`` lists
them, ``kubectl agenttask retry --from-step N`` and ``spec.forkFrom.step`` name one. An entry is
one LLM answer or one tool result, in the order they were committed (the transcript's order),
so step numbers never change once given; parallel tool calls are numbered in the order their
results were stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

E = TypeVar("E")


def numbered(entries: Sequence[E]) -> list[tuple[int, E]]:
    """``entries`` with their step numbers: ``[(1, first), (2, second), …]``."""
    return list(enumerate(entries, start=1))


def step_entry(entries: Sequence[E], step: int) -> E | None:
    """The entry of step ``step`` (1-based); None if there is no such step."""
    return entries[step - 1] if 1 <= step <= len(entries) else None


def up_to(entries: Sequence[E], step: int) -> list[E]:
    """The entries of steps 1 … ``step`` (all of them if ``step`` is past the last)."""
    return list(entries[: max(step, 0)])


def valid_step(step: int, committed: int) -> str | None:
    """Why ``step`` names no committed step of a transcript of ``committed`` entries; None if
    it does.
    """  # noqa: D205
    if committed == 0:
        return "the task has no committed step"
    if not 1 <= step <= committed:
        return f"step {step} does not exist: the task has steps 1 to {committed}"
    return None
