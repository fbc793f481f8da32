"""The shielded status write: cancelled while in flight, its failure is never left unretrieved.

kopf cancels a task's daemon as soon as a terminal status shows in its watch, which can be
before the response of our own write arrives; the write goes on (shielded) and may then fail
with a Conflict. asyncio used to log "Task exception was never retrieved" for it.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from agenttask_operator.effects.kube import Conflict
from agenttask_operator.handlers.context import Context, Settings
from agenttask_operator.handlers.runner import TaskLoop
from agenttask_operator.models import TranscriptInfo


class SlowConflictingKube:
    """Answers a status write with a Conflict after a moment, like a racing API server."""

    def __init__(self) -> None:
        self.writes = 0

    async def patch_status(self, *args: Any) -> dict[str, Any]:
        self.writes += 1
        await asyncio.sleep(0.05)
        raise Conflict("the object has been modified")


class Store:
    def info(self) -> TranscriptInfo:
        return TranscriptInfo()


async def test_a_cancelled_shielded_write_that_fails_is_retrieved() -> None:
    loop = asyncio.get_running_loop()
    unretrieved: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: unretrieved.append(context))
    kube = SlowConflictingKube()
    ctx = Context(kube=kube, session=None, builtins={}, settings=Settings())  # type: ignore[arg-type]
    task_loop = TaskLoop(ctx, "ns", "t")
    task_loop.store = Store()  # type: ignore[assignment]
    obj = {"metadata": {"name": "t", "namespace": "ns", "uid": "u", "resourceVersion": "1"}}
    record = asyncio.create_task(task_loop._record(obj, {"phase": "Failed"}, None))
    await asyncio.sleep(0.01)
    record.cancel()  # what kopf does when the daemon is stopped
    await asyncio.sleep(0.2)  # the shielded write goes on and fails
    del record
    gc.collect()
    await asyncio.sleep(0)
    assert kube.writes == 1
    assert unretrieved == []
