"""Everything ``core.decide`` needs to know about one task, read fresh at each wake-up."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from agenttask_operator.models.approval import Decision
from agenttask_operator.models.policy import OperatorPolicy
from agenttask_operator.models.spec import AgentTaskSpec, ModelSpec
from agenttask_operator.models.status import AgentTaskStatus
from agenttask_operator.models.toolserver import AgentToolServerSpec, AgentToolServerStatus
from agenttask_operator.models.transcript import Entry, StoredTranscript


@dataclass(frozen=True)
class ToolServer:
    """An AgentToolServer as read: what it is and what its last discovery found."""

    spec: AgentToolServerSpec
    status: AgentToolServerStatus
    generation: int = 1


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
    # The AgentModel that spec.model.modelRef names, as read now (None: no such object); read
    # only while the task has not stored what it resolved (status.resolvedModel).
    agent_model: ModelSpec | None = None
    # The AgentToolServers that spec.tools name (those that exist), as read now: only while the
    # task has not stored what it resolved (status.resolvedTools).
    tool_servers: Mapping[str, ToolServer] = field(default_factory=dict)
    # The AgentToolApprovals naming this task, as read now: only while a call waits for one.
    approvals: tuple[Decision, ...] = ()
    created: datetime | None = None  # metadata.creationTimestamp
    # The AgentModel's maxConcurrentTasks, read with it (None: no limit, or not read).
    model_limit: int | None = None
    # What the transcript's ConfigMaps hold, as loaded (None: not known, nothing to check).
    stored: StoredTranscript | None = None

    @property
    def model(self) -> ModelSpec | None:
        """The model requests use: inline, or resolved from the AgentModel (None: not found)."""
        if self.spec.model.model_ref is None:
            return self.spec.model
        return self.status.resolved_model or self.agent_model
