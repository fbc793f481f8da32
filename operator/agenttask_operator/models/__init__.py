"""Models: pydantic views of the AgentTask spec, status and transcript (camelCase aliases)."""

from agenttask_operator.models.policy import SDK_DEFAULT_BASE_URL, OperatorPolicy
from agenttask_operator.models.spec import (
    AgentTaskSpec,
    Budget,
    ForkFrom,
    HttpToolSpec,
    ModelRef,
    ModelSpec,
    RetryPolicy,
    SecretKeyRef,
    ToolServerRef,
    ToolSpec,
)
from agenttask_operator.models.status import (
    TERMINAL_PHASES,
    AgentTaskStatus,
    ApprovalRecord,
    Condition,
    Credential,
    ForkedFrom,
    ModelAccess,
    ParallelCall,
    ResolvedTool,
    Step,
    TraceContext,
    TranscriptInfo,
    Usage,
)
from agenttask_operator.models.task import TaskState
from agenttask_operator.models.transcript import Entry, StoredTranscript

__all__ = [
    "SDK_DEFAULT_BASE_URL",
    "TERMINAL_PHASES",
    "AgentTaskSpec",
    "AgentTaskStatus",
    "ApprovalRecord",
    "Budget",
    "Condition",
    "Credential",
    "Entry",
    "ForkFrom",
    "ForkedFrom",
    "HttpToolSpec",
    "ModelAccess",
    "ModelRef",
    "ModelSpec",
    "OperatorPolicy",
    "ParallelCall",
    "ResolvedTool",
    "RetryPolicy",
    "SecretKeyRef",
    "Step",
    "StoredTranscript",
    "TaskState",
    "ToolServerRef",
    "ToolSpec",
    "TraceContext",
    "TranscriptInfo",
    "Usage",
]
