"""How a failed attempt is described to the core, and how HTTP statuses are classified.

Transient (retried with backoff): connection errors, timeouts, HTTP 408, 409, 429 and 5xx.
Permanent: every other 4xx. A permanent LLM failure ends the task with a specific reason.
"""

from __future__ import annotations

from dataclasses import dataclass

TRANSIENT_STATUSES = frozenset({408, 409, 429})

LLM_PERMANENT_REASONS = {
    400: "ModelRequestInvalid",
    401: "ModelAuthFailed",
    403: "ModelPermissionDenied",
    404: "ModelNotFound",
    413: "ModelRequestInvalid",
    422: "ModelRequestInvalid",
}


def is_transient_status(status: int) -> bool:
    """Whether an HTTP status is worth retrying."""
    return status in TRANSIENT_STATUSES or status >= 500


def llm_reason(status: int) -> str:
    """The CamelCase reason for a permanent LLM HTTP failure."""
    return LLM_PERMANENT_REASONS.get(status, "ModelRequestFailed")


@dataclass(frozen=True)
class Failure:
    """A failed attempt of a step.

    ``transient`` failures are retried; permanent ones end the task with ``reason``.
    ``retry_after`` is the server's wish (Retry-After), in seconds.
    """

    message: str
    transient: bool
    reason: str = "StepFailed"
    retry_after: float | None = None
    status: int | None = None  # the HTTP status of a failed request, if it got one
