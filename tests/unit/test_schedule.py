"""Unit tests of ``core.schedule.decide`` with a fake clock: no server, no sleeping.

A small simulator plays the operator's part: it applies each action to an in-memory state (a
created task appears among the children; status merge patches are applied as the API server
would) and calls ``decide`` again until it waits, so that a test reads like a timeline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from agenttask_operator.core.actions import Event, Wait
from agenttask_operator.core.schedule import (
    MISSED_SCHEDULE,
    SKIPPED_FORBIDDEN,
    TASK_CREATED,
    TASK_REPLACED,
    Action,
    Create,
    Remove,
    Write,
    cursor,
    decide,
    history_to_prune,
)
from agenttask_operator.core.status import merge_patch, ts
from agenttask_operator.models.schedule import (
    SCHEDULE_LABEL,
    SCHEDULED_TIME_ANNOTATION,
    AgentTaskScheduleSpec,
    AgentTaskScheduleStatus,
    Child,
    ScheduleState,
)

REPO = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((REPO / "crds" / "agenttask.dev_agenttaskschedules.yaml").read_text())
SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
BERLIN = ZoneInfo("Europe/Berlin")
CREATED = datetime(2026, 11, 25, 9, 58, 30, tzinfo=UTC)
TEMPLATE = {
    "metadata": {"labels": {"team": "ops"}, "annotations": {"note": "nightly"}},
    "spec": {"input": "Report.", "model": {"name": "m"}, "maxIterations": 3},
}


def spec(**kw: Any) -> AgentTaskScheduleSpec:
    raw = {"schedule": "0 * * * *", "taskTemplate": TEMPLATE} | kw
    return AgentTaskScheduleSpec.model_validate(raw)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@dataclass
class Sim:
    """The schedule and its tasks in memory; ``run`` plays the operator until it waits."""

    spec: AgentTaskScheduleSpec
    tz: tzinfo | None = UTC
    created: datetime = CREATED
    status: dict[str, Any] = field(default_factory=dict)
    children: dict[str, Child] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    seconds: bool = False
    generation: int = 1

    @property
    def state(self) -> ScheduleState:
        return ScheduleState(
            namespace="ns",
            name="report",
            uid="uid-1",
            generation=self.generation,
            created=self.created,
            spec=self.spec,
            status=AgentTaskScheduleStatus.model_validate(self.status),
            children=tuple(self.children.values()),
        )

    def step(self, now: datetime) -> Action:
        action = decide(self.state, self.tz, now, self.seconds)
        self.actions.append(action)
        match action:
            case Create():
                assert action.name not in self.children, f"{action.name} created twice"
                meta = action.task["metadata"]
                tick = datetime.fromisoformat(meta["annotations"][SCHEDULED_TIME_ANNOTATION])
                self.children[action.name] = Child(
                    action.name, f"uid-{action.name}", tick, "Pending", created=now
                )
                self.events += action.events
            case Remove():
                for c in action.tasks:
                    self.children[c.name] = replace(c, deleting=True)
                self.events += action.events
            case Write():
                self.status = merge_patch(self.status, action.patch)
                self.events += action.events
        return action

    def run(self, now: datetime) -> Wait:
        """Act until ``decide`` says wait (at most 10 actions)."""
        for _ in range(10):
            action = self.step(now)
            if isinstance(action, Wait):
                return action
        raise AssertionError(f"no wait after 10 actions: {self.actions[-10:]}")

    def created_names(self) -> list[str]:
        return [a.name for a in self.actions if isinstance(a, Create)]

    def reasons(self) -> list[str]:
        return [e.reason for e in self.events]

    def finish(self, name: str, phase: str, at: datetime) -> None:
        self.children[name] = replace(self.children[name], phase=phase, completion_time=at)

    def gone(self) -> None:
        """The tasks being deleted are gone (kopf removed its finalizer)."""
        self.children = {n: c for n, c in self.children.items() if not c.deleting}


def minute(t: str) -> str:
    return str(int(at(t).timestamp()) // 60)


# --- creating tasks --------------------------------------------------------------------------


def test_before_the_first_tick_status_says_next_and_it_waits() -> None:
    sim = Sim(spec())
    wait = sim.run(at("2026-11-25T09:59:00Z"))
    assert wait.until == at("2026-11-25T10:00:00Z")
    assert sim.created_names() == []
    assert sim.status["nextScheduleTime"] == "2026-11-25T10:00:00Z"
    assert sim.status["activeCount"] == 0 and sim.status.get("active", []) == []
    (ready,) = sim.status["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "True", "Scheduled")
    assert ready["observedGeneration"] == 1
    # Nothing changes, nothing is written: the next turn only waits.
    assert isinstance(sim.step(at("2026-11-25T09:59:30Z")), Wait)


def test_at_the_tick_one_task_named_by_the_unix_minute() -> None:
    sim = Sim(spec())
    sim.run(at("2026-11-25T09:59:00Z"))
    wait = sim.run(at("2026-11-25T10:00:00.01Z"))
    name = f"report-{minute('2026-11-25T10:00:00Z')}"
    assert sim.created_names() == [name]
    create = next(a for a in sim.actions if isinstance(a, Create))
    meta = create.task["metadata"]
    assert meta["labels"] == {"team": "ops", SCHEDULE_LABEL: "report"}
    assert meta["annotations"] == {
        "note": "nightly",
        SCHEDULED_TIME_ANNOTATION: "2026-11-25T10:00:00Z",
    }
    assert meta["namespace"] == "ns"
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "agenttask.dev/v1alpha1",
            "kind": "AgentTaskSchedule",
            "name": "report",
            "uid": "uid-1",
            "controller": True,
        }
    ]
    assert create.task["spec"] == TEMPLATE["spec"] and create.task["spec"] is not TEMPLATE["spec"]
    assert create.task["kind"] == "AgentTask"
    assert sim.reasons() == [TASK_CREATED]
    assert sim.status["lastScheduleTime"] == "2026-11-25T10:00:00Z"
    assert sim.status["active"] == [
        {
            "apiVersion": "agenttask.dev/v1alpha1",
            "kind": "AgentTask",
            "name": name,
            "namespace": "ns",
            "uid": f"uid-{name}",
        }
    ]
    assert sim.status["activeCount"] == 1
    assert sim.status["nextScheduleTime"] == "2026-11-25T11:00:00Z"
    assert wait.until == at("2026-11-25T11:00:00Z")


def test_no_tick_at_or_before_creation() -> None:
    sim = Sim(spec(schedule="* * * * *"), created=at("2026-11-25T10:00:00Z"))
    sim.run(at("2026-11-25T10:00:00.5Z"))
    assert sim.created_names() == []
    sim.run(at("2026-11-25T10:01:00.1Z"))
    assert len(sim.created_names()) == 1


def test_a_crash_between_create_and_status_creates_nothing_twice() -> None:
    sim = Sim(spec())
    sim.run(at("2026-11-25T09:59:00Z"))
    first = sim.step(at("2026-11-25T10:00:00.01Z"))
    assert isinstance(first, Create)
    # The operator dies here: status still says nothing about 10:00. A restart decides again.
    assert "lastScheduleTime" not in sim.status
    sim.run(at("2026-11-25T10:00:07Z"))
    assert sim.created_names() == [first.name]
    assert sim.status["lastScheduleTime"] == "2026-11-25T10:00:00Z"
    # ...and a replica that sees an older status and the task: the same.
    stale = Sim(spec(), status={}, children=dict(sim.children))
    stale.run(at("2026-11-25T10:00:08Z"))
    assert stale.created_names() == []


def test_status_said_handled_but_the_task_is_gone_nothing_is_created_again() -> None:
    sim = Sim(spec(), status={"lastScheduleTime": "2026-11-25T10:00:00Z"})
    sim.run(at("2026-11-25T10:30:00Z"))
    assert sim.created_names() == []


def test_allow_creates_one_per_tick_while_others_run() -> None:
    sim = Sim(spec(schedule="*/10 * * * *"))
    for t in ("10:00:00.1", "10:10:00.1", "10:20:00.1"):
        sim.run(at(f"2026-11-25T{t}Z"))
    assert len(sim.created_names()) == 3
    assert sim.status["activeCount"] == 3


# --- missed ticks --------------------------------------------------------------------------------


def test_operator_down_for_hours_runs_only_the_latest_and_says_how_many_were_missed() -> None:
    sim = Sim(spec(), status={"lastScheduleTime": "2026-11-25T10:00:00Z"})
    sim.run(at("2026-11-25T15:10:00Z"))  # ticks 11:00 .. 15:00 passed: four missed, one runs
    assert sim.created_names() == [f"report-{minute('2026-11-25T15:00:00Z')}"]
    missed = [e for e in sim.events if e.reason == MISSED_SCHEDULE]
    assert len(missed) == 1 and missed[0].type == "Warning"
    assert "4 earlier ticks since 2026-11-25T10:00:00Z" in missed[0].message
    assert "2026-11-25T15:00:00Z" in missed[0].message
    assert sim.reasons() == [MISSED_SCHEDULE, TASK_CREATED]


def test_within_the_starting_deadline_the_latest_still_runs() -> None:
    sim = Sim(
        spec(startingDeadlineSeconds=900), status={"lastScheduleTime": "2026-11-25T10:00:00Z"}
    )
    sim.run(at("2026-11-25T11:14:00Z"))  # 14 minutes late, deadline 15
    assert len(sim.created_names()) == 1
    assert MISSED_SCHEDULE not in sim.reasons()  # nothing before it was missed


def test_past_the_starting_deadline_nothing_runs_and_it_is_recorded() -> None:
    sim = Sim(
        spec(startingDeadlineSeconds=600), status={"lastScheduleTime": "2026-11-25T10:00:00Z"}
    )
    wait = sim.run(at("2026-11-25T13:20:00Z"))
    assert sim.created_names() == []
    assert sim.status["lastSkippedTime"] == "2026-11-25T13:00:00Z"
    (event,) = sim.events
    assert event.reason == MISSED_SCHEDULE
    assert "tick 2026-11-25T13:00:00Z missed: 1200s late" in event.message
    assert "startingDeadlineSeconds (600)" in event.message
    assert "2 earlier ticks" in event.message
    assert wait.until == at("2026-11-25T14:00:00Z")
    # Decided once: the next wake-up (still before 14:00) does not report it again.
    sim.run(at("2026-11-25T13:30:00Z"))
    assert len(sim.events) == 1
    sim.run(at("2026-11-25T14:00:01Z"))
    assert len(sim.created_names()) == 1


def test_too_many_missed_ticks_an_event_not_a_hang() -> None:
    sim = Sim(
        spec(schedule="* * * * *"),
        created=at("2026-10-01T00:00:00Z"),
        status={"lastScheduleTime": "2026-11-01T00:00:00Z"},
    )
    started = time.monotonic()
    sim.run(at("2026-11-25T10:00:30Z"))  # 35,000 minutes later
    assert time.monotonic() - started < 2.0
    assert sim.created_names() == [f"report-{minute('2026-11-25T10:00:00Z')}"]
    missed = next(e for e in sim.events if e.reason == MISSED_SCHEDULE)
    assert "more than 100 ticks since 2026-11-01T00:00:00Z" in missed.message
    assert "startingDeadlineSeconds" in missed.message


def test_a_new_schedule_created_between_ticks_misses_nothing() -> None:
    sim = Sim(spec(), created=at("2026-11-25T10:30:00Z"))
    sim.run(at("2026-11-25T11:00:00.2Z"))
    assert MISSED_SCHEDULE not in sim.reasons()
    assert len(sim.created_names()) == 1


# --- concurrency policies ----------------------------------------------------------------------


def test_forbid_with_a_long_running_task_skips_ticks_until_it_ends() -> None:
    sim = Sim(spec(concurrencyPolicy="Forbid"))
    sim.run(at("2026-11-25T10:00:00.1Z"))
    (first,) = sim.created_names()
    for hour in (11, 12):
        sim.run(at(f"2026-11-25T{hour}:00:00.1Z"))
        assert sim.created_names() == [first]
        assert sim.status["lastSkippedTime"] == f"2026-11-25T{hour}:00:00Z"
    skipped = [e for e in sim.events if e.reason == SKIPPED_FORBIDDEN]
    assert len(skipped) == 2
    assert first in skipped[0].message and "2026-11-25T11:00:00Z" in skipped[0].message
    # The task ends at 12:30: the 12:00 tick is not run late, the 13:00 one runs.
    sim.finish(first, "Succeeded", at("2026-11-25T12:30:00Z"))
    sim.run(at("2026-11-25T12:30:00.5Z"))
    assert sim.created_names() == [first]
    assert sim.status["activeCount"] == 0
    assert sim.status["lastSuccessfulTime"] == "2026-11-25T12:30:00Z"
    sim.run(at("2026-11-25T13:00:00.1Z"))
    assert len(sim.created_names()) == 2
    assert sim.status["lastScheduleTime"] == "2026-11-25T13:00:00Z"


def test_replace_deletes_the_running_task_then_creates_the_next() -> None:
    sim = Sim(spec(concurrencyPolicy="Replace"))
    sim.run(at("2026-11-25T10:00:00.1Z"))
    (first,) = sim.created_names()
    action = sim.step(at("2026-11-25T11:00:00.1Z"))
    assert isinstance(action, Remove)
    assert [c.name for c in action.tasks] == [first]
    assert [e.reason for e in action.events] == [TASK_REPLACED]
    assert first in action.events[0].message and "Replace" in action.events[0].message
    # The deleted task is on its way out (its finalizer lets it stop): the new one is created.
    sim.run(at("2026-11-25T11:00:00.2Z"))
    assert len(sim.created_names()) == 2
    sim.gone()
    sim.run(at("2026-11-25T11:00:01Z"))
    assert sim.status["activeCount"] == 1
    assert sim.status["active"][0]["name"] == sim.created_names()[1]


def test_replace_or_forbid_with_nothing_running_just_create() -> None:
    for policy in ("Replace", "Forbid"):
        sim = Sim(spec(concurrencyPolicy=policy))
        sim.run(at("2026-11-25T10:00:00.1Z"))
        sim.finish(sim.created_names()[0], "Failed", at("2026-11-25T10:20:00Z"))
        sim.run(at("2026-11-25T11:00:00.1Z"))
        assert len(sim.created_names()) == 2, policy
        assert TASK_REPLACED not in sim.reasons() and SKIPPED_FORBIDDEN not in sim.reasons()


# --- suspend --------------------------------------------------------------------------------


def test_suspended_ticks_are_skipped_quietly_and_not_run_on_resume() -> None:
    sim = Sim(spec(suspend=True))
    wait = sim.run(at("2026-11-25T09:59:00Z"))
    ready = sim.status["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("False", "Suspended")
    assert "nextScheduleTime" not in sim.status
    assert wait.until == at("2026-11-25T10:00:00Z")  # it still wakes, to record the tick
    sim.run(at("2026-11-25T10:00:00.1Z"))
    sim.run(at("2026-11-25T11:00:00.1Z"))
    assert sim.created_names() == [] and sim.events == []
    assert sim.status["lastSkippedTime"] == "2026-11-25T11:00:00Z"
    # Resumed at 11:40: 11:00 does not run late; 12:00 runs.
    sim.spec, sim.generation = spec(suspend=False), 2
    sim.run(at("2026-11-25T11:40:00Z"))
    assert sim.created_names() == []
    ready = sim.status["conditions"][0]
    assert (ready["status"], ready["reason"], ready["observedGeneration"]) == (
        "True",
        "Scheduled",
        2,
    )
    assert sim.status["nextScheduleTime"] == "2026-11-25T12:00:00Z"
    sim.run(at("2026-11-25T12:00:00.1Z"))
    assert len(sim.created_names()) == 1


# --- time zones and calendars ------------------------------------------------------------------


def test_berlin_nightly_across_both_dst_changes() -> None:
    sim = Sim(spec(schedule="30 2 * * *", timeZone="Europe/Berlin"), tz=BERLIN)
    sim.created = at("2026-03-27T12:00:00Z")
    now = at("2026-03-27T12:00:00Z")
    for _ in range(3):
        wait = sim.run(now)
        assert wait.until is not None
        now = wait.until + timedelta(milliseconds=10)
    sim.run(now)
    ticks = [sim.children[n].scheduled_time for n in sim.created_names()]
    assert [t.astimezone(BERLIN).isoformat() for t in ticks if t] == [
        "2026-03-28T02:30:00+01:00",
        "2026-03-30T02:30:00+02:00",  # none on the 29th: 02:30 did not exist
        "2026-03-31T02:30:00+02:00",
    ]
    autumn = Sim(
        spec(schedule="30 2 * * *", timeZone="Europe/Berlin"),
        tz=BERLIN,
        created=at("2026-10-24T12:00:00Z"),
    )
    now = at("2026-10-24T12:00:00Z")
    for _ in range(4):
        wait = autumn.run(now)
        assert wait.until is not None
        now = wait.until + timedelta(milliseconds=10)
    names = autumn.created_names()
    assert len(names) == 3 and len(set(names)) == 3  # 02:30 twice on the 25th: two tasks
    assert [autumn.children[n].scheduled_time for n in names] == [
        at("2026-10-25T02:30:00+02:00"),
        at("2026-10-25T02:30:00+01:00"),
        at("2026-10-26T02:30:00+01:00"),
    ]


def test_month_end_schedule() -> None:
    sim = Sim(spec(schedule="0 6 31 * *"), created=at("2026-01-01T00:00:00Z"))
    now = at("2026-01-01T00:00:00Z")
    for _ in range(3):
        wait = sim.run(now)
        assert wait.until is not None
        now = wait.until + timedelta(seconds=1)
    assert [sim.children[n].scheduled_time for n in sim.created_names()] == [
        at("2026-01-31T06:00:00Z"),
        at("2026-03-31T06:00:00Z"),
    ]


def test_seconds_mode_names_tasks_by_unix_second() -> None:
    sim = Sim(spec(schedule="*/5 * * * * *"), seconds=True, created=at("2026-11-25T10:00:00Z"))
    sim.run(at("2026-11-25T10:00:05.01Z"))
    sim.run(at("2026-11-25T10:00:10.01Z"))
    assert sim.created_names() == [
        f"report-{int(at('2026-11-25T10:00:05Z').timestamp())}",
        f"report-{int(at('2026-11-25T10:00:10Z').timestamp())}",
    ]


# --- invalid specs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule_spec", "tz", "reason", "words"),
    [
        ({"schedule": "61 * * * *"}, UTC, "InvalidSchedule", "Bad minute"),
        ({"schedule": "*/5 * * * * *"}, UTC, "InvalidSchedule", "AGENTTASK_SCHEDULE_SECONDS"),
        ({"timeZone": "Mars/Olympus_Mons"}, None, "InvalidTimeZone", "Mars/Olympus_Mons"),
    ],
)
def test_an_invalid_spec_is_reported_once_and_creates_nothing(
    schedule_spec: dict[str, Any], tz: tzinfo | None, reason: str, words: str
) -> None:
    sim = Sim(spec(**schedule_spec), tz=tz)
    wait = sim.run(at("2026-11-25T12:00:00Z"))
    assert wait.until is None  # until the spec changes
    ready = sim.status["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("False", reason)
    assert words in ready["message"]
    assert [(e.type, e.reason) for e in sim.events] == [("Warning", reason)]
    sim.run(at("2026-11-25T13:00:00Z"))
    assert len(sim.events) == 1 and sim.created_names() == []
    # Fixed at 13:30: Ready again. As in CronJob, ticks of the (new) expression since the last
    # handled one count as missed: the latest, 13:00, runs now; then 14:00 on time.
    sim.spec, sim.tz, sim.generation = spec(), UTC, 2
    sim.run(at("2026-11-25T13:30:00Z"))
    assert sim.status["conditions"][0]["reason"] == "Scheduled"
    assert sim.status["lastScheduleTime"] == "2026-11-25T13:00:00Z"
    sim.run(at("2026-11-25T14:00:00.1Z"))
    assert len(sim.created_names()) == 2


# --- history ---------------------------------------------------------------------------------


def test_history_limits_delete_the_oldest_finished_tasks() -> None:
    sim = Sim(
        spec(schedule="*/10 * * * *", successfulTasksHistoryLimit=2, failedTasksHistoryLimit=1)
    )
    phases = ["Succeeded", "Failed", "Succeeded", "Failed", "Succeeded", "Succeeded", None]
    now = at("2026-11-25T10:00:00.1Z")
    for phase in phases:
        sim.run(now)
        name = sim.created_names()[-1]
        if phase:
            sim.finish(name, phase, now + timedelta(minutes=5))
        now += timedelta(minutes=10)
    sim.run(now - timedelta(minutes=9))
    names = sim.created_names()
    deleting = sorted(c.name for c in sim.children.values() if c.deleting)
    assert deleting == sorted([names[0], names[1], names[2]])  # 2 older successes, 1 failure
    kept = {c.name for c in sim.children.values() if not c.deleting}
    assert kept == {names[3], names[4], names[5], names[6]}
    assert sim.children[names[6]].phase == "Pending"  # running tasks are never pruned
    assert sim.status["lastSuccessfulTime"] == ts(sim.children[names[5]].completion_time or now)
    sim.gone()  # deleted: lastSuccessfulTime stays
    sim.run(now)
    assert sim.status["lastSuccessfulTime"] == "2026-11-25T10:55:00Z"


def test_history_limit_zero_keeps_nothing_finished() -> None:
    sim = Sim(spec(successfulTasksHistoryLimit=0))
    sim.run(at("2026-11-25T10:00:00.1Z"))
    (name,) = sim.created_names()
    sim.finish(name, "Succeeded", at("2026-11-25T10:03:00Z"))
    assert [c.name for c in history_to_prune(sim.state)] == [name]


# --- status ------------------------------------------------------------------------------------


def declared(schema: dict[str, Any], value: Any, path: str = "status") -> None:
    """Every field of ``value`` is declared in ``schema`` (else the API server prunes it)."""
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for k, v in value.items():
            assert k in props, f"{path}.{k} is not declared in the CRD"
            if v is not None:
                declared(props[k], v, f"{path}.{k}")
    elif isinstance(value, list):
        for item in value:
            declared(schema["items"], item, f"{path}[]")


def test_every_status_field_written_is_declared_in_the_crd() -> None:
    sim = Sim(spec(concurrencyPolicy="Forbid", startingDeadlineSeconds=60))
    sim.run(at("2026-11-25T10:00:00.1Z"))
    sim.run(at("2026-11-25T11:00:00.1Z"))  # skipped (Forbid)
    sim.finish(sim.created_names()[0], "Succeeded", at("2026-11-25T11:10:00Z"))
    sim.run(at("2026-11-25T11:10:01Z"))
    assert {"lastSkippedTime", "lastSuccessfulTime", "lastScheduleTime"} <= sim.status.keys()
    for action in sim.actions:
        if isinstance(action, Write):
            declared(SCHEMA["properties"]["status"], action.patch)


def test_cursor_is_the_newest_handled_tick() -> None:
    sim = Sim(spec(), status={"lastSkippedTime": "2026-11-25T12:00:00Z"})
    sim.children["x"] = Child("x", "u", at("2026-11-25T13:00:00Z"), "Running")
    assert cursor(sim.state) == at("2026-11-25T13:00:00Z")
    assert cursor(Sim(spec()).state) == CREATED
