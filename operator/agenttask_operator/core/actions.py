"""What ``decide`` asks the effects layer to do next.

- ``Noop``: nothing to do (the task has ended, or is being deleted).
- ``WriteStatus``: write this merge patch to ``/status``, then decide again.
- ``Wait``: sleep until ``until`` (None: until the task changes), then decide again.
- ``Execute``: write ``intent`` to ``/status`` first, then run ``step`` (attempt ``attempt``,
  for at most ``timeout`` seconds) and append its result to the transcript; with ``result``
  (a denied tool call), append that as the call's result (a tool error) instead of running it;
  with ``extras``, run those tool calls (attempt 1) at the same time, each appending its result.
- ``Delete``: delete the task (its ``ttlSecondsAfterFinished`` has passed).

Writing actions may carry an ``Event`` to record on the task.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from agenttask_operator.models import Step


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to record with the write."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class Noop:
    """Nothing to do."""

    why: str


@dataclass(frozen=True)
class WriteStatus:
    """Write ``patch`` (a status merge patch) and decide again."""

    patch: dict[str, Any]
    why: str
    event: Event | None = None


@dataclass(frozen=True)
class Wait:
    """Sleep until ``until`` (None: until the object changes) and decide again."""

    until: datetime | None
    why: str

    def seconds(self, now: datetime) -> float | None:
        """Seconds from ``now`` to :attr:`until` (None: no time set), never negative."""
        return None if self.until is None else max((self.until - now).total_seconds(), 0.0)


@dataclass(frozen=True)
class Execute:
    """Persist ``intent``, then run ``step`` for at most ``timeout`` seconds."""

    step: Step
    attempt: int
    intent: dict[str, Any]
    timeout: float
    event: Event | None = None
    result: str | None = None
    extras: tuple[
        Step, ...
    ] = ()  # tool calls to run alongside ``step`` (their intents in ``intent``)


@dataclass(frozen=True)
class Delete:
    """Delete the task."""

    why: str


Action = Noop | WriteStatus | Wait | Execute | Delete
