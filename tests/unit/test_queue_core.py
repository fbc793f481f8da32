"""core.queue: slots, order, admission, release, and the Queued status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agenttask_operator.core import queue
from agenttask_operator.core.queue import Seen, Slot
from agenttask_operator.models import AgentTaskSpec, AgentTaskStatus, ModelSpec, TaskState

NOW = datetime(2026, 11, 26, 1, 0, 0, tzinfo=UTC)
MODEL = Slot("agenttask.dev/slots.model.gpt", 2, "AgentModel gpt's maxConcurrentTasks=2", "gpt")
NS = Slot("agenttask.dev/slots.namespace", 3, "the namespace limit")


def seen(
    n: int, ref: str | None = "gpt", ns: str = "a", waiting: bool = True, ended: bool = False
) -> Seen:
    return Seen(f"uid-{n}", ns, f"t{n}", f"2026-11-26T00:00:{n:02d}Z", ref, waiting, ended)


def test_slots_for() -> None:
    assert queue.slots_for(None, None, None) == ()
    assert queue.slots_for("gpt", None, None) == ()  # an AgentModel without a limit
    (m,) = queue.slots_for("gpt", 2, None)
    assert (m.key, m.limit, m.model_ref) == ("agenttask.dev/slots.model.gpt", 2, "gpt")
    m, n = queue.slots_for("gpt", 2, 5)
    assert (n.key, n.limit, n.model_ref) == ("agenttask.dev/slots.namespace", 5, None)
    assert [s.key for s in queue.slots_for(None, 2, 5)] == ["agenttask.dev/slots.namespace"]
    long = "m" * 60  # an annotation's name is at most 63 characters: a digest then
    (k,) = queue.slots_for(long, 1, None)
    assert k.key.startswith("agenttask.dev/slots.model.h-") and len(k.key.split("/")[1]) <= 63


def test_seen_reads_a_watched_object() -> None:
    obj = {
        "metadata": {
            "uid": "u",
            "name": "t",
            "namespace": "a",
            "creationTimestamp": "2026-11-26T00:00:01Z",
        },
        "spec": {"model": {"modelRef": {"name": "gpt"}}},
        "status": {},
    }
    assert queue.seen(obj) == Seen("u", "a", "t", "2026-11-26T00:00:01Z", "gpt", True, False)
    started = obj | {"status": {"startTime": "x", "phase": "Running"}}
    assert queue.seen(started) == Seen("u", "a", "t", "2026-11-26T00:00:01Z", "gpt", False, False)
    done = obj | {"status": {"startTime": "x", "phase": "Failed"}}
    assert queue.seen(done).ended  # type: ignore[union-attr]
    suspended = obj | {"spec": {"suspend": True, "model": {"name": "m"}}}
    assert not queue.seen(suspended).waiting  # type: ignore[union-attr]
    assert queue.seen({"metadata": {}}) is None


def test_ahead_counts_older_waiting_tasks_under_the_same_slot_only() -> None:
    tasks = [
        seen(1),
        seen(2),
        seen(3, waiting=False),
        seen(4, ref="other"),
        seen(5, ns="b"),
        seen(6),
    ]
    me = seen(7)
    assert queue.ahead(MODEL, me, tasks) == 3  # 1, 2, 6
    assert queue.ahead(NS, me, tasks) == 4  # 1, 2, 4, 6 (any model, same namespace)
    assert queue.ahead(MODEL, seen(1), tasks) == 0
    # same second: by name
    a, b = Seen("ua", "a", "a", "T", "gpt", True), Seen("ub", "a", "b", "T", "gpt", True)
    assert queue.ahead(MODEL, b, [a, b]) == 1 and queue.ahead(MODEL, a, [a, b]) == 0


def test_admission_up_to_the_limit_then_queued() -> None:
    running = {"uid-1": True}
    first = queue.admit(MODEL, {}, seen(1), 0, running, NOW)
    assert first.admitted and first.holders == {"uid-1": queue.holder("t1", NOW)}
    second = queue.admit(MODEL, first.holders or {}, seen(2), 0, running | {"uid-2": True}, NOW)
    assert second.admitted and set(second.holders or {}) == {"uid-1", "uid-2"}
    third = queue.admit(
        MODEL, second.holders or {}, seen(3), 0, {"uid-1": True, "uid-2": True}, NOW
    )
    assert not third.admitted and third.holders is None
    assert third.why == "Queued: waiting for a place under AgentModel gpt's maxConcurrentTasks=2"
    # asking again while holding a place: admitted, nothing written
    assert queue.admit(MODEL, second.holders or {}, seen(2), 5, {}, NOW) == queue.Admission(True)


def test_a_free_place_goes_to_the_oldest_waiting_task() -> None:
    holders = {"uid-1": queue.holder("t1", NOW)}
    assert not queue.admit(MODEL, holders, seen(9), 1, {"uid-1": True}, NOW).admitted
    assert queue.admit(MODEL, holders, seen(8), 0, {"uid-1": True}, NOW).admitted


def test_places_of_ended_or_long_gone_tasks_are_freed() -> None:
    holders = {
        "uid-1": queue.holder("t1", NOW - timedelta(hours=1)),  # ended
        "uid-2": queue.holder("t2", NOW - timedelta(hours=1)),  # unknown for an hour: gone
        "uid-3": queue.holder("t3", NOW - timedelta(seconds=5)),  # unknown, just admitted
    }
    answer = queue.admit(MODEL, holders, seen(4), 0, {"uid-1": False}, NOW)
    assert answer.admitted
    assert set(answer.holders or {}) == {"uid-3", "uid-4"}
    full = {"uid-3": holders["uid-3"], "uid-5": queue.holder("t5", NOW)}
    blocked = queue.admit(MODEL, full, seen(4), 0, {"uid-5": True}, NOW)
    assert not blocked.admitted and blocked.holders is None


def test_release() -> None:
    assert queue.release({"a": "x", "b": "y"}, "a") == {"b": "y"}
    assert queue.release({"b": "y"}, "a") is None


def test_queued_status_is_written_once() -> None:
    state = TaskState(
        "a", "t", "u", 1, AgentTaskSpec(input="x", model=ModelSpec(name="m")), AgentTaskStatus()
    )
    why = queue.waiting_for(MODEL)
    patch = queue.queued(state, why, NOW)
    assert patch is not None
    assert (patch["phase"], patch["reason"], patch["message"]) == ("Pending", "Queued", why)
    assert patch["conditions"][0]["status"] == "Unknown"
    again = TaskState("a", "t", "u", 1, state.spec, AgentTaskStatus.model_validate(patch))
    assert queue.queued(again, why, NOW) is None
