"""Models: pydantic views of the AgentTask spec, status and transcript (camelCase aliases)."""

from agenttask_operator.models.spec import (
    AgentTaskSpec,
    Budget,
    HttpToolSpec,
    ModelSpec,
    RetryPolicy,
    SecretKeyRef,
    ToolSpec,
)
from agenttask_operator.models.status import (
    TERMINAL_PHASES,
    AgentTaskStatus,
    Condition,
    Step,
    TranscriptInfo,
    Usage,
)
from agenttask_operator.models.task import TaskState
from agenttask_operator.models.transcript import Entry

__all__ = [
    "TERMINAL_PHASES",
    "AgentTaskSpec",
    "AgentTaskStatus",
    "Budget",
    "Condition",
    "Entry",
    "HttpToolSpec",
    "ModelSpec",
    "RetryPolicy",
    "SecretKeyRef",
    "Step",
    "TaskState",
    "ToolSpec",
    "TranscriptInfo",
    "Usage",
]
