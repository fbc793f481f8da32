"""``AgentModel`` (agenttask.dev/v1alpha1): one model endpoint that many tasks use.

The CRD schema (crds/agenttask.dev_agentmodels.yaml) is the contract. Its numbers have the
bounds of ``AgentTask.spec.model`` (``models.limits``) and are clamped on parse the same way,
through the annotated types of ``models.spec``.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from agenttask_operator.models.base import Model
from agenttask_operator.models.spec import MaxTokens, SecretKeyRef, Temperature, TimeoutSeconds
from agenttask_operator.models.status import Condition

KIND, PLURAL = "AgentModel", "agentmodels"
READY = "Ready"  # the type of the one condition the operator writes


class AgentModelSpec(Model):
    """An endpoint, a model name, the Secret holding its key, and request defaults."""

    model: str
    base_url: str | None = Field(default=None, alias="baseURL")
    api_key_secret_ref: SecretKeyRef | None = None  # in the AgentModel's own namespace
    temperature: Temperature | None = None
    max_tokens: MaxTokens | None = None
    request_timeout_seconds: TimeoutSeconds | None = None
    # At most this many tasks naming this AgentModel run at once; the others wait (Queued).
    max_concurrent_tasks: int | None = Field(default=None, ge=1)
    # At most this many LLM requests per minute for its tasks, all replicas together.
    max_requests_per_minute: int | None = Field(default=None, ge=1)


class AgentModelStatus(Model):
    """What the operator found: the ``Ready`` condition and the generation it describes."""

    observed_generation: int | None = None
    conditions: tuple[Condition, ...] = ()

    def condition(self, type_: str = READY) -> Condition | None:
        """The condition of that type, if any."""
        return next((c for c in self.conditions if c.type == type_), None)


class ModelOverrides(Model):
    """What a task may set on top of an AgentModel: request tuning, never endpoint or key."""

    temperature: Temperature | None = None
    max_tokens: MaxTokens | None = None
    request_timeout_seconds: TimeoutSeconds | None = None


class SecretLookup(StrEnum):
    """What reading a Secret for one key found (never the value itself)."""

    FOUND = "Found"  # the Secret exists and the key has a non-empty value
    NOT_FOUND = "NotFound"  # no Secret of that name (HTTP 404)
    FORBIDDEN = "Forbidden"  # the operator may not read it (HTTP 403)
    NO_KEY = "NoKey"  # the Secret exists without that key
    EMPTY = "Empty"  # the key is there, its value empty or blank
