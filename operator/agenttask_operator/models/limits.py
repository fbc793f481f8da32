"""Bounds of every number in ``AgentTask.spec``: the one source for the CRD, models and docs.

The CRD schema (crds/agenttask.dev_agenttasks.yaml) declares these same ``minimum`` and
``maximum`` values, so the API server refuses anything outside them with a message that names
the field; a unit test checks that schema, README and this module agree. The models clamp
values outside them on parse (see ``models.spec``), so an object stored before a bound existed
is read at the bound instead of crashing the date maths of ``core``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

N = TypeVar("N", int, float)

DAY = 86_400  # seconds
YEAR = 365 * DAY  # 31 536 000 seconds


@dataclass(frozen=True)
class Range:
    """Inclusive bounds of one spec number."""

    minimum: int | float
    maximum: int | float

    def clamp(self, value: N) -> N:
        """``value`` moved into the range (an int stays an int). NaN is refused (ValueError)."""
        if isinstance(value, float) and math.isnan(value):
            raise ValueError("not a number")
        if value < self.minimum:
            return type(value)(self.minimum)
        if value > self.maximum:
            return type(value)(self.maximum)
        return value


ITERATIONS = Range(1, 1_000)  # maxIterations: LLM calls of one run
ATTEMPTS = Range(1, 100)  # retry.maxAttempts: attempts of one step
INTERRUPTIONS = Range(1, 100)  # maxInterruptions: of one step, by operator restarts
PARALLEL_TOOL_CALLS = Range(1, 64)  # maxParallelToolCalls: calls of one answer run at once
BACKOFF_SECONDS = Range(0, DAY)  # retry.initialBackoffSeconds, retry.maxBackoffSeconds
BACKOFF_FACTOR = Range(1, 10)  # retry.backoffFactor
TIMEOUT_SECONDS = Range(1, DAY)  # stepTimeoutSeconds, model.requestTimeoutSeconds, tool timeouts
DEADLINE_SECONDS = Range(1, YEAR)  # activeDeadlineSeconds
TTL_SECONDS = Range(0, YEAR)  # ttlSecondsAfterFinished
TEMPERATURE = Range(0, 2)  # model.temperature, as the OpenAI API accepts it
MAX_TOKENS = Range(1, 10_000_000)  # model.maxTokens: completion tokens of one LLM answer
TOTAL_TOKENS = Range(1, 10**12)  # budget.maxTotalTokens: within int64, exact as a float64
TOOL_CALLS = Range(0, 1_000_000)  # budget.maxToolCalls
TOOL_RESULT_CHARS = Range(256, 8 * 1024 * 1024)  # toolResultMaxChars: of a result, to the model
FORK_STEP = Range(0, 10_000_000)  # forkFrom.step: more than any transcript holds

SPEC: Mapping[str, Range] = {
    "model.temperature": TEMPERATURE,
    "model.maxTokens": MAX_TOKENS,
    "model.requestTimeoutSeconds": TIMEOUT_SECONDS,
    "tools[].http.timeoutSeconds": TIMEOUT_SECONDS,
    "maxIterations": ITERATIONS,
    "retry.maxAttempts": ATTEMPTS,
    "retry.initialBackoffSeconds": BACKOFF_SECONDS,
    "retry.backoffFactor": BACKOFF_FACTOR,
    "retry.maxBackoffSeconds": BACKOFF_SECONDS,
    "stepTimeoutSeconds": TIMEOUT_SECONDS,
    "activeDeadlineSeconds": DEADLINE_SECONDS,
    "budget.maxTotalTokens": TOTAL_TOKENS,
    "budget.maxToolCalls": TOOL_CALLS,
    "ttlSecondsAfterFinished": TTL_SECONDS,
    "toolResultMaxChars": TOOL_RESULT_CHARS,
    "maxInterruptions": INTERRUPTIONS,
    "maxParallelToolCalls": PARALLEL_TOOL_CALLS,
    "approval.timeoutSeconds": DEADLINE_SECONDS,
    "forkFrom.step": FORK_STEP,
}
"""Every number of the spec, by its path in the CRD schema (``[]``: any item of a list)."""
