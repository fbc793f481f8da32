"""``AgentTask.status``: conditions, a derived phase, the step in flight and a projection.

The transcript itself lives in ConfigMaps (see ``effects.transcript``); status only summarises
it, so it stays small whatever the length of the conversation.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from agenttask_operator.models.base import Model, Time
from agenttask_operator.models.spec import ModelSpec, OnUnknownOutcome

Phase = Literal["Pending", "Running", "WaitingForApproval", "Suspended", "Succeeded", "Failed"]
TERMINAL_PHASES: frozenset[str] = frozenset({"Succeeded", "Failed"})


class Condition(Model):
    """A Kubernetes condition (type ``Succeeded``: True, False or Unknown)."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: Time
    observed_generation: int | None = None


class Usage(Model):
    """Token usage summed over all LLM responses."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        """Sum two usages."""
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
        )


class Step(Model):
    """One unit of work: an LLM request (iteration N) or one tool call of iteration N."""

    kind: Literal["LLM", "Tool"]
    iteration: int
    tool_call_id: str | None = None
    tool_name: str | None = None
    start_time: Time | None = None


class ParallelCall(Model):
    """A tool call started alongside ``currentStep`` (another call of the same answer), kept
    until its result is committed: its own intent, attempts, failure and interruptions. Once
    ``currentStep`` is done, a call left here (it failed, or the operator stopped while it ran)
    becomes ``currentStep`` with all of these, and is retried or run again from there.
    """  # noqa: D205

    iteration: int
    tool_call_id: str
    tool_name: str | None = None
    start_time: Time | None = None
    attempts: int = 1
    next_retry_time: Time | None = None
    last_error: str | None = None
    interruptions: int = 0

    @property
    def step(self) -> Step:
        """The call as a step."""
        return Step(
            kind="Tool",
            iteration=self.iteration,
            tool_call_id=self.tool_call_id,
            tool_name=self.tool_name,
            start_time=self.start_time,
        )


Credential = Literal["Secret", "OperatorDefault", "NoKey"]


class ModelAccess(Model):
    """Where LLM requests go and with which key (never the key itself)."""

    base_url: str = Field(alias="baseURL")
    credential: Credential


class ResolvedTool(Model):
    """An MCP tool a task may use, fixed when it starts: its server, its schema's digest, and
    the policy that the task's and the server's settings (or the server's hints) give it.
    """  # noqa: D205

    name: str
    server: str
    input_schema_digest: str
    approval: Literal["Required", "Never"] = "Never"
    on_unknown_outcome: OnUnknownOutcome = "Redeliver"


class ApprovalRecord(Model):
    """The approval of one tool call: asked for (``decision`` unset) or decided.

    ``purpose`` is ``Run`` before the call first runs, ``Rerun`` after the operator stopped
    while it ran (its outcome is unknown). The decision authorises the execution numbered
    ``forInterruptions`` (``status.interruptions`` while it runs) and no other; ``used`` lists
    the AgentToolApprovals (uids) already spent on this call, which never count twice.
    """

    iteration: int
    tool_call_id: str
    tool_name: str
    arguments: str  # as the model wrote them, clipped (the transcript has them in full)
    arguments_digest: str
    purpose: Literal["Run", "Rerun"] = "Run"
    for_interruptions: int = 0
    requested_at: Time
    timeout_time: Time | None = None
    used: tuple[str, ...] = ()
    decision: Literal["Approve", "Deny"] | None = None
    decided_by: str | None = None
    reason: str | None = None
    approval_name: str | None = None
    approval_uid: str | None = None
    decided_at: Time | None = None

    def for_step(self, step: Step) -> bool:
        """Whether this record is about ``step``'s call."""
        return (
            step.kind == "Tool"
            and step.iteration == self.iteration
            and step.tool_call_id == self.tool_call_id
        )


class TranscriptInfo(Model):
    """How much of the transcript is committed: entries, bytes, segments (the next segment's
    index) and the earlier layout's chunks, if the task has any. A transcript found shorter
    than this has lost something.
    """  # noqa: D205

    config_maps: tuple[str, ...] = ()
    entries: int = 0
    bytes: int = 0
    segments: int = 0


class ForkedFrom(Model):
    """Where a fork's transcript came from (``spec.forkFrom``, resolved): the source task's
    name and uid, and how many of its steps were copied (steps 1 to ``step``). Recorded
    before the first entry is copied, so a restart copies the rest from the same source.
    """  # noqa: D205

    name: str
    uid: str
    step: int


class TaskOwner(Model):
    """The replica that runs the task (none: released, or never taken) and the epoch of that
    ownership, one more at every change of owner (see ``core.shard``).
    """  # noqa: D205

    replica: str | None = None
    epoch: int = 0


class TraceContext(Model):
    """The task's OpenTelemetry trace: its id and the id of its root span (``invoke_agent``),
    chosen when the task starts; every span of the task, whichever operator process records
    it, belongs to this trace and has this parent.
    """  # noqa: D205

    trace_id: str = Field(alias="traceID")
    span_id: str = Field(alias="spanID")

    @property
    def traceparent(self) -> str:
        """The root span as a W3C ``traceparent`` header (sampled)."""
        return f"00-{self.trace_id}-{self.span_id}-01"


class AgentTaskStatus(Model):
    """Everything the operator records about a task."""

    phase: Phase | None = None
    reason: str | None = None
    message: str | None = None
    result: str | None = None
    error: str | None = None
    iterations: int = 0
    tool_calls: int = 0
    attempts: int = 0
    internal_errors: int = 0
    interruptions: int = 0  # of the step in flight: the operator stopped while it ran
    next_retry_time: Time | None = None
    last_error: str | None = None
    start_time: Time | None = None
    completion_time: Time | None = None
    suspended_since: Time | None = None
    suspended_seconds: float = 0.0
    observed_generation: int | None = None
    conditions: tuple[Condition, ...] = ()
    usage: Usage = Usage()
    current_step: Step | None = None
    parallel_calls: tuple[ParallelCall, ...] = ()  # tool calls started alongside current_step
    model: ModelAccess | None = None
    resolved_model: ModelSpec | None = None  # what spec.model.modelRef named, fixed at start
    resolved_tools: tuple[ResolvedTool, ...] | None = None  # the MCP tools, fixed at start
    approval: ApprovalRecord | None = None  # the last tool call that needed a person's decision
    transcript: TranscriptInfo = TranscriptInfo()
    owner: TaskOwner | None = None  # written with the step intents, never on its own
    slots: tuple[str, ...] = ()  # the concurrency limits' Leases it holds a place in
    forked_from: ForkedFrom | None = None  # spec.forkFrom as resolved, before the copy
    trace_context: TraceContext | None = None  # written with a step intent, when tracing is on

    @property
    def terminal(self) -> bool:
        """Whether the task has ended (Succeeded or Failed): it is never touched again."""
        return self.phase in TERMINAL_PHASES
