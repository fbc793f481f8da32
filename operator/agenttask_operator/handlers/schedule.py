"""kopf handlers of ``AgentTaskSchedule``: one loop per schedule creates its tasks on time.

One kopf daemon per schedule (started when it appears, and for each one again when the operator
starts) runs :class:`ScheduleLoop`: read the schedule and the tasks it created (one LIST by the
``agenttask.dev/schedule`` label), ``core.schedule.decide``, act, and again until ``decide``
says wait; then sleep until the next tick or until something changes. Changes that wake it: the
schedule itself, and a task of it being created, ending or deleted (``on.event``; a running
task's progress writes do not wake it). What ``decide`` asks for is applied here: create a task
(a 409 means that it exists: created by an earlier attempt or another replica, never twice),
delete tasks (only the one with that uid), merge-patch ``/status``, record Events.

``AGENTTASK_SCHEDULE_SECONDS=1`` — **for tests only**, off by default — lets ``spec.schedule``
have a sixth, leading seconds field (``*/5 * * * * *``: every 5 s), so that integration tests
see ticks within seconds; such a schedule names its tasks by Unix second instead of minute.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from agenttask_operator.core import schedule as core
from agenttask_operator.core.actions import Event, Wait
from agenttask_operator.core.status import ts
from agenttask_operator.core.toolserver import retry_delay
from agenttask_operator.effects import faults, logs, timezones
from agenttask_operator.effects.kube import GROUP, VERSION, AlreadyExists
from agenttask_operator.effects.kube import PLURAL as TASKS
from agenttask_operator.handlers.approval import parse_time
from agenttask_operator.handlers.context import Context, sleep
from agenttask_operator.models import TERMINAL_PHASES
from agenttask_operator.models.schedule import (
    KIND,
    PLURAL,
    SCHEDULE_LABEL,
    SCHEDULED_TIME_ANNOTATION,
    AgentTaskScheduleSpec,
    AgentTaskScheduleStatus,
    Child,
    ScheduleState,
)

SECONDS_ENV = "AGENTTASK_SCHEDULE_SECONDS"
WAKE = "agenttaskschedule/"  # wake-up keys apart from AgentTasks' (no object name has a "/")
ERROR_RETRY_SECONDS_MAX = 60.0  # longest wait after an API server error or a bug of ours
TURNS = 20  # actions in a row without a wait: more means a bug; sleep a little instead
MARGIN = 0.01  # seconds slept past a tick, so that the clock has reached it on waking

log = logging.getLogger(__name__)


def seconds_allowed(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether ``AGENTTASK_SCHEDULE_SECONDS`` (tests only) allows a seconds field."""
    return environ.get(SECONDS_ENV, "").strip().lower() in ("1", "true", "yes")


def now() -> datetime:
    """The wall clock, in UTC."""
    return datetime.now(UTC)


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_time(value)
    except ValueError:
        return None


def to_child(obj: Mapping[str, Any], owner: str) -> Child | None:
    """A task as ``core.schedule`` reads it; None if the schedule with uid ``owner`` does not
    own it (e.g. a task of an earlier schedule of the same name, not collected yet).
    """  # noqa: D205
    meta = obj.get("metadata") or {}
    if not any(ref.get("uid") == owner for ref in meta.get("ownerReferences") or ()):
        return None
    status = obj.get("status") or {}
    annotations = meta.get("annotations") or {}
    return Child(
        name=str(meta.get("name")),
        uid=str(meta.get("uid")),
        scheduled_time=_time(annotations.get(SCHEDULED_TIME_ANNOTATION)),
        phase=status.get("phase"),
        completion_time=_time(status.get("completionTime")),
        created=_time(meta.get("creationTimestamp")),
        deleting=bool(meta.get("deletionTimestamp")),
    )


def _status(raw: Any) -> AgentTaskScheduleStatus:
    try:
        return AgentTaskScheduleStatus.model_validate(raw or {})
    except ValidationError:
        return AgentTaskScheduleStatus()  # unreadable: rewritten whole


def _rv(obj: Mapping[str, Any]) -> int:
    raw = str((obj.get("metadata") or {}).get("resourceVersion") or "")
    return int(raw) if raw.isdigit() else 0


class ScheduleLoop:
    """Creates one schedule's tasks at its ticks, keeps its status, prunes its history."""

    def __init__(self, ctx: Context, body: kopf.Body, seconds: bool = False) -> None:
        """Bind to the object; ``body`` is kopf's live view of it (kept up to date)."""
        self.ctx, self.body, self.seconds = ctx, body, seconds
        self.namespace = str(body.metadata.namespace)
        self.name = str(body.metadata.name)
        self.uid = str(body.metadata.uid)
        # The status this loop wrote last, and the object's resourceVersion then (the live
        # body shows a write only once the watch has delivered it).
        self.known = _status(body.get("status"))
        self.known_rv = _rv(body)
        self.failures = 0
        self.reported: set[tuple[str, str]] = set()  # (reason, message) of failures reported

    async def run(self, stopped: kopf.DaemonStopped) -> None:
        """Act until there is nothing to do, sleep until the next tick or a change, repeat."""
        # Set whenever the schedule or one of its tasks changes; dropped when the loop ends (a
        # change while no loop runs needs no wake-up: a loop reads everything when it starts).
        key = (self.namespace, WAKE + self.name)
        wake = self.ctx.wakeup(*key)
        try:
            while not stopped:
                wake.clear()
                if not self.ctx.assigned_here(str(self.body.metadata.uid)):
                    # Another replica runs it (its task names make ticks exactly-once anyway);
                    # woken when the replicas change.
                    await sleep(stopped, wake, None)
                    continue
                try:
                    delay = await self.turns()
                    self.failures = 0
                except asyncio.CancelledError:
                    raise
                except Gone:
                    return
                except Exception as e:  # the API server, or a bug of ours: decide again later
                    self.failures += 1
                    delay = retry_delay(self.failures, ERROR_RETRY_SECONDS_MAX)
                    log.warning(
                        "AgentTaskSchedule %s/%s: %s: %s; again in %gs",
                        self.namespace, self.name, type(e).__name__, e, delay,
                    )  # fmt: skip
                await sleep(stopped, wake, delay)
        finally:
            if self.ctx.wakeups.get(key) is wake:  # not a newer loop's (deleted, then recreated)
                del self.ctx.wakeups[key]

    async def turns(self) -> float | None:
        """Decide and act until ``decide`` says wait; the seconds to sleep (None: forever)."""
        for _ in range(TURNS):
            if self.body.metadata.get("deletionTimestamp"):
                return None  # being deleted: kopf stops this loop, the GC takes the tasks
            state = await self.read()
            tz = timezones.load(state.spec.time_zone)
            at = now()
            action = core.decide(state, tz, at, self.seconds)
            log.debug("AgentTaskSchedule %s/%s: %s", self.namespace, self.name, action)
            if isinstance(action, Wait):
                left = action.seconds(now())
                return None if left is None else left + MARGIN
            await self.act(action, at)
        log.warning(
            "AgentTaskSchedule %s/%s: %d actions in a row without rest; pausing 1s",
            self.namespace, self.name, TURNS,
        )  # fmt: skip
        return 1.0

    async def read(self) -> ScheduleState:
        """The schedule (live body, and the newest status known) and its tasks, as of now."""
        meta = self.body.metadata
        if _rv(self.body) > self.known_rv:  # someone else wrote since our last write
            self.known, self.known_rv = _status(self.body.get("status")), _rv(self.body)
        found = await self.ctx.kube.list_objects(
            TASKS, self.namespace, label_selector=f"{SCHEDULE_LABEL}={self.name}"
        )
        children = tuple(c for c in (to_child(o, self.uid) for o in found) if c is not None)
        created = _time(meta.get("creationTimestamp")) or now()
        return ScheduleState(
            namespace=self.namespace,
            name=self.name,
            uid=self.uid,
            generation=int(meta.get("generation") or 1),
            created=created,
            spec=AgentTaskScheduleSpec.model_validate(self.body.get("spec") or {}),
            status=self.known,
            children=children,
        )

    async def act(self, action: core.Action, at: datetime) -> None:
        """Apply one action of ``decide``."""
        kube = self.ctx.kube
        match action:
            case core.Create():
                try:
                    await kube.create_object(TASKS, self.namespace, action.task)
                except AlreadyExists:
                    await self._exists(action)
                    return
                except Exception as e:
                    await self._report_failure(action, e, at)
                    raise
                log.info(
                    "AgentTaskSchedule %s/%s: created %s (%s)",
                    self.namespace, self.name, action.name, action.why,
                )  # fmt: skip
                await self.events(action.events, at)
                await faults.checkpoint("schedule-after-create")
            case core.Remove():
                for child in action.tasks:
                    await kube.delete_task(self.namespace, child.name, child.uid)
                log.info(
                    "AgentTaskSchedule %s/%s: deleted %s",
                    self.namespace, self.name, action.why,
                )  # fmt: skip
                await self.events(action.events, at)
            case core.Write():
                written = await kube.patch_custom_status(
                    PLURAL, self.namespace, self.name, action.patch
                )
                if written is None:
                    raise Gone()
                self.known, self.known_rv = _status(written.get("status")), _rv(written)
                if action.events:
                    log.info("AgentTaskSchedule %s/%s: %s", self.namespace, self.name, action.why)
                await self.events(action.events, at)

    async def _exists(self, action: core.Create) -> None:
        """The task's name is taken: ours (an earlier attempt, another replica) is fine."""
        obj = await self.ctx.kube.get_task(self.namespace, action.name)
        if obj is not None and to_child(obj, self.uid) is not None:
            log.info(
                "AgentTaskSchedule %s/%s: %s exists already (%s): not created again",
                self.namespace, self.name, action.name, action.why,
            )  # fmt: skip
            return
        # Another object holds the name (an earlier schedule's task, not collected yet): the
        # tick stays due, and is tried again until its deadline or the next tick.
        raise NameTaken(f"{action.name} exists and is not owned by this schedule")

    async def _report_failure(self, action: core.Create, error: Exception, at: datetime) -> None:
        """A Warning Event ``FailedCreate`` (once per tick and cause)."""
        reason = getattr(error, "reason", None) or type(error).__name__
        body = getattr(error, "body", None)
        message = f"could not create {action.name}: {reason}"
        if isinstance(body, str) and body:
            message += f": {body[:512]}"
        key = (ts(action.tick), message)
        if key not in self.reported:
            self.reported = {key}
            await self.events((Event("Warning", "FailedCreate", message),), at)

    async def events(self, events: tuple[Event, ...], at: datetime) -> None:
        """Record Events on the schedule."""
        if not events:
            return
        meta = {"name": self.name, "namespace": self.namespace, "uid": self.uid}
        obj = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": meta}
        for e in events:
            await self.ctx.kube.object_event(obj, e.type, e.reason, e.message, ts(at))


class Gone(Exception):
    """The schedule is gone: its loop ends."""


class NameTaken(Exception):
    """A task of the tick's name exists and belongs to something else."""


async def wake(namespace: str | None, name: str | None, memo: Any, **_: Any) -> None:
    """Any change of a schedule ends its loop's sleep (a spec edit is acted on at once)."""
    ctx: Context | None = memo.get("ctx")
    if ctx is not None and namespace and name:
        _wake(ctx, namespace, name)


def _wake(ctx: Context, namespace: str, schedule: str) -> None:
    """End the sleep of the schedule's loop, if it has one."""
    event = ctx.wakeups.get((namespace, WAKE + schedule))
    if event is not None:
        event.set()


async def wake_owner(
    namespace: str | None,
    labels: kopf.Labels,
    event: kopf.RawEvent,
    memo: Any,
    **_: Any,
) -> None:
    """A task of a schedule appeared, ended, or is being deleted: wake its schedule's loop.

    Its progress writes while it runs change nothing the schedule looks at, and wake nothing.
    """
    ctx: Context | None = memo.get("ctx")
    owner = labels.get(SCHEDULE_LABEL)
    if ctx is None or not namespace or not owner:
        return
    obj = event.get("object") or {}
    phase = (obj.get("status") or {}).get("phase")
    deleting = bool((obj.get("metadata") or {}).get("deletionTimestamp"))
    if event.get("type") in (None, "ADDED", "DELETED") or phase in TERMINAL_PHASES or deleting:
        _wake(ctx, namespace, owner)


async def schedule_loop(
    *, body: kopf.Body, stopped: kopf.DaemonStopped, memo: Any, param: Any = None, **_: Any
) -> None:
    """The daemon of one AgentTaskSchedule (``param``: whether seconds fields are allowed)."""
    with logs.about_object("AgentTaskSchedule", body):
        await ScheduleLoop(memo.ctx, body, bool(param)).run(stopped)


def register(seconds: bool | None = None) -> None:
    """Register the AgentTaskSchedule handlers with kopf's default registry."""
    allowed = seconds_allowed() if seconds is None else seconds
    kopf.on.event(GROUP, VERSION, PLURAL, id="agenttaskschedule-wake")(wake)
    kopf.on.event(
        GROUP,
        VERSION,
        TASKS,
        id="agenttaskschedule-task",
        labels={SCHEDULE_LABEL: kopf.PRESENT},
    )(wake_owner)
    kopf.daemon(
        GROUP,
        VERSION,
        PLURAL,
        id="agenttaskschedule-loop",
        cancellation_timeout=5.0,
        backoff=5.0,
        param=allowed,
    )(schedule_loop)
    if allowed:
        log.warning(
            "%s is set: schedules may have a seconds field. For tests only, never in production",
            SECONDS_ENV,
        )
