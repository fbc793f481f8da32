"""Retry maths: exponential backoff with jitter, capped, from a persisted attempt count.

Total for every input: an attempt count from status, a jitter or a server's Retry-After,
however large, odd or not finite, gives a delay within the policy's cap (or a day for
Retry-After) and a retry time within the datetime range.
"""

from __future__ import annotations

import math
from datetime import datetime

from agenttask_operator.core.deadline import later
from agenttask_operator.models import RetryPolicy
from agenttask_operator.models.limits import DAY

JITTER = 0.2  # a delay is spread over [d·(1-JITTER), d]
MAX_RETRY_AFTER = float(DAY)  # a server's Retry-After is honoured up to a day
MAX_STEPS = 10**300  # more failed attempts than this grow the delay no further (nor overflow)


def _unit(jitter: float) -> float:
    """``jitter`` moved into [0, 1]; NaN counts as 0."""
    if jitter >= 1.0:
        return 1.0
    return jitter if jitter > 0.0 else 0.0


def backoff_seconds(policy: RetryPolicy, failed_attempts: int, jitter: float) -> float:
    """Delay before the next attempt, after ``failed_attempts`` (≥ 1) failures.

    ``initial · factor^(n-1)``, capped at ``maxBackoffSeconds``, then reduced by up to 20 %
    according to ``jitter`` ∈ [0, 1) (passed in, so the maths stays deterministic).
    """
    steps = float(min(max(failed_attempts, 1) - 1, MAX_STEPS))
    try:
        growth = policy.backoff_factor**steps
    except OverflowError:  # huge factor or attempt count: the cap applies anyway
        growth = math.inf
    initial = policy.initial_backoff_seconds
    base = initial * growth if initial > 0 else 0.0
    capped = min(base, policy.max_backoff_seconds) if base > 0 else 0.0  # NaN: no wait
    return max(capped, 0.0) * (1.0 - JITTER * _unit(jitter))


def next_retry_time(
    policy: RetryPolicy,
    failed_attempts: int,
    now: datetime,
    jitter: float,
    retry_after: float | None = None,
) -> datetime:
    """When the next attempt may start: the backoff, or the server's Retry-After if longer.

    A Retry-After that is not a finite number is ignored; one beyond a day counts as a day.
    A time past the end of the datetime range is that end.
    """
    delay = backoff_seconds(policy, failed_attempts, jitter)
    if retry_after is not None and math.isfinite(retry_after):
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
    return later(now, delay)
