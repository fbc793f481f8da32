"""Retry maths: exponential backoff with jitter, capped, from a persisted attempt count."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from agenttask_operator.models import RetryPolicy

JITTER = 0.2  # a delay is spread over [d·(1-JITTER), d]
MAX_RETRY_AFTER = 24 * 3600.0  # a server's Retry-After is honoured up to a day


def backoff_seconds(policy: RetryPolicy, failed_attempts: int, jitter: float) -> float:
    """Delay before the next attempt, after ``failed_attempts`` (≥ 1) failures.

    ``initial · factor^(n-1)``, capped at ``maxBackoffSeconds``, then reduced by up to 20 %
    according to ``jitter`` ∈ [0, 1) (passed in, so the maths stays deterministic).
    """
    n = max(failed_attempts, 1)
    try:
        base = policy.initial_backoff_seconds * policy.backoff_factor ** (n - 1)
    except OverflowError:  # huge factor or attempt count: the cap applies anyway
        base = math.inf
    capped = min(base, policy.max_backoff_seconds)
    return capped * (1.0 - JITTER * min(max(jitter, 0.0), 1.0))


def next_retry_time(
    policy: RetryPolicy,
    failed_attempts: int,
    now: datetime,
    jitter: float,
    retry_after: float | None = None,
) -> datetime:
    """When the next attempt may start: the backoff, or the server's Retry-After if longer.

    A Retry-After that is not a finite number is ignored; one beyond a day counts as a day.
    """
    delay = backoff_seconds(policy, failed_attempts, jitter)
    if retry_after is not None and math.isfinite(retry_after):
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
    return now + timedelta(seconds=delay)
