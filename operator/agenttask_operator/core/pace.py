"""Request pacing per model: ``maxRequestsPerMinute``, and a pause for all after a 429.

Pure: times are seconds on a monotonic clock, passed in. Each replica paces the requests of its
own tasks at its share of the limit (the limit divided by the live replicas: tasks are spread
evenly over them, so the shares add up to the limit without an API request per LLM call). A 429
seen by one task pauses every task of the same model on that replica until the server's
``Retry-After`` (or ``COOL_SECONDS``) has passed: one rate-limited task should not be followed
by a burst from all the others.
"""

from __future__ import annotations

from dataclasses import dataclass

COOL_SECONDS = 2.0  # after a 429 without Retry-After


@dataclass(frozen=True)
class Pace:
    """When the next request of a model may go, and until when all of them pause."""

    next_at: float = 0.0
    cool_until: float = 0.0


def share(per_minute: int | None, replicas: int) -> float | None:
    """This replica's requests per minute (None: no limit)."""
    if per_minute is None:
        return None
    return per_minute / max(1, replicas)


def reserve(pace: Pace, now: float, per_minute: float | None) -> tuple[Pace, float]:
    """Book the next request: (the new pace, the time it may go)."""
    at = max(now, pace.cool_until)
    if per_minute is None or per_minute <= 0:
        return pace, at
    at = max(at, pace.next_at)
    return Pace(at + 60.0 / per_minute, pace.cool_until), at


def cool(pace: Pace, now: float, retry_after: float | None) -> Pace:
    """A 429: every request of the model waits until ``retry_after`` has passed."""
    until = now + (retry_after if retry_after is not None and retry_after > 0 else COOL_SECONDS)
    return Pace(pace.next_at, max(pace.cool_until, until))
