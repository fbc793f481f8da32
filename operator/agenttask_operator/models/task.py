"""Everything ``core.decide`` needs to know about one task, read fresh at each wake-up."""

from __future__ import annotations

from dataclasses import dataclass, field

from agenttask_operator.models.policy import OperatorPolicy
from agenttask_operator.models.spec import AgentTaskSpec
from agenttask_operator.models.status import AgentTaskStatus
from agenttask_operator.models.transcript import Entry


@dataclass(frozen=True)
class TaskState:
    """A task's spec, status and committed transcript, plus what the operator offers it."""

    namespace: str
    name: str
    uid: str
    generation: int
    spec: AgentTaskSpec
    status: AgentTaskStatus
    transcript: tuple[Entry, ...] = ()
    builtin_tools: frozenset[str] = field(default_factory=frozenset)
    deleting: bool = False
    policy: OperatorPolicy = field(default_factory=OperatorPolicy)
