"""What ``decide`` asks the effects layer to do next.

- ``Noop``: nothing to do (the task has ended, or is being deleted).
- ``WriteStatus``: write this merge patch to ``/status``, then decide again.
- ``Wait``: sleep until ``until`` (a retry time), then decide again.
- ``Execute``: write ``intent`` to ``/status`` first, then run ``step`` (attempt ``attempt``)
  and append its result to the transcript.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agenttask_operator.models import Step


@dataclass(frozen=True)
class Noop:
    """Nothing to do."""

    why: str


@dataclass(frozen=True)
class WriteStatus:
    """Write ``patch`` (a status merge patch) and decide again."""

    patch: dict[str, Any]
    why: str


@dataclass(frozen=True)
class Wait:
    """Sleep until ``until`` and decide again."""

    until: datetime
    why: str


@dataclass(frozen=True)
class Execute:
    """Persist ``intent``, then run ``step``."""

    step: Step
    attempt: int
    intent: dict[str, Any]


Action = Noop | WriteStatus | Wait | Execute
