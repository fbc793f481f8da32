"""Unit tests of what the schedule's loop reads: its tasks, time zones, the test-only flag."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from agenttask_operator.effects import timezones
from agenttask_operator.handlers.schedule import seconds_allowed, to_child


def task(**meta: Any) -> dict[str, Any]:
    base = {
        "name": "report-29926700",
        "uid": "t-1",
        "creationTimestamp": "2026-11-25T10:20:01Z",
        "annotations": {"agenttask.dev/scheduled-time": "2026-11-25T10:20:00Z"},
        "ownerReferences": [{"kind": "AgentTaskSchedule", "name": "report", "uid": "s-1"}],
    }
    return {
        "metadata": base | meta,
        "status": {"phase": "Succeeded", "completionTime": "2026-11-25T10:21:00Z"},
    }


def test_a_task_of_the_schedule() -> None:
    child = to_child(task(), "s-1")
    assert child is not None
    assert child.scheduled_time == datetime(2026, 11, 25, 10, 20, tzinfo=UTC)
    assert child.completion_time == datetime(2026, 11, 25, 10, 21, tzinfo=UTC)
    assert (child.name, child.uid, child.phase, child.finished, child.deleting) == (
        "report-29926700",
        "t-1",
        "Succeeded",
        True,
        False,
    )


def test_a_task_of_another_schedule_of_that_name_is_not_ours() -> None:
    assert to_child(task(), "s-2") is None  # an earlier schedule's task, not collected yet
    assert to_child(task(ownerReferences=[]), "s-1") is None


def test_unreadable_tick_and_deletion() -> None:
    child = to_child(
        task(annotations={"agenttask.dev/scheduled-time": "yesterday"}, deletionTimestamp="x"),
        "s-1",
    )
    assert child is not None and child.scheduled_time is None and child.deleting


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        (None, True),
        ("", True),
        ("UTC", True),
        ("Europe/Berlin", True),
        ("America/Argentina/Buenos_Aires", True),
        ("Etc/GMT+5", True),
        ("Mars/Olympus", False),
        ("europe/berlin", False),
        ("../../etc/passwd", False),
        ("/etc/localtime", False),
        ("localtime", False),
        ("Factory", False),
    ],
)
def test_time_zones(name: str | None, ok: bool) -> None:
    zone = timezones.load(name)
    assert (zone is not None) == ok
    if ok and name:
        assert isinstance(zone, ZoneInfo) and zone.key == name


def test_seconds_flag_is_off_unless_set() -> None:
    assert not seconds_allowed({})
    assert not seconds_allowed({"AGENTTASK_SCHEDULE_SECONDS": "0"})
    assert not seconds_allowed({"AGENTTASK_SCHEDULE_SECONDS": ""})
    assert seconds_allowed({"AGENTTASK_SCHEDULE_SECONDS": "1"})
    assert seconds_allowed({"AGENTTASK_SCHEDULE_SECONDS": "true"})
