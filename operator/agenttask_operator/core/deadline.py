"""Deadline maths: ``activeDeadlineSeconds`` runs from ``status.startTime``, paused while suspended.

Everything is computed from absolute timestamps and counters kept in status, so an operator
restart neither resets nor extends a deadline.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from agenttask_operator.models import AgentTaskSpec, AgentTaskStatus


def deadline(spec: AgentTaskSpec, status: AgentTaskStatus) -> datetime | None:
    """When the run must be over (for a task not suspended now), or None without a deadline."""
    if spec.active_deadline_seconds is None or status.start_time is None:
        return None
    return status.start_time + timedelta(
        seconds=spec.active_deadline_seconds + status.suspended_seconds
    )


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
