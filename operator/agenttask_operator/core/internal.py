"""What to do when the operator's own code fails on a task (a bug, not a failed step).

A failed *step* (an LLM request or a tool call that raised) is that step's failed attempt and
goes through the task's retry policy. This is for an exception in the loop itself — reading,
deciding, writing. It must neither kill the loop nor spin: each occurrence is reported on the
task (``status.internalErrors``, the ``Succeeded`` condition's reason ``InternalError`` with the
exception's type and message, a Warning Event), the next try waits 5 s, 15 s, 45 s, 135 s, and
the :data:`MAX_INTERNAL_ERRORS`-th ends the task ``Failed`` ``InternalError``. The count lives in
status, so an operator restart does not reset it. A finished task is never written to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agenttask_operator.core.actions import Event
from agenttask_operator.core.status import MESSAGE_LIMIT, clip, condition, finish
from agenttask_operator.models import TaskState

MAX_INTERNAL_ERRORS = 5
FIRST_DELAY, FACTOR, MAX_DELAY = 5.0, 3.0, 300.0
INTERNAL_ERROR_RETRY = 60.0  # when not even the report could be written


@dataclass(frozen=True)
class Report:
    """The status patch and Event to write, and how long to wait (None: end the loop)."""

    patch: dict[str, Any] = field(default_factory=dict)
    event: Event | None = None
    delay: float | None = None


def internal_error(state: TaskState, error: str, now: datetime) -> Report:
    """The report of one more internal error on ``state``'s task."""
    st = state.status
    if st.terminal:
        return Report()
    n = st.internal_errors + 1
    if n >= MAX_INTERNAL_ERRORS:
        msg = f"the operator failed {n} times on this task; last: {error}"
        patch = finish(state, now, succeeded=False, reason="InternalError", message=msg)
        return Report(patch | {"internalErrors": n}, Event("Warning", "InternalError", msg))
    delay = min(FIRST_DELAY * FACTOR ** (n - 1), MAX_DELAY)
    msg = f"internal error {n} of {MAX_INTERNAL_ERRORS} allowed: {error}; next try in {delay:g}s"
    patch = {
        "internalErrors": n,
        "message": clip(msg, MESSAGE_LIMIT),
        "conditions": [condition(state, "Unknown", "InternalError", msg, now)],
    }
    return Report(patch, Event("Warning", "InternalError", msg), delay)
