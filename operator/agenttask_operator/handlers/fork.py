"""A fork's copy of its source's transcript, before its first step (``spec.forkFrom``).

The loop (``handlers.runner``) calls :meth:`Fork.ready` when ``decide`` would start a task that
has ``spec.forkFrom``; the task starts only once it returns True. What to do is decided by
``core.fork.decide_fork``; this module reads the source (a GET of the AgentTask, and a LIST of
its transcript ConfigMaps by its uid) and writes: the status (``forkedFrom`` is recorded before
anything is copied) and the copied entries, appended to the fork's own transcript — new
segments owned by the fork, exactly as its own steps' results are. The source is never
written.

A restart at any point copies only what is missing: the fork's transcript is read when its loop
starts, the entries already there are checked to be the source's first ones, and segment
indices are claimed by create (a second writer gets 409), so no entry is copied twice or lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from agenttask_operator.core import fork, transcript
from agenttask_operator.core.actions import Event, Wait, WriteStatus
from agenttask_operator.effects import faults
from agenttask_operator.effects.kube import Conflict
from agenttask_operator.effects.transcript import TranscriptStore
from agenttask_operator.handlers.context import Context, sleep
from agenttask_operator.models import AgentTaskStatus, TaskState, TranscriptInfo

log = logging.getLogger(__name__)

Record = Callable[[dict[str, Any], dict[str, Any], Event | None], Awaitable[None]]


def _recorded(obj: dict[str, Any]) -> TranscriptInfo:
    """What the source's status says was committed (nothing, if its status cannot be read)."""
    try:
        return AgentTaskStatus.model_validate(obj.get("status") or {}).transcript
    except ValidationError:
        return TranscriptInfo()


class Fork:
    """The fork step of one task's loop."""

    def __init__(self, ctx: Context, namespace: str, name: str) -> None:
        """Bind to one task."""
        self.ctx, self.namespace, self.name = ctx, namespace, name

    async def source(self, state: TaskState) -> fork.Source | None:
        """The AgentTask ``spec.forkFrom`` names, as read now; its transcript once it ended."""
        assert state.spec.fork_from is not None
        name = state.spec.fork_from.name
        if name == state.name:
            return None
        obj = await self.ctx.kube.get_task(self.namespace, name)
        if obj is None:
            return None
        uid = str(obj["metadata"]["uid"])
        src = fork.Source(name, uid, (obj.get("status") or {}).get("phase"))
        forked = state.status.forked_from
        if not src.ended or (forked is not None and forked.uid != uid):
            return src  # not ended: its transcript is not final; another uid: not the source
        store = TranscriptStore(self.ctx.kube, self.namespace, name, uid)
        entries = await store.load()  # read only: never appended to
        lost = transcript.lost(_recorded(obj), store.found())
        return fork.Source(name, uid, src.phase, entries, lost)

    async def ready(
        self,
        obj: dict[str, Any],
        state: TaskState,
        store: TranscriptStore,
        record: Record,
        stopped: kopf.DaemonStopped,
        wake: asyncio.Event,
    ) -> bool:
        """Whether the task may start: its copy is complete. False after any write, copy or
        wait (the loop decides again from what is stored then).
        """  # noqa: D205
        source = await self.source(state) if fork.needs_source(state) else None
        outcome = fork.decide_fork(state, source, datetime.now(UTC))
        if isinstance(outcome, fork.Ready):
            return True
        if isinstance(outcome, WriteStatus):
            log.info("%s/%s: %s", self.namespace, self.name, outcome.why)
            with contextlib.suppress(Conflict):  # the next turn reads the task again
                await record(obj, outcome.patch, outcome.event)
            return False
        if isinstance(outcome, Wait):
            log.debug("%s/%s: %s", self.namespace, self.name, outcome.why)
            await sleep(stopped, wake, outcome.seconds(datetime.now(UTC)))
            return False
        last = outcome.first + len(outcome.entries) - 1
        src = state.status.forked_from
        log.info(
            "%s/%s: copying steps %d-%d of AgentTask %s",
            self.namespace, self.name, outcome.first, last, src.name if src else "?",
        )  # fmt: skip
        for number, entry in enumerate(outcome.entries, start=outcome.first):
            await faults.checkpoint(f"fork-copy:{number}")
            try:
                await store.append(entry)
            except Conflict:  # another writer took the index (the store was reloaded): redo
                return False
        return False
