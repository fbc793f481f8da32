"""``AgentModel``: its readiness, its status patch, and the model a task gets from it.

Pure: what reading the Secret found and ``now`` are passed in. Readiness says only whether the
Secret exists and has the key; nothing is sent to the model to check, and the key's value is
never seen here (the effects layer reports a :class:`SecretLookup`, not the value).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from agenttask_operator.core.status import ts
from agenttask_operator.models import Condition, ModelSpec
from agenttask_operator.models.agentmodel import (
    READY,
    AgentModelSpec,
    AgentModelStatus,
    ModelOverrides,
    SecretLookup,
)

T = TypeVar("T")


@dataclass(frozen=True)
class Readiness:
    """The ``Ready`` condition to be: True or False, a CamelCase reason, a message."""

    ready: bool
    reason: str
    message: str


def readiness(namespace: str, spec: AgentModelSpec, lookup: SecretLookup | None) -> Readiness:
    """Whether the AgentModel can be used, given what reading its Secret found.

    ``lookup`` is None when there is no ``apiKeySecretRef`` (then nothing was read).
    """
    ref = spec.api_key_secret_ref
    if ref is None:
        return Readiness(
            True,
            "NoSecret",
            "no apiKeySecretRef: requests carry no key, unless baseURL is the operator's "
            "default endpoint (its own key goes there and nowhere else)",
        )
    secret = f"Secret {namespace}/{ref.name}"
    match lookup:
        case SecretLookup.FOUND:
            return Readiness(True, "SecretFound", f"{secret} has the key {ref.key!r}")
        case SecretLookup.NOT_FOUND:
            return Readiness(False, "SecretNotFound", f"{secret} not found")
        case SecretLookup.FORBIDDEN:
            return Readiness(
                False, "SecretForbidden", f"the operator is not allowed to read {secret}"
            )
        case SecretLookup.NO_KEY:
            return Readiness(False, "KeyNotFound", f"{secret} has no key {ref.key!r}")
        case SecretLookup.EMPTY:
            return Readiness(False, "KeyNotFound", f"{secret} has an empty key {ref.key!r}")
    raise ValueError(f"apiKeySecretRef is set but the Secret lookup is {lookup!r}")


def status_patch(
    current: AgentModelStatus, generation: int | None, ready: Readiness, now: datetime
) -> dict[str, Any] | None:
    """The merge patch of ``status``, or None when it would change nothing.

    ``lastTransitionTime`` moves only when the condition's status flips; other conditions are
    kept as they are (a merge patch replaces the whole list).
    """
    status = "True" if ready.ready else "False"
    previous = current.condition(READY)
    if (
        previous is not None
        and (previous.status, previous.reason, previous.message)
        == (status, ready.reason, ready.message)
        and previous.observed_generation == generation
        and current.observed_generation == generation
    ):
        return None
    since = (
        previous.last_transition_time if previous is not None and previous.status == status else now
    )
    cond = Condition(
        type=READY,
        status=status,
        reason=ready.reason,
        message=ready.message,
        last_transition_time=since,
        observed_generation=generation,
    )
    others = [c for c in current.conditions if c.type != READY]
    return {
        "observedGeneration": generation,
        "conditions": [_api(c) for c in others] + [_api(cond)],
    }


def _api(cond: Condition) -> dict[str, Any]:
    return cond.to_api() | {"lastTransitionTime": ts(cond.last_transition_time)}


class Overrides(Protocol):
    """What a task may set on top of an AgentModel (``ModelOverrides`` or a ``ModelSpec``)."""

    @property
    def temperature(self) -> float | None:
        """Sampling temperature."""

    @property
    def max_tokens(self) -> int | None:
        """Most tokens of one answer."""

    @property
    def request_timeout_seconds(self) -> float | None:
        """Timeout of one LLM request."""


_NO_OVERRIDES = ModelOverrides()


def resolve(agent_model: AgentModelSpec, overrides: Overrides | None = None) -> ModelSpec:
    """The model a task uses through an AgentModel.

    Endpoint, model name and key come from the AgentModel as a whole (a task can never pair
    that key with a URL of its own); temperature, maxTokens and requestTimeoutSeconds are the
    task's where it sets them, else the AgentModel's defaults.
    """
    am = agent_model
    task: Overrides = overrides if overrides is not None else _NO_OVERRIDES
    return ModelSpec(
        name=am.model,
        base_url=am.base_url,
        api_key_secret_ref=am.api_key_secret_ref,
        temperature=_first(task.temperature, am.temperature),
        max_tokens=_first(task.max_tokens, am.max_tokens),
        request_timeout_seconds=_first(task.request_timeout_seconds, am.request_timeout_seconds),
    )


def _first(task: T | None, default: T | None) -> T | None:
    """The task's value where it set one (0 included), else the AgentModel's."""
    return task if task is not None else default
