"""``AgentTask.spec`` (agenttask.dev/v1alpha1). The CRD schema in crds/ is the contract."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from agenttask_operator.models.base import Model


class SecretKeyRef(Model):
    """A key of a Secret in the task's namespace."""

    name: str
    key: str


class ModelSpec(Model):
    """Which chat model to call and how."""

    name: str
    base_url: str | None = Field(default=None, alias="baseURL")
    api_key_secret_ref: SecretKeyRef | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    request_timeout_seconds: float | None = None


class HttpToolSpec(Model):
    """A tool served over HTTP: the operator POSTs the call as JSON."""

    url: str
    timeout_seconds: float = 30.0


class ToolSpec(Model):
    """A tool: a built-in of the operator's registry (name only) or an HTTP tool."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    http: HttpToolSpec | None = None


class RetryPolicy(Model):
    """Retries of a failing step (LLM request or tool execution)."""

    max_attempts: int = 5
    initial_backoff_seconds: float = 1.0
    backoff_factor: float = 2.0
    max_backoff_seconds: float = 300.0


class Budget(Model):
    """Limits checked before each call: tokens before an LLM call, tool calls before a tool."""

    max_total_tokens: int | None = None
    max_tool_calls: int | None = None


class AgentTaskSpec(Model):
    """What the user asked for."""

    input: str
    system_prompt: str | None = None
    model: ModelSpec
    tools: tuple[ToolSpec, ...] = ()
    max_iterations: int = 10
    retry: RetryPolicy = RetryPolicy()
    step_timeout_seconds: float = 120.0
    active_deadline_seconds: float | None = None
    budget: Budget = Budget()
    suspend: bool = False
    ttl_seconds_after_finished: float | None = None
