"""core.pace: requests per minute, shared over replicas, and the pause after a 429."""

from __future__ import annotations

from agenttask_operator.core.pace import COOL_SECONDS, Pace, cool, reserve, share


def test_no_limit_books_nothing() -> None:
    p, at = reserve(Pace(), 100.0, None)
    assert (p, at) == (Pace(), 100.0)


def test_requests_are_spaced_by_the_rate() -> None:
    p = Pace()
    times = []
    for _ in range(4):
        p, at = reserve(p, 100.0, 60.0)  # all asked at once: one per second
        times.append(at)
    assert times == [100.0, 101.0, 102.0, 103.0]
    p, at = reserve(p, 110.0, 60.0)  # a quiet while later: at once
    assert at == 110.0


def test_each_replica_takes_its_share() -> None:
    assert share(None, 3) is None
    assert share(90, 3) == 30.0
    assert share(90, 0) == 90.0


def test_a_429_pauses_every_request_of_the_model() -> None:
    p = cool(Pace(), 100.0, 5.0)
    assert reserve(p, 101.0, None)[1] == 105.0  # even without a rate limit
    p2 = cool(p, 101.0, None)  # no Retry-After: a short pause, never shortening a longer one
    assert p2.cool_until == max(105.0, 101.0 + COOL_SECONDS)
    p3, at = reserve(cool(Pace(next_at=107.0), 100.0, 5.0), 101.0, 60.0)
    assert at == 107.0 and p3.next_at == 108.0
