"""A task's concurrency limits and request pace, for its loop (``handlers.runner``).

Admission (``core.queue``): before a task starts, a place in every limit it is under — its
AgentModel's ``maxConcurrentTasks``, the operator's limit per namespace — or ``Queued`` until a
task of its namespace ends. Pace (``core.pace``): before each LLM request, its turn under the
model's ``maxRequestsPerMinute`` and after a 429.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import kopf

from agenttask_operator.core import queue
from agenttask_operator.core.actions import Event
from agenttask_operator.effects.kube import Conflict
from agenttask_operator.handlers.context import Context, sleep
from agenttask_operator.models import TaskState

log = logging.getLogger(__name__)

QUEUE_RECHECK = 60.0  # seconds a queued task waits at most before it asks again

Record = Callable[[dict[str, Any], dict[str, Any], Event | None], Awaitable[None]]


class TaskLimits:
    """The limits of one task's loop."""

    def __init__(self, ctx: Context, namespace: str, name: str) -> None:
        """Bind to one task."""
        self.ctx, self.namespace, self.name = ctx, namespace, name
        self.paced_until: float | None = None  # the booked time of its next LLM request

    def pace(self, state: TaskState) -> float:
        """Seconds until the task's next LLM request may go (``core.pace``); booked once."""
        now = time.monotonic()
        if self.paced_until is None:
            key, per_minute = self.ctx.pace_key(state)
            at = self.ctx.reserve(key, per_minute)
            if at <= now:
                return 0.0
            self.paced_until = at
            log.debug("%s/%s: paced, %.1fs", self.namespace, self.name, at - now)
        left = self.paced_until - now
        if left <= 0:
            self.paced_until = None
            return 0.0
        return left

    async def admission(
        self,
        obj: dict[str, Any],
        state: TaskState,
        record: Record,
        stopped: kopf.DaemonStopped,
        wake: asyncio.Event,
    ) -> tuple[str, ...] | None:
        """A place in every concurrency limit the task is under (``core.queue``): the slots
        it now holds a place in, or None when it must wait (recorded ``Queued`` with
        ``record``; this waits until a task of the namespace ends, or a minute at most).
        """  # noqa: D205
        ref = state.spec.model.model_ref
        slots = queue.slots_for(
            ref.name if ref else None, state.model_limit, self.ctx.settings.max_tasks_per_namespace
        )
        if not slots:
            return ()
        me = queue.seen(obj)
        assert me is not None
        tasks = list(self.ctx.tasks.values())
        running = {t.uid: not t.ended for t in tasks}
        taken: list[str] = []
        for slot in slots:
            before = queue.ahead(slot, me, tasks)
            at = datetime.now(UTC)
            answer = await self.ctx.slots.acquire(self.namespace, slot, me, before, running, at)
            if not answer.admitted:
                if taken:  # wait with no place held: others may take them
                    await self.ctx.slots.release(self.namespace, taken, me.uid)
                rank = (me.created, me.name, max(s.limit for s in slots))
                await self._queue(obj, state, answer.why, rank, record, stopped, wake)
                return None
            taken.append(slot.key)
        log.info("%s/%s: admitted by %s", self.namespace, self.name, ", ".join(taken))
        return tuple(taken)

    async def _queue(
        self,
        obj: dict[str, Any],
        state: TaskState,
        why: str,
        rank: tuple[str, str, int],
        record: Record,
        stopped: kopf.DaemonStopped,
        wake: asyncio.Event,
    ) -> None:
        patch = queue.queued(state, why, datetime.now(UTC))
        if patch is not None:
            log.info("%s/%s: %s", self.namespace, self.name, why)
            with contextlib.suppress(Conflict):
                await record(obj, patch, Event("Normal", "Queued", why))
        key = (self.namespace, self.name)
        waiting = self.ctx.queued.setdefault(self.namespace, {})
        waiting[key] = rank
        try:
            await sleep(stopped, wake, QUEUE_RECHECK)
        finally:
            waiting.pop(key, None)

    async def release(self, uid: str, status: dict[str, Any]) -> None:
        """Give back the places of a task that has ended (its ``status.slots``)."""
        keys = [str(k) for k in status.get("slots") or ()]
        try:
            await self.ctx.slots.release(self.namespace, keys, uid)
        except Exception as e:  # it frees itself: ended tasks hold no place
            log.warning("%s/%s: could not release its places: %s", self.namespace, self.name, e)
