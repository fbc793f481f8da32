"""``AgentTask.spec`` (agenttask.dev/v1alpha1). The CRD schema in crds/ is the contract.

Every number is clamped on parse to the bounds of ``models.limits`` (the CRD's own minimum and
maximum): the API server refuses values outside them, but an object stored before a bound
existed is read at the bound, so no later date or timeout computation can overflow.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidatorFunctionWrapHandler, WrapValidator

from agenttask_operator.models import limits
from agenttask_operator.models.base import Model


def _within(bounds: limits.Range) -> WrapValidator:
    """A validator that moves a number into ``bounds`` (before and after type coercion)."""

    def clamp(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        # Clamp a raw number first: an int too large for a float, or a float too large for an
        # int, is then still read (at the bound) instead of failing validation.
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = bounds.clamp(value)
        parsed = handler(value)
        return handler(bounds.clamp(parsed))  # strings coerced to numbers are clamped too

    return WrapValidator(clamp)


Iterations = Annotated[int, _within(limits.ITERATIONS)]
Attempts = Annotated[int, _within(limits.ATTEMPTS)]
BackoffSeconds = Annotated[float, _within(limits.BACKOFF_SECONDS)]
BackoffFactor = Annotated[float, _within(limits.BACKOFF_FACTOR)]
TimeoutSeconds = Annotated[float, _within(limits.TIMEOUT_SECONDS)]
DeadlineSeconds = Annotated[float, _within(limits.DEADLINE_SECONDS)]
TtlSeconds = Annotated[float, _within(limits.TTL_SECONDS)]
Temperature = Annotated[float, _within(limits.TEMPERATURE)]
MaxTokens = Annotated[int, _within(limits.MAX_TOKENS)]
TotalTokens = Annotated[int, _within(limits.TOTAL_TOKENS)]
ToolResultChars = Annotated[int, _within(limits.TOOL_RESULT_CHARS)]
Interruptions = Annotated[int, _within(limits.INTERRUPTIONS)]
ParallelToolCalls = Annotated[int, _within(limits.PARALLEL_TOOL_CALLS)]
ToolCalls = Annotated[int, _within(limits.TOOL_CALLS)]
ForkStep = Annotated[int, _within(limits.FORK_STEP)]


class SecretKeyRef(Model):
    """A key of a Secret in the task's namespace."""

    name: str
    key: str


class ModelRef(Model):
    """An ``AgentModel`` in the task's namespace."""

    name: str


class ModelSpec(Model):
    """Which chat model to call and how: inline (``name``…) or an AgentModel (``modelRef``).

    With ``modelRef`` the endpoint, model name and key come from the AgentModel as a whole;
    the task may only tune temperature, maxTokens and requestTimeoutSeconds.
    """

    name: str = ""
    model_ref: ModelRef | None = None
    base_url: str | None = Field(default=None, alias="baseURL")
    api_key_secret_ref: SecretKeyRef | None = None
    temperature: Temperature | None = None
    max_tokens: MaxTokens | None = None
    request_timeout_seconds: TimeoutSeconds | None = None


class HttpToolSpec(Model):
    """A tool served over HTTP: the operator POSTs the call as JSON."""

    url: str
    timeout_seconds: TimeoutSeconds = 30.0


class ToolServerRef(Model):
    """Tools of an ``AgentToolServer`` (MCP) in the task's namespace: ``tools`` (empty: all)."""

    name: str
    tools: tuple[str, ...] = ()


Approval = Literal["Required", "Never"]
"""A task's explicit approval setting for a tool entry (unset: the server's policy, or none)."""
OnUnknownOutcome = Literal["Redeliver", "Fail", "AskApproval"]
"""What to do with a tool call in flight when the operator stopped (its outcome is unknown)."""


class ToolSpec(Model):
    """A tool: a built-in (name only), an HTTP tool, or the tools of an MCP server.

    ``approval`` and ``onUnknownOutcome`` apply to the entry's tool (all tools of a
    ``toolServerRef`` entry); ``core.approval`` combines them with the server's settings.
    """

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    http: HttpToolSpec | None = None
    tool_server_ref: ToolServerRef | None = None
    approval: Approval | None = None
    on_unknown_outcome: OnUnknownOutcome | None = None

    @property
    def builtin(self) -> bool:
        """Whether this names a built-in of the operator (neither HTTP nor MCP)."""
        return self.http is None and self.tool_server_ref is None


class RetryPolicy(Model):
    """Retries of a failing step (LLM request or tool execution)."""

    max_attempts: Attempts = 5
    initial_backoff_seconds: BackoffSeconds = 1.0
    backoff_factor: BackoffFactor = 2.0
    max_backoff_seconds: BackoffSeconds = 300.0


class Budget(Model):
    """Limits checked before each call: tokens before an LLM call, tool calls before a tool."""

    max_total_tokens: TotalTokens | None = None
    max_tool_calls: ToolCalls | None = None


class ApprovalPolicy(Model):
    """How long a tool call waits for an AgentToolApproval, and what happens then."""

    timeout_seconds: DeadlineSeconds | None = None
    on_timeout: Literal["Deny", "Fail"] = "Deny"


class ForkFrom(Model):
    """Start from a copy of another task's transcript (``core.fork``): the AgentTask ``name``
    of the same namespace, up to and including step ``step`` (None: its last committed step
    before its end, see ``core.fork.default_step``).
    """  # noqa: D205

    name: str
    step: ForkStep | None = None


class AgentTaskSpec(Model):
    """What the user asked for."""

    input: str
    system_prompt: str | None = None
    model: ModelSpec
    tools: tuple[ToolSpec, ...] = ()
    max_iterations: Iterations = 10
    retry: RetryPolicy = RetryPolicy()
    step_timeout_seconds: TimeoutSeconds = 120.0
    active_deadline_seconds: DeadlineSeconds | None = None
    budget: Budget = Budget()
    suspend: bool = False
    ttl_seconds_after_finished: TtlSeconds | None = None
    tool_result_max_chars: ToolResultChars = 65536
    max_interruptions: Interruptions = 5
    max_parallel_tool_calls: ParallelToolCalls = 4
    approval: ApprovalPolicy = ApprovalPolicy()
    fork_from: ForkFrom | None = None
