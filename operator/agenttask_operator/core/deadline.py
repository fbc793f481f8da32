"""Deadline maths: ``activeDeadlineSeconds`` runs from ``status.startTime``, paused while suspended.

Everything is computed from absolute timestamps and counters kept in status, so an operator
restart neither resets nor extends a deadline. Date arithmetic saturates (:func:`later`): a
timestamp or counter in status, however odd, never makes it overflow.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from agenttask_operator.models import AgentTaskSpec, AgentTaskStatus


def later(when: datetime, seconds: float) -> datetime:
    """``when`` plus ``seconds``, kept within the datetime range instead of overflowing.

    A sum past the last (or before the first) representable time gives that time, in
    ``when``'s timezone; infinite seconds do the same, NaN counts as 0.
    """
    if math.isnan(seconds):
        return when
    try:
        return when + timedelta(seconds=seconds)
    except OverflowError:
        edge = datetime.max if seconds > 0 else datetime.min
        return edge.replace(tzinfo=when.tzinfo)


def deadline(spec: AgentTaskSpec, status: AgentTaskStatus) -> datetime | None:
    """When the run must be over (for a task not suspended now), or None without a deadline."""
    if spec.active_deadline_seconds is None or status.start_time is None:
        return None
    suspended = status.suspended_seconds if status.suspended_seconds > 0 else 0.0  # NaN → 0
    return later(status.start_time, spec.active_deadline_seconds + suspended)


def deadline_passed(spec: AgentTaskSpec, status: AgentTaskStatus, now: datetime) -> bool:
    """Whether a running (not suspended) task has used up its activeDeadlineSeconds."""
    d = deadline(spec, status)
    return d is not None and status.suspended_since is None and now >= d


def attempt_timeout(spec: AgentTaskSpec, status: AgentTaskStatus, now: datetime) -> float:
    """How long the next attempt may run: stepTimeoutSeconds, cut short by the deadline."""
    limit = spec.step_timeout_seconds
    d = deadline(spec, status)
    if d is not None:
        limit = min(limit, max((d - now).total_seconds(), 0.0))
    return limit
