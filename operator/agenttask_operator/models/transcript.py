"""One transcript entry: a message the model sent or a tool's answer, as stored in ConfigMaps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from agenttask_operator.models.approval import ApprovalNote
from agenttask_operator.models.base import Model, Time
from agenttask_operator.models.status import Step, Usage


class Entry(Model):
    """A committed step's result. The OpenAI-format ``message`` is replayed to the model."""

    kind: Literal["LLM", "Tool"]
    iteration: int
    message: dict[str, Any]
    tool_call_id: str | None = None
    usage: Usage | None = None
    finish_reason: str | None = None
    is_error: bool = False
    time: Time | None = None
    approval: ApprovalNote | None = None  # a tool call that needed a person's decision
    # How the step went, for people (kubectl agenttask steps): the attempt that produced this
    # result and when the step's first attempt started. Absent in entries of earlier versions.
    attempts: int | None = None
    start_time: Time | None = None

    def answers(self, step: Step) -> bool:
        """Whether this entry is the stored result of ``step``."""
        if step.kind == "LLM":
            return self.kind == "LLM" and self.iteration == step.iteration
        # Some servers number tool calls afresh in every answer ("0", "1", …): an id is only
        # unique within its iteration.
        return (
            self.kind == "Tool"
            and self.tool_call_id == step.tool_call_id
            and self.iteration == step.iteration
        )


@dataclass(frozen=True)
class StoredTranscript:
    """What the transcript's ConfigMaps hold, as read: entries, the next segment's index, the
    earlier layout's chunks, and the segment indices missing below the highest one stored.
    """  # noqa: D205

    entries: int = 0
    segments: int = 0
    config_maps: tuple[str, ...] = ()
    missing_segments: tuple[int, ...] = ()
