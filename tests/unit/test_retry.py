"""Unit tests of ``core.retry`` (backoff maths) and ``core.errors`` (HTTP classification)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from agenttask_operator.core.errors import (
    Failure,
    is_transient_status,
    llm_reason,
)
from agenttask_operator.core.retry import (
    JITTER,
    MAX_RETRY_AFTER,
    backoff_seconds,
    next_retry_time,
)
from agenttask_operator.models import RetryPolicy

NOW = datetime(2025, 6, 1, 8, 30, 0, 250000, tzinfo=UTC)  # a fixed clock
DEFAULT = RetryPolicy()  # 5 attempts, 1 s, factor 2, at most 300 s

JITTERS = [0.0, 1e-9, 0.1, 0.25, 0.333, 0.5, 0.75, 0.9, 0.999999]


# --- backoff_seconds ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("initial", "factor", "failed", "expected"),
    [
        (1.0, 2.0, 1, 1.0),
        (1.0, 2.0, 2, 2.0),
        (1.0, 2.0, 3, 4.0),
        (1.0, 2.0, 4, 8.0),
        (1.0, 2.0, 8, 128.0),
        (0.5, 3.0, 1, 0.5),
        (0.5, 3.0, 2, 1.5),
        (0.5, 3.0, 4, 13.5),
        (2.0, 1.0, 1, 2.0),
        (2.0, 1.0, 50, 2.0),
        (0.0, 2.0, 10, 0.0),
        (10.0, 1.5, 3, 22.5),
    ],
)
def test_backoff_is_initial_times_factor_to_the_n_minus_one(
    initial: float, factor: float, failed: int, expected: float
) -> None:
    policy = RetryPolicy(
        initial_backoff_seconds=initial, backoff_factor=factor, max_backoff_seconds=1e6
    )
    assert backoff_seconds(policy, failed, 0.0) == pytest.approx(expected)


@pytest.mark.parametrize(("failed", "expected"), [(1, 1.0), (5, 16.0), (9, 256.0), (10, 300.0)])
def test_default_policy_backoff(failed: int, expected: float) -> None:
    assert backoff_seconds(DEFAULT, failed, 0.0) == expected


@pytest.mark.parametrize("failed", [7, 8, 20, 100])
def test_backoff_is_capped_at_max_backoff_seconds(failed: int) -> None:
    policy = RetryPolicy(initial_backoff_seconds=1.0, backoff_factor=2.0, max_backoff_seconds=60.0)
    assert backoff_seconds(policy, failed, 0.0) == 60.0


def test_max_backoff_below_initial_caps_even_the_first_delay() -> None:
    policy = RetryPolicy(initial_backoff_seconds=10.0, max_backoff_seconds=3.0)
    assert backoff_seconds(policy, 1, 0.0) == 3.0


def test_zero_max_backoff_means_no_delay() -> None:
    policy = RetryPolicy(initial_backoff_seconds=10.0, max_backoff_seconds=0.0)
    assert backoff_seconds(policy, 4, 0.7) == 0.0


@pytest.mark.parametrize("failed", [0, -1, -100])
def test_fewer_than_one_failure_counts_as_one(failed: int) -> None:
    assert backoff_seconds(DEFAULT, failed, 0.0) == backoff_seconds(DEFAULT, 1, 0.0) == 1.0


@pytest.mark.parametrize("jitter", JITTERS)
@pytest.mark.parametrize("failed", [1, 2, 3, 5, 8, 9, 10, 30])
def test_jitter_reduces_by_at_most_twenty_percent(jitter: float, failed: int) -> None:
    full = backoff_seconds(DEFAULT, failed, 0.0)
    d = backoff_seconds(DEFAULT, failed, jitter)
    assert full * (1 - JITTER) <= d <= full
    assert d == pytest.approx(full * (1 - 0.2 * jitter))


def test_jitter_constant_is_twenty_percent() -> None:
    assert JITTER == 0.2


@pytest.mark.parametrize("failed", [1, 4, 12])
def test_more_jitter_means_a_shorter_delay(failed: int) -> None:
    delays = [backoff_seconds(DEFAULT, failed, j) for j in JITTERS]
    assert delays == sorted(delays, reverse=True)
    assert len(set(delays)) == len(delays)


@pytest.mark.parametrize("jitter", JITTERS)
def test_delay_never_decreases_with_more_failures(jitter: float) -> None:
    delays = [backoff_seconds(DEFAULT, n, jitter) for n in range(1, 30)]
    assert delays == sorted(delays)


@pytest.mark.parametrize(("jitter", "same_as"), [(-0.5, 0.0), (-1e9, 0.0), (1.0, 1.0), (7.0, 1.0)])
def test_jitter_out_of_range_is_clamped(jitter: float, same_as: float) -> None:
    assert backoff_seconds(DEFAULT, 3, jitter) == backoff_seconds(DEFAULT, 3, same_as)


def test_jitter_clamped_to_one_gives_exactly_eighty_percent() -> None:
    assert backoff_seconds(DEFAULT, 3, 5.0) == pytest.approx(4.0 * 0.8)


def test_huge_factor_is_still_capped() -> None:
    policy = RetryPolicy(max_attempts=100, backoff_factor=1e6, max_backoff_seconds=300.0)
    assert backoff_seconds(policy, 60, 0.0) == 300.0


# --- next_retry_time ---------------------------------------------------------------------------


@pytest.mark.parametrize("failed", [1, 2, 3, 4, 5, 10])
@pytest.mark.parametrize("jitter", [0.0, 0.5, 0.99])
def test_next_retry_time_is_now_plus_backoff(failed: int, jitter: float) -> None:
    at = next_retry_time(DEFAULT, failed, NOW, jitter)
    assert at == NOW + timedelta(seconds=backoff_seconds(DEFAULT, failed, jitter))
    assert at.tzinfo is UTC


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        (None, 4.0),
        (0.0, 4.0),
        (1.0, 4.0),
        (3.9999, 4.0),
        (4.0, 4.0),
        (4.001, 4.001),
        (30.0, 30.0),
        (3600.0, 3600.0),
    ],
)
def test_retry_after_is_honoured_only_if_longer(retry_after: float | None, expected: float) -> None:
    at = next_retry_time(DEFAULT, 3, NOW, 0.0, retry_after)
    assert at == NOW + timedelta(seconds=expected)


def test_retry_after_may_exceed_the_backoff_cap() -> None:
    policy = RetryPolicy(max_backoff_seconds=10.0)
    assert next_retry_time(policy, 20, NOW, 0.0, 600.0) == NOW + timedelta(minutes=10)


def test_retry_after_beats_jittered_backoff() -> None:
    # backoff 8 s * 0.8 = 6.4 s < Retry-After 7 s
    assert next_retry_time(DEFAULT, 4, NOW, 1.0, 7.0) == NOW + timedelta(seconds=7)


def test_next_retry_time_keeps_the_clock_timezone() -> None:
    cet = timezone(timedelta(hours=1))
    now = datetime(2025, 1, 1, 12, 0, tzinfo=cet)
    at = next_retry_time(DEFAULT, 2, now, 0.0)
    assert at.tzinfo is cet
    assert at - now == timedelta(seconds=2)


def test_next_retry_time_is_deterministic() -> None:
    runs = {next_retry_time(DEFAULT, 3, NOW, 0.37, 2.0) for _ in range(5)}
    assert len(runs) == 1


@pytest.mark.parametrize("retry_after", [1e12, float("inf")])
def test_huge_retry_after_does_not_crash(retry_after: float) -> None:
    assert next_retry_time(DEFAULT, 1, NOW, 0.0, retry_after) > NOW


@pytest.mark.parametrize("retry_after", [None, 60.0, MAX_RETRY_AFTER, 1e300])
def test_a_retry_time_past_the_end_of_the_calendar_is_its_last_moment(
    retry_after: float | None,
) -> None:
    end = datetime.max.replace(tzinfo=UTC)
    at = next_retry_time(DEFAULT, 9, end - timedelta(seconds=1), 0.0, retry_after)
    assert at == end


def test_retry_after_is_honoured_up_to_a_day() -> None:
    assert MAX_RETRY_AFTER == 86400.0
    assert next_retry_time(DEFAULT, 1, NOW, 0.0, 1e9) == NOW + timedelta(days=1)


# --- total for every input: absurd counts, jitters and policies --------------------------------


@pytest.mark.parametrize("failed", [101, 10**6, 2**63, 10**400])
def test_an_absurd_attempt_count_waits_the_cap(failed: int) -> None:
    assert backoff_seconds(DEFAULT, failed, 0.0) == 300.0


@pytest.mark.parametrize("failed", [2, 10**6, 10**400])
def test_factor_one_waits_the_initial_backoff_for_any_attempt_count(failed: int) -> None:
    policy = RetryPolicy(initial_backoff_seconds=3.0, backoff_factor=1.0)
    assert backoff_seconds(policy, failed, 0.0) == 3.0


@pytest.mark.parametrize("failed", [2, 10**6, 10**400])
def test_zero_initial_backoff_never_waits(failed: int) -> None:
    policy = RetryPolicy(initial_backoff_seconds=0.0, backoff_factor=10.0)
    assert backoff_seconds(policy, failed, 0.0) == 0.0


@pytest.mark.parametrize(
    ("jitter", "same_as"), [(float("nan"), 0.0), (float("inf"), 1.0), (float("-inf"), 0.0)]
)
def test_a_jitter_that_is_not_finite_is_clamped(jitter: float, same_as: float) -> None:
    assert backoff_seconds(DEFAULT, 3, jitter) == backoff_seconds(DEFAULT, 3, same_as)


@pytest.mark.parametrize("retry_after", [float("nan"), float("-inf"), -5.0])
def test_a_meaningless_retry_after_leaves_the_backoff(retry_after: float) -> None:
    assert next_retry_time(DEFAULT, 3, NOW, 0.0, retry_after) == NOW + timedelta(seconds=4)


def test_a_policy_beyond_the_crd_bounds_is_read_at_the_bounds() -> None:
    raw = {
        "maxAttempts": 10**6,
        "initialBackoffSeconds": 1e300,
        "backoffFactor": 1e6,
        "maxBackoffSeconds": 10**400,
    }
    policy = RetryPolicy.model_validate(raw)
    assert policy == RetryPolicy(
        max_attempts=100,
        initial_backoff_seconds=86400,
        backoff_factor=10,
        max_backoff_seconds=86400,
    )
    assert next_retry_time(policy, 10**6, NOW, 0.0) == NOW + timedelta(days=1)


# --- errors: classification --------------------------------------------------------------------


@pytest.mark.parametrize("code", [408, 409, 429, 500, 501, 502, 503, 504, 507, 520, 599, 600])
def test_transient_statuses(code: int) -> None:
    assert is_transient_status(code)


@pytest.mark.parametrize(
    "code", [400, 401, 402, 403, 404, 405, 406, 407, 410, 411, 413, 415, 418, 422, 451, 499]
)
def test_permanent_statuses(code: int) -> None:
    assert not is_transient_status(code)


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (400, "ModelRequestInvalid"),
        (413, "ModelRequestInvalid"),
        (422, "ModelRequestInvalid"),
        (401, "ModelAuthFailed"),
        (403, "ModelPermissionDenied"),
        (404, "ModelNotFound"),
        (402, "ModelRequestFailed"),
        (405, "ModelRequestFailed"),
        (410, "ModelRequestFailed"),
        (418, "ModelRequestFailed"),
        (451, "ModelRequestFailed"),
    ],
)
def test_llm_reason_of_permanent_statuses(code: int, reason: str) -> None:
    assert llm_reason(code) == reason


def test_failure_defaults() -> None:
    f = Failure("boom", transient=True)
    assert (f.reason, f.retry_after) == ("StepFailed", None)
    assert f == Failure("boom", True, "StepFailed", None)
