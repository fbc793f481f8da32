"""``decide(state, tz, now)``: the next action for an AgentTaskSchedule. Level-triggered.

Every wake-up (a tick, a change of the schedule, a change of one of its tasks) reads the
schedule and the tasks it created, and calls ``decide``; restarts need nothing else. Times
live in status as absolute timestamps. A tick ``T`` has been *handled* once a task exists for
it or status says so: ``lastScheduleTime`` (its task's tick) or ``lastSkippedTime`` (a tick
that created none) is at or after it. ``cursor`` is the newest handled tick, or the creation
time: ticks at or before it never run.

1. ``spec.timeZone`` cannot be loaded, or ``spec.schedule`` cannot be read → ``Ready=False``
   (``InvalidTimeZone``/``InvalidSchedule``, a Warning Event when that starts); nothing runs.
2. The due tick ``T`` (the newest tick at or before ``now``), if after ``cursor``:

   a. ``spec.suspend`` → skipped (``lastSkippedTime``), quietly: ticks of a suspended schedule
      never run, not even after it is resumed;
   b. ticks between ``cursor`` and ``T`` were missed (the operator was not running): they are
      never run, one ``MissedSchedule`` Event says how many ("more than 100" past 100, without
      counting on); ``T`` itself later than ``startingDeadlineSeconds`` → skipped too, in that
      same Event;
   c. ``Forbid`` and a task of this schedule has not ended → skipped, ``SkippedForbidden``;
   d. ``Replace`` and tasks have not ended → delete them (``TaskReplaced`` each; their
      finalizer lets each stop at once), then decide again;
   e. otherwise create its task, ``<schedule>-<Unix minute of T>`` (``TaskCreated``). The name
      is the same whoever creates it and however often: a restart, a retry or a second replica
      meets the task that exists (409) and never makes a second one for ``T``.
3. Status as it should be (last schedule, last success, next tick, active tasks, ``Ready``)
   differs from what is stored → write it.
4. Finished tasks beyond ``successfulTasksHistoryLimit``/``failedTasksHistoryLimit`` (oldest
   first) → delete them; their transcripts go with them (owner references).
5. Otherwise wait for the next tick (or a change).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

from agenttask_operator.core.actions import Event, Wait
from agenttask_operator.core.cron import Cron, CronError, parse, tick_suffix
from agenttask_operator.core.status import ts
from agenttask_operator.models import Condition
from agenttask_operator.models.schedule import (
    KIND,
    READY,
    SCHEDULE_LABEL,
    SCHEDULED_TIME_ANNOTATION,
    Child,
    ScheduleState,
    TaskRef,
)

API_VERSION = "agenttask.dev/v1alpha1"
MISSED_LIMIT = 100  # missed ticks counted at most, like CronJob's 100
SCHEDULED, SUSPENDED = "Scheduled", "Suspended"
INVALID_SCHEDULE, INVALID_TIME_ZONE = "InvalidSchedule", "InvalidTimeZone"
TASK_CREATED, TASK_REPLACED = "TaskCreated", "TaskReplaced"
MISSED_SCHEDULE, SKIPPED_FORBIDDEN = "MissedSchedule", "SkippedForbidden"


@dataclass(frozen=True)
class Problem:
    """Why the schedule cannot fire: a CamelCase reason and a message for the user."""

    reason: str
    message: str


@dataclass(frozen=True)
class Create:
    """Create ``task`` (an AgentTask manifest) for ``tick``, then record ``events``."""

    task: dict[str, Any]
    tick: datetime
    events: tuple[Event, ...]
    why: str

    @property
    def name(self) -> str:
        """The task's name."""
        return str(self.task["metadata"]["name"])


@dataclass(frozen=True)
class Remove:
    """Delete these tasks (each only if it is still the one with that uid)."""

    tasks: tuple[Child, ...]
    events: tuple[Event, ...]
    why: str


@dataclass(frozen=True)
class Write:
    """Merge-patch ``patch`` into ``/status``, then record ``events``."""

    patch: dict[str, Any]
    events: tuple[Event, ...]
    why: str


Action = Create | Remove | Write | Wait


def when(state: ScheduleState, tz: tzinfo | None, seconds: bool = False) -> Cron | Problem:
    """The schedule's ticks, or why there are none. ``tz`` None: ``spec.timeZone`` could not
    be loaded; ``seconds``: a leading seconds field is allowed (tests only).
    """  # noqa: D205
    if tz is None:
        zone = state.spec.time_zone
        return Problem(INVALID_TIME_ZONE, f"spec.timeZone {zone!r} is not a known IANA time zone")
    try:
        return parse(state.spec.schedule, tz, seconds=seconds)
    except CronError as e:
        return Problem(INVALID_SCHEDULE, f"spec.schedule: {e}")


def decide(state: ScheduleState, tz: tzinfo | None, now: datetime, seconds: bool = False) -> Action:
    """The next action; see the module's docstring for the whole machine."""
    cron = when(state, tz, seconds)
    if isinstance(cron, Cron):
        due = _due(state, cron, now)
        if due is not None:
            return due
    patch = status_patch(state, cron, now)
    if patch is not None:
        return Write(patch, _condition_events(state, cron), "status is out of date")
    stale = history_to_prune(state)
    if stale:
        names = ", ".join(c.name for c in stale)
        return Remove(stale, (), f"beyond the history limits: {names}")
    if isinstance(cron, Problem):
        return Wait(None, f"{cron.reason}: wait for a change of the spec")
    nxt = cron.next_after(now)
    return Wait(nxt, f"next tick at {ts(nxt)}" if nxt else "no tick within 50 years")


# --- 2. the due tick ---------------------------------------------------------------------------


def cursor(state: ScheduleState) -> datetime:
    """The newest handled tick, or the creation time: no tick at or before it runs again."""
    times = [state.created, *_handled(state)]
    return max(times)


def _handled(state: ScheduleState) -> list[datetime]:
    st = state.status
    ticks = [c.scheduled_time for c in state.children if c.scheduled_time is not None]
    return [t for t in (st.last_schedule_time, st.last_skipped_time, *ticks) if t is not None]


def active(state: ScheduleState) -> list[Child]:
    """Tasks of this schedule that have not ended (and are not being deleted), oldest first."""
    return sorted((c for c in state.children if not c.finished and not c.deleting), key=_age)


def _due(state: ScheduleState, cron: Cron, now: datetime) -> Action | None:
    """What to do about the due tick, if there is one that has not been handled."""
    since = cursor(state)
    tick = cron.last_at_or_before(now)
    if tick is None or tick <= since:
        return None
    spec = state.spec
    if spec.suspend:
        return _skip(state, cron, now, tick, (), "suspended")
    events: list[Event] = []
    missed = cron.count_between(since, tick, MISSED_LIMIT)
    late = (now - tick).total_seconds()
    deadline = spec.starting_deadline_seconds
    if deadline is not None and late > deadline:
        message = (
            f"tick {ts(tick)} missed: {late:.0f}s late, past startingDeadlineSeconds "
            f"({deadline}); it does not run"
        )
        if missed:
            message += f"; {_missed(missed, since)} did not run either"
        event = Event("Warning", MISSED_SCHEDULE, message)
        return _skip(state, cron, now, tick, (event,), "past its starting deadline")
    if missed:
        message = f"{_missed(missed, since)} did not run; only the latest, {ts(tick)}, does"
        events.append(Event("Warning", MISSED_SCHEDULE, message))
    running = active(state)
    if running and spec.concurrency_policy == "Forbid":
        names = ", ".join(c.name for c in running)
        message = f"tick {ts(tick)} skipped: {names} still running (concurrencyPolicy Forbid)"
        events.append(Event("Normal", SKIPPED_FORBIDDEN, message))
        return _skip(state, cron, now, tick, tuple(events), "a task is still running (Forbid)")
    if running and spec.concurrency_policy == "Replace":
        replaced = tuple(
            Event(
                "Normal",
                TASK_REPLACED,
                f"deleted {c.name}: still running at tick {ts(tick)} (concurrencyPolicy Replace)",
            )
            for c in running
        )
        return Remove(tuple(running), replaced, f"replace at tick {ts(tick)}")
    task = task_for(state, cron, tick)
    name = task["metadata"]["name"]
    events.append(Event("Normal", TASK_CREATED, f"created {name} for tick {ts(tick)}"))
    return Create(task, tick, tuple(events), f"tick {ts(tick)}")


def _missed(count: int, since: datetime) -> str:
    if count > MISSED_LIMIT:
        return (
            f"more than {MISSED_LIMIT} ticks since {ts(since)} (check the clock, or set "
            "startingDeadlineSeconds)"
        )
    return f"{count} earlier tick{'s' if count > 1 else ''} since {ts(since)}"


def _skip(
    state: ScheduleState,
    cron: Cron,
    now: datetime,
    tick: datetime,
    events: tuple[Event, ...],
    why: str,
) -> Write:
    """Record ``tick`` as handled without a task (with the rest of status, if out of date)."""
    patch = status_patch(state, cron, now, skipped=tick) or {}
    return Write(patch | {"lastSkippedTime": ts(tick)}, events, f"tick {ts(tick)}: {why}")


def task_name(state: ScheduleState, cron: Cron, tick: datetime) -> str:
    """``<schedule>-<Unix minute of the tick>``: the same for every attempt at that tick."""
    return f"{state.name}-{tick_suffix(tick, cron.seconds)}"


def task_for(state: ScheduleState, cron: Cron, tick: datetime) -> dict[str, Any]:
    """The AgentTask for ``tick``: the template's spec as written, its labels and annotations
    plus the schedule's label and the tick, owned by the schedule (deleted with it).
    """  # noqa: D205
    template = state.spec.task_template
    return {
        "apiVersion": API_VERSION,
        "kind": "AgentTask",
        "metadata": {
            "name": task_name(state, cron, tick),
            "namespace": state.namespace,
            "labels": template.metadata.labels | {SCHEDULE_LABEL: state.name},
            "annotations": template.metadata.annotations | {SCHEDULED_TIME_ANNOTATION: ts(tick)},
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "name": state.name,
                    "uid": state.uid,
                    "controller": True,
                }
            ],
        },
        "spec": copy.deepcopy(template.spec),
    }


# --- 3. status ---------------------------------------------------------------------------------


def _latest(*times: datetime | None) -> datetime | None:
    found = [t for t in times if t is not None]
    return max(found) if found else None


def _age(c: Child) -> tuple[datetime, str]:
    """Order of ticks: a task's tick, else its creation (unknown: first)."""
    return (c.scheduled_time or c.created or datetime.min.replace(tzinfo=UTC), c.name)


def ready(state: ScheduleState, cron: Cron | Problem) -> tuple[str, str, str]:
    """The ``Ready`` condition's status, reason and message."""
    if isinstance(cron, Problem):
        return "False", cron.reason, cron.message
    zone = state.spec.time_zone or "UTC"
    if state.spec.suspend:
        return "False", SUSPENDED, "suspended (spec.suspend): ticks are skipped until resumed"
    return "True", SCHEDULED, f"{state.spec.schedule!r} in {zone}"


def desired_status(
    state: ScheduleState, cron: Cron | Problem, now: datetime, skipped: datetime | None = None
) -> dict[str, Any]:
    """Every status field the operator owns, as it should be now (None: absent)."""
    st = state.status
    ticks = [c.scheduled_time for c in state.children if c.scheduled_time is not None]
    successes = [
        c.completion_time for c in state.children if c.phase == "Succeeded" and c.completion_time
    ]
    running = active(state)
    nxt = None
    if isinstance(cron, Cron) and not state.spec.suspend:
        nxt = cron.next_after(now)
    status, reason, message = ready(state, cron)
    previous = st.condition(READY)
    since = (
        previous.last_transition_time if previous and previous.status == status else now
    ).replace(microsecond=0)
    cond = Condition(
        type=READY,
        status="True" if status == "True" else "False",
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=state.generation,
    )
    others = [c for c in st.conditions if c.type != READY]
    return {
        "observedGeneration": state.generation,
        "lastScheduleTime": _ts(_latest(st.last_schedule_time, *ticks)),
        "lastSuccessfulTime": _ts(_latest(st.last_successful_time, *successes)),
        "lastSkippedTime": _ts(_latest(st.last_skipped_time, skipped)),
        "nextScheduleTime": _ts(nxt),
        "active": [
            TaskRef(name=c.name, namespace=state.namespace, uid=c.uid).to_api() for c in running
        ],
        "activeCount": len(running),
        "conditions": [_condition(c) for c in [*others, cond]],
    }


def _ts(t: datetime | None) -> str | None:
    return ts(t) if t is not None else None


def _condition(c: Condition) -> dict[str, Any]:
    return c.to_api() | {"lastTransitionTime": ts(c.last_transition_time)}


def status_patch(
    state: ScheduleState, cron: Cron | Problem, now: datetime, skipped: datetime | None = None
) -> dict[str, Any] | None:
    """The merge patch from stored status to :func:`desired_status`, or None if they agree."""
    stored = _stored(state)
    want = desired_status(state, cron, now, skipped)
    patch = {k: v for k, v in want.items() if stored.get(k) != v}
    return patch or None


def _stored(state: ScheduleState) -> dict[str, Any]:
    """Stored status in the form :func:`desired_status` writes it (times to the second)."""
    st = state.status
    return {
        "observedGeneration": st.observed_generation,
        "lastScheduleTime": _ts(st.last_schedule_time),
        "lastSuccessfulTime": _ts(st.last_successful_time),
        "lastSkippedTime": _ts(st.last_skipped_time),
        "nextScheduleTime": _ts(st.next_schedule_time),
        "active": [a.to_api() for a in st.active],
        "activeCount": st.active_count,
        "conditions": [_condition(c) for c in st.conditions],
    }


def _condition_events(state: ScheduleState, cron: Cron | Problem) -> tuple[Event, ...]:
    """A Warning Event when the schedule becomes unusable (or its problem changes)."""
    if not isinstance(cron, Problem):
        return ()
    previous = state.status.condition(READY)
    if (
        previous is not None
        and previous.reason == cron.reason
        and previous.message == (cron.message)
    ):
        return ()
    return (Event("Warning", cron.reason, cron.message),)


# --- 4. history --------------------------------------------------------------------------------


def history_to_prune(state: ScheduleState) -> tuple[Child, ...]:
    """Finished tasks beyond the history limits, oldest first."""
    spec = state.spec
    stale: list[Child] = []
    for phase, keep in (
        ("Succeeded", spec.successful_tasks_history_limit),
        ("Failed", spec.failed_tasks_history_limit),
    ):
        done = sorted((c for c in state.children if c.phase == phase and not c.deleting), key=_age)
        stale += done[: max(len(done) - keep, 0)]
    return tuple(sorted(stale, key=_age))
