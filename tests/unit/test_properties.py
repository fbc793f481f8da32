"""Property-based tests (hypothesis): nothing a task can hold makes ``core`` raise.

Specs are generated from the CRD schema in crds/ — its types, enums, patterns, lengths,
``minimum`` and ``maximum`` — so these tests follow the schema as it changes. Each property runs
twice: with numbers the API server admits (bounds included), and with numbers beyond the bounds,
as an object stored before a bound existed may hold (the models clamp those). Statuses carry
timestamps across centuries, any attempt count, any step in flight, any suspension; transcripts
carry LLM and tool entries whose tool calls have odd ids.

The schema, ``models.limits`` and the README's "Policy knobs" table must agree on every bound.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agenttask_operator.core import Execute, Failure, Noop, Wait, WriteStatus, decide, on_failure
from agenttask_operator.core import status as status_
from agenttask_operator.core.actions import Delete
from agenttask_operator.core.conversation import (
    Answer,
    find_tool_call,
    next_step,
    project,
    request_messages,
)
from agenttask_operator.core.deadline import attempt_timeout, deadline, deadline_passed, later
from agenttask_operator.core.errors import is_transient_status, llm_reason
from agenttask_operator.core.retry import MAX_RETRY_AFTER, backoff_seconds, next_retry_time
from agenttask_operator.models import (
    AgentTaskSpec,
    AgentTaskStatus,
    Condition,
    Entry,
    OperatorPolicy,
    RetryPolicy,
    Step,
    TaskState,
    Usage,
    limits,
)
from agenttask_operator.models.base import Model
from crdschema import SPEC_SCHEMA, numbers_of

M = TypeVar("M", bound=Model)

REPO = Path(__file__).resolve().parents[2]

# Modest run time (a few seconds for the module): fewer examples where a whole task is drawn.
# PROPERTY_SCALE=20 (environment) runs twenty times as many. No example database in the work
# tree; a failure prints a blob to reproduce it.
SCALE = int(os.environ.get("PROPERTY_SCALE", "1"))
PROPERTY = settings(
    max_examples=50 * SCALE,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
TASKS = settings(PROPERTY, max_examples=25 * SCALE)

# Timestamps in status. The date maths of ``core.deadline`` and ``core.retry`` saturate, so they
# are tested over the whole datetime range. ``decide`` and the status helpers are tested over
# years 1000 to 9998: ``status.ts`` writes years below 1000 with fewer than four digits (strftime),
# which the status model cannot read back, and ``decide``'s ttl expiry (completionTime +
# ttlSecondsAfterFinished, at most a year) does not saturate yet.
ANY_TIME = (datetime.min, datetime.max)
STATUS_TIME = (datetime(1000, 1, 1), datetime(9998, 12, 31))
ZONES = st.sampled_from([UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12))])


def times(bounds: tuple[datetime, datetime]) -> st.SearchStrategy[datetime]:
    """Aware timestamps within ``bounds``, the bounds themselves included, mostly in UTC."""
    lo, hi = bounds
    edges = st.sampled_from([lo, hi]).map(lambda t: t.replace(tzinfo=UTC))
    inside = st.datetimes(min_value=lo, max_value=hi, timezones=st.just(UTC))
    near_now = st.datetimes(datetime(2020, 1, 1), datetime(2040, 1, 1), timezones=ZONES)
    return st.one_of(edges, inside, near_now)


# --- strategies from the CRD schema ------------------------------------------------------------

JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8))
JSON_OBJECTS = st.dictionaries(
    st.text(max_size=8),
    st.recursive(
        JSON_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner)
    ),
    max_size=3,
)
HUGE_INTS = st.sampled_from([2**31, 2**53 + 1, 2**63 - 1, 2**64, 1099511627776, 10**400])


def number(schema: Mapping[str, Any], beyond: bool) -> st.SearchStrategy[int | float]:
    """A number of ``schema``: within (and at) its bounds; with ``beyond``, also outside them."""
    lo, hi = schema.get("minimum"), schema.get("maximum")
    integer = schema["type"] == "integer"
    edges = [b for b in (lo, hi) if b is not None]
    inside: st.SearchStrategy[int | float] = st.integers(lo, hi)
    if not integer:
        inside |= st.floats(lo, hi, allow_nan=False, allow_infinity=hi is None)
        edges += [float(b) for b in edges]
    inside |= st.sampled_from(edges) if edges else st.nothing()
    if not beyond:
        return inside
    outside: st.SearchStrategy[int | float] = HUGE_INTS | HUGE_INTS.map(lambda n: -n)
    if lo is not None:
        outside |= st.integers(max_value=lo - 1, min_value=lo - 10**20)
        if not integer:
            outside |= st.floats(max_value=lo, exclude_max=True, allow_nan=False)
    if hi is not None:
        outside |= st.integers(min_value=hi + 1, max_value=hi + 10**20)
        if not integer:
            outside |= st.floats(min_value=hi, exclude_min=True, allow_nan=False)
    return inside | outside


def string(schema: Mapping[str, Any]) -> st.SearchStrategy[str]:
    """A string of ``schema``: its pattern (searched, as the API server does) and lengths."""
    lo, hi = schema.get("minLength", 0), schema.get("maxLength", 10**9)
    pattern = schema.get("pattern")
    if pattern is None:
        return st.text(min_size=lo, max_size=max(lo, min(hi, 8)))
    # RE2 (the API server) reads `$` as the end of the text; Python's `$` allows a final newline.
    strict = re.compile(pattern.replace("$", r"\Z"))
    return st.from_regex(strict).filter(lambda s: lo <= len(s) <= hi)


def from_schema(schema: Mapping[str, Any], beyond: bool) -> st.SearchStrategy[Any]:
    """Values the OpenAPI ``schema`` admits (numbers beyond its bounds too, with ``beyond``)."""
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "object":
        props: Mapping[str, Any] | None = schema.get("properties")
        if props is None:
            return JSON_OBJECTS
        required = set(schema.get("required", []))
        subs = {k: from_schema(v, beyond) for k, v in props.items()}
        return st.fixed_dictionaries(
            {k: s for k, s in subs.items() if k in required},
            optional={k: s for k, s in subs.items() if k not in required},
        )
    if kind == "array":
        keys = schema.get("x-kubernetes-list-map-keys") or []
        return st.lists(
            from_schema(schema["items"], beyond),
            max_size=min(schema.get("maxItems", 3), 3),
            unique_by=(lambda item: tuple(item.get(k) for k in keys)) if keys else None,
        )
    if kind == "string":
        return string(schema)
    if kind == "boolean":
        return st.booleans()
    if kind in ("integer", "number"):
        return number(schema, beyond)
    raise AssertionError(f"no strategy for schema {schema}")


SPECS = {beyond: from_schema(SPEC_SCHEMA, beyond) for beyond in (False, True)}
RETRIES = {beyond: from_schema(SPEC_SCHEMA["properties"]["retry"], beyond) for beyond in SPECS}


def values_at(obj: Any, path: str) -> list[Any]:
    """The values at ``path`` (as :func:`numbers_of` names it) in a JSON-like object.

    One value per place the field may be (None where it is left out), so that a raw spec and
    its parsed form (defaults filled in) give lists of the same length.
    """
    *parents, leaf = path.split(".")
    found = [obj]
    for part in parents:
        key, many = (part[:-2], True) if part.endswith("[]") else (part, False)
        found = [x.get(key) or ([] if many else {}) for x in found]
        if many:
            found = [item for x in found for item in x]
    return [x.get(leaf) for x in found]


SPEC_NUMBERS = dict(numbers_of(SPEC_SCHEMA))


# --- strategies: status, transcript, state -----------------------------------------------------

ODD_IDS = st.one_of(
    st.sampled_from(["c1", "c2", "", " ", "None", "call_0", "ü", "\x00", "a" * 300, "c1\n"]),
    st.text(max_size=6),
)
COUNTS = st.one_of(st.integers(0, 3), st.integers(0, 2_000), HUGE_INTS, st.integers(-3, -1))
TEXT = st.text(max_size=8)


def model(cls: type[M], **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[M]:
    """Instances of a model from strategies of its fields (by their Python names)."""
    return st.fixed_dictionaries(fields).map(lambda kw: cls(**kw))


def steps(bounds: tuple[datetime, datetime]) -> st.SearchStrategy[Step]:
    """Steps in flight: LLM or tool, any iteration, odd tool call ids."""
    return model(
        Step,
        kind=st.sampled_from(["LLM", "Tool"]),
        iteration=COUNTS,
        tool_call_id=st.none() | ODD_IDS,
        tool_name=st.none() | TEXT,
        start_time=st.none() | times(bounds),
    )


def usages() -> st.SearchStrategy[Usage]:
    """Token counts, small to absurd."""
    return model(Usage, prompt_tokens=COUNTS, completion_tokens=COUNTS, total_tokens=COUNTS)


def statuses(bounds: tuple[datetime, datetime]) -> st.SearchStrategy[AgentTaskStatus]:
    """Any status, in any phase, with timestamps within ``bounds``."""
    maybe_time = st.none() | times(bounds)
    condition = model(
        Condition,
        type=st.sampled_from(["Succeeded", "Ready"]),
        status=st.sampled_from(["True", "False", "Unknown"]),
        reason=TEXT,
        message=TEXT,
        last_transition_time=times(bounds),
        observed_generation=st.none() | COUNTS,
    )
    return model(
        AgentTaskStatus,
        phase=st.sampled_from([None, "Pending", "Running", "Suspended", "Succeeded", "Failed"]),
        reason=st.none() | TEXT,
        message=st.none() | TEXT,
        last_error=st.none() | TEXT,
        iterations=COUNTS,
        tool_calls=COUNTS,
        attempts=COUNTS,
        next_retry_time=maybe_time,
        start_time=maybe_time,
        completion_time=maybe_time,
        suspended_since=maybe_time,
        suspended_seconds=st.one_of(
            st.just(0.0),
            st.floats(0, 1e7),
            st.floats(-1e300, 1e300, allow_nan=False),
        ),
        observed_generation=st.none() | COUNTS,
        conditions=st.lists(condition, max_size=2, unique_by=lambda c: c.type).map(tuple),
        usage=usages(),
        current_step=st.none() | steps(bounds),
    )


def tool_call() -> st.SearchStrategy[dict[str, Any]]:
    """A tool call as the model writes it, with odd or missing ids and names."""
    name = st.sampled_from(["check_disk", "clean_logs", "echo", ""]) | TEXT | st.none()
    function = st.fixed_dictionaries(
        {}, optional={"name": name, "arguments": st.sampled_from(["{}", "{", ""])}
    )
    return st.fixed_dictionaries(
        {"type": st.just("function"), "function": function},
        optional={"id": ODD_IDS | st.none() | st.integers()},
    )


def entries(bounds: tuple[datetime, datetime]) -> st.SearchStrategy[Entry]:
    """Transcript entries: LLM answers (with or without tool calls) and tool results."""
    llm_message = st.fixed_dictionaries(
        {"role": st.just("assistant")},
        optional={
            "content": st.none() | TEXT,
            "tool_calls": st.none() | st.lists(tool_call(), max_size=3),
        },
    )
    llm = model(
        Entry,
        kind=st.just("LLM"),
        iteration=COUNTS,
        message=llm_message,
        usage=st.none() | usages(),
        finish_reason=st.sampled_from(
            [None, "stop", "tool_calls", "length", "content_filter", "?"]
        ),
        time=st.none() | times(bounds),
    )
    tool = model(
        Entry,
        kind=st.just("Tool"),
        iteration=COUNTS,
        tool_call_id=st.none() | ODD_IDS,
        message=st.fixed_dictionaries({"role": st.just("tool"), "content": TEXT}),
        is_error=st.booleans(),
        time=st.none() | times(bounds),
    )
    return llm | tool


STATUSES = {bounds: statuses(bounds) for bounds in (ANY_TIME, STATUS_TIME)}
TRANSCRIPTS = {bounds: st.lists(entries(bounds), max_size=5).map(tuple) for bounds in STATUSES}
STEPS = {bounds: steps(bounds) for bounds in STATUSES}
TIMES = {bounds: times(bounds) for bounds in STATUSES}
POLICIES = st.builds(
    OperatorPolicy,
    default_key=st.booleans(),
    allowed_hosts=st.sampled_from([(), ("*.svc.cluster.local", "10.0.0.0/8", "api.openai.com")]),
    builtin_namespaces=st.sampled_from([(), ("ns",), ("other",)]),
)


@st.composite
def states(
    draw: st.DrawFn, beyond: bool, bounds: tuple[datetime, datetime] = STATUS_TIME
) -> TaskState:
    """A whole task: a spec from the CRD schema, any status, any transcript, any operator."""
    spec = AgentTaskSpec.model_validate(draw(SPECS[beyond]))
    builtins = [t.name for t in spec.tools if t.http is None]
    offered = draw(st.just(frozenset(builtins)) | st.frozensets(st.sampled_from([*builtins, "x"])))
    return TaskState(
        namespace="ns",
        name="task",
        uid="0b9c2a4e-1111-2222-3333-444455556666",
        generation=draw(st.integers(1, 2**63 - 1)),
        spec=spec,
        status=draw(STATUSES[bounds]),
        transcript=draw(TRANSCRIPTS[bounds]),
        builtin_tools=offered,
        deleting=draw(st.booleans()),
        policy=draw(POLICIES),
    )


FAILURES = st.builds(
    Failure,
    message=TEXT,
    transient=st.booleans(),
    reason=st.sampled_from(["StepFailed", "StepTimeout", "ModelUnavailable"]),
    retry_after=st.none() | st.floats() | st.sampled_from([1e12, 1e300, -1.0, 0.0]),
)
JITTERS = st.floats() | st.floats(0, 1, exclude_max=True)
ATTEMPTS = st.integers(-3, 200) | HUGE_INTS


# --- checks ------------------------------------------------------------------------------------


def check_patch(state: TaskState, patch: dict[str, Any]) -> TaskState:
    """A status patch is plain JSON (no NaN or infinity) and the status model reads it back."""
    json.dumps(patch, allow_nan=False)
    return status_.apply(state, patch)


def check_action(state: TaskState, action: object) -> None:
    """Every action is well-formed: a finite timeout within the bound, patches that apply."""
    assert isinstance(action, Noop | WriteStatus | Wait | Execute | Delete)
    if isinstance(action, Execute):
        assert 0.0 <= action.timeout <= limits.TIMEOUT_SECONDS.maximum
        assert math.isfinite(action.timeout)
        check_patch(state, action.intent)
    elif isinstance(action, WriteStatus):
        check_patch(state, action.patch)
    elif isinstance(action, Wait):
        assert action.until is None or isinstance(action.until, datetime)


# --- the schema, the limits and the README agree ----------------------------------------------


def test_every_number_of_the_spec_has_the_documented_bounds() -> None:
    bounds = {
        path: limits.Range(s.get("minimum", -math.inf), s.get("maximum", math.inf))
        for path, s in SPEC_NUMBERS.items()
    }
    assert bounds == dict(limits.SPEC)


@pytest.mark.parametrize("path", sorted(limits.SPEC))
def test_each_bound_is_in_the_field_description(path: str) -> None:
    schema = SPEC_NUMBERS[path]
    assert f"{schema['maximum']}" in schema["description"]


def policy_knobs() -> dict[str, list[str]]:
    """The rows of the README's "Policy knobs" table: field → cells after the field."""
    text = (REPO / "README.md").read_text()
    table = text.split("### Policy knobs", 1)[1].split("\n\n")[1]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()]
    assert rows[0][:3] == ["field", "default", "maximum (more is refused)"]
    return {row[0].strip("`"): row[1:] for row in rows[2:]}


@pytest.mark.parametrize("path", sorted(set(limits.SPEC) - {"model.temperature"}))
def test_readme_policy_knobs_show_each_maximum(path: str) -> None:
    assert policy_knobs()[path][1].split()[0] == f"{limits.SPEC[path].maximum}"


# --- models: parsing never fails on a number, and clamps -----------------------------------------


@TASKS
@given(raw=SPECS[False])
def test_a_spec_within_the_bounds_is_read_as_it_is(raw: dict[str, Any]) -> None:
    parsed = AgentTaskSpec.model_validate(raw).to_api()
    for path in SPEC_NUMBERS:
        for before, after in zip(values_at(raw, path), values_at(parsed, path), strict=True):
            if before is not None:
                assert after == before


@TASKS
@given(raw=SPECS[True])
def test_a_spec_beyond_the_bounds_is_read_at_the_bounds(raw: dict[str, Any]) -> None:
    parsed = AgentTaskSpec.model_validate(raw).to_api()
    for path, bounds in limits.SPEC.items():
        for before, after in zip(values_at(raw, path), values_at(parsed, path), strict=True):
            assert after is None or bounds.minimum <= after <= bounds.maximum
            if before is not None:
                assert after == min(max(before, bounds.minimum), bounds.maximum)


@pytest.mark.parametrize("value", [float("nan"), "nan"])
def test_a_number_that_is_not_a_number_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match="not a number"):
        AgentTaskSpec.model_validate(
            {"input": "x", "model": {"name": "m"}, "retry": {"backoffFactor": value}}
        )


def test_the_reported_ttl_is_read_as_a_year() -> None:
    raw = {"input": "x", "model": {"name": "m"}, "ttlSecondsAfterFinished": 1099511627776}
    assert AgentTaskSpec.model_validate(raw).ttl_seconds_after_finished == limits.YEAR


# --- core: decide and on_failure ---------------------------------------------------------------


@pytest.mark.parametrize("beyond", [False, True], ids=["within-bounds", "beyond-bounds"])
def test_decide_never_raises(beyond: bool) -> None:
    @TASKS
    @given(state=states(beyond), now=TIMES[STATUS_TIME])
    def check(state: TaskState, now: datetime) -> None:
        check_action(state, decide(state, now))

    check()


@pytest.mark.parametrize("beyond", [False, True], ids=["within-bounds", "beyond-bounds"])
def test_on_failure_never_raises(beyond: bool) -> None:
    @TASKS
    @given(
        state=states(beyond),
        step=STEPS[STATUS_TIME],
        attempt=ATTEMPTS,
        failure=FAILURES,
        now=TIMES[STATUS_TIME],
        jitter=JITTERS,
    )
    def check(
        state: TaskState,
        step: Step,
        attempt: int,
        failure: Failure,
        now: datetime,
        jitter: float,
    ) -> None:
        action = on_failure(state, step, attempt, failure, now, jitter)
        assert isinstance(action, WriteStatus)
        check_patch(state, action.patch)

    check()


@TASKS
@given(
    state=states(beyond=True),
    now=TIMES[STATUS_TIME],
    failures=st.lists(st.tuples(FAILURES, JITTERS), min_size=1, max_size=6),
)
def test_the_loop_never_raises_on_statuses_it_writes(
    state: TaskState, now: datetime, failures: list[tuple[Failure, float]]
) -> None:
    """Run decide as the operator does — every attempt failing — and check each turn."""
    for failure, jitter in failures:
        action = decide(state, now)
        check_action(state, action)
        if isinstance(action, WriteStatus):
            state = status_.apply(state, action.patch)
        elif isinstance(action, Execute):
            state = status_.apply(state, action.intent)
            failed = on_failure(state, action.step, action.attempt, failure, now, jitter)
            state = check_patch(state, failed.patch)
        elif isinstance(action, Wait) and action.until is not None:
            now = max(now, action.until)
        else:
            return


# --- core: deadline and retry maths over the whole datetime range --------------------------------


@pytest.mark.parametrize("beyond", [False, True], ids=["within-bounds", "beyond-bounds"])
def test_deadline_maths_never_raises(beyond: bool) -> None:
    @TASKS
    @given(raw=SPECS[beyond], status=STATUSES[ANY_TIME], now=TIMES[ANY_TIME])
    def check(raw: dict[str, Any], status: AgentTaskStatus, now: datetime) -> None:
        spec = AgentTaskSpec.model_validate(raw)
        end = deadline(spec, status)
        if end is not None:
            assert status.start_time is not None
            assert end >= status.start_time
        assert isinstance(deadline_passed(spec, status, now), bool)
        timeout = attempt_timeout(spec, status, now)
        assert 0.0 <= timeout <= spec.step_timeout_seconds

    check()


@pytest.mark.parametrize("beyond", [False, True], ids=["within-bounds", "beyond-bounds"])
def test_retry_maths_never_raises(beyond: bool) -> None:
    @PROPERTY
    @given(
        raw=RETRIES[beyond],
        failed=ATTEMPTS | HUGE_INTS.map(lambda n: -n),
        jitter=JITTERS,
        retry_after=st.none() | st.floats(),
        now=TIMES[ANY_TIME],
    )
    def check(
        raw: dict[str, Any], failed: int, jitter: float, retry_after: float | None, now: datetime
    ) -> None:
        policy = RetryPolicy.model_validate(raw)
        delay = backoff_seconds(policy, failed, jitter)
        assert 0.0 <= delay <= policy.max_backoff_seconds
        at = next_retry_time(policy, failed, now, jitter, retry_after)
        assert at >= now
        longest = max(policy.max_backoff_seconds, MAX_RETRY_AFTER)
        assert at - now <= timedelta(seconds=longest)

    check()


@PROPERTY
@given(when=TIMES[ANY_TIME], seconds=st.floats() | st.integers(-(10**20), 10**20))
def test_later_saturates_instead_of_overflowing(when: datetime, seconds: float) -> None:
    at = later(when, seconds)
    assert at.tzinfo is when.tzinfo
    if seconds >= 0:
        assert at >= when
    elif seconds < 0:
        assert at <= when
    else:  # NaN
        assert at == when


@pytest.mark.parametrize("suspended", [0.0, 1e300, -1e300])
def test_a_deadline_past_the_end_of_the_calendar_is_its_last_moment(suspended: float) -> None:
    end = datetime.max.replace(tzinfo=UTC)
    spec = AgentTaskSpec.model_validate(
        {"input": "x", "model": {"name": "m"}, "activeDeadlineSeconds": 10**400}
    )
    start = end - timedelta(days=1)
    status = AgentTaskStatus(start_time=start, suspended_seconds=suspended)
    assert deadline(spec, status) == end  # a year after start (a negative suspension: none)
    assert not deadline_passed(spec, status, start)
    assert attempt_timeout(spec, status, start) == spec.step_timeout_seconds


# --- core: status helpers, conversation, errors ------------------------------------------------


@TASKS
@given(
    state=states(beyond=True),
    now=TIMES[STATUS_TIME],
    step=STEPS[STATUS_TIME],
    attempt=ATTEMPTS,
    text=st.text(max_size=200),
    succeeded=st.booleans(),
    result=st.none() | st.text(max_size=200),
)
def test_status_helpers_never_raise(
    state: TaskState,
    now: datetime,
    step: Step,
    attempt: int,
    text: str,
    succeeded: bool,
    result: str | None,
) -> None:
    patches = [
        status_.start(state, now),
        status_.intent(state, step, attempt, now),
        status_.commit(state, project(state.transcript)),
        status_.retry_later(attempt, text, now),
        status_.finish(state, now, succeeded=succeeded, reason="R", message=text, result=result),
        status_.suspend(state, now),
        status_.resume(state, now),
    ]
    for patch in patches:
        check_patch(state, patch)


@PROPERTY
@given(text=st.text(max_size=300), limit=st.integers(0, 400))
def test_clip_never_exceeds_its_limit(text: str, limit: int) -> None:
    clipped = status_.clip(text, limit)
    assert len(clipped) <= limit
    assert clipped == text or len(text) > limit


@TASKS
@given(state=states(beyond=True), step=STEPS[STATUS_TIME])
def test_conversation_never_raises(state: TaskState, step: Step) -> None:
    nxt = next_step(state.transcript)
    assert isinstance(nxt, Step | Answer)
    counted = project(state.transcript)
    assert counted.iterations + counted.tool_calls == len(state.transcript)
    find_tool_call(state.transcript, step)
    messages = request_messages(state.spec, state.transcript)
    assert len(messages) >= 1 + len(state.transcript)


@PROPERTY
@given(code=st.integers(-(2**63), 2**63))
def test_http_classification_never_raises(code: int) -> None:
    assert isinstance(is_transient_status(code), bool)
    assert llm_reason(code).startswith("Model")
