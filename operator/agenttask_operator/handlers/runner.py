"""The loop of one AgentTask: read everything, ``decide``, act, repeat — until it ends.

Persist before acting: an attempt's intent (step, attempt number) is written to status before
the attempt runs; its result is appended to the transcript (the commit point) right after;
the next turn of the loop sees the stored result and commits it to status, in the same
write as the next step's intent. A step whose result
is stored is never run again, and after a crash the loop simply starts over from what is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from agenttask_operator.core import Execute, Failure, Noop, Wait, WriteStatus, decide, on_failure
from agenttask_operator.core.actions import Delete, Event
from agenttask_operator.core.conversation import find_tool_call, request_messages
from agenttask_operator.core.decide import describe
from agenttask_operator.core.status import finish, ts
from agenttask_operator.effects import faults, llm, tools
from agenttask_operator.effects.kube import Conflict, SecretError, is_transient
from agenttask_operator.effects.llm import StepFailed
from agenttask_operator.effects.registry import ToolContext
from agenttask_operator.effects.transcript import TranscriptStore
from agenttask_operator.handlers.context import Context
from agenttask_operator.models import (
    TERMINAL_PHASES,
    AgentTaskSpec,
    AgentTaskStatus,
    Entry,
    ModelSpec,
    Step,
    TaskState,
)

log = logging.getLogger(__name__)


def now() -> datetime:
    """The wall clock, in UTC."""
    return datetime.now(UTC)


async def _stopped(stopped: kopf.DaemonStopped) -> None:
    await stopped.wait()


async def sleep(stopped: kopf.DaemonStopped, wake: asyncio.Event, seconds: float | None) -> None:
    """Sleep for ``seconds`` (None: forever) or until stopped or woken by a change of the task."""
    waiters = {asyncio.create_task(_stopped(stopped)), asyncio.create_task(wake.wait())}
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


def to_state(obj: dict[str, Any], store: TranscriptStore, ctx: Context) -> TaskState:
    """Parse the object into the models ``decide`` reads."""
    meta = obj["metadata"]
    return TaskState(
        namespace=meta["namespace"],
        name=meta["name"],
        uid=meta["uid"],
        generation=int(meta.get("generation", 1)),
        spec=AgentTaskSpec.model_validate(obj.get("spec") or {}),
        status=AgentTaskStatus.model_validate(obj.get("status") or {}),
        transcript=store.entries,
        builtin_tools=frozenset(ctx.builtins),
        deleting="deletionTimestamp" in meta,
    )


class TaskLoop:
    """Drives one task until it ends, is deleted, or the daemon is stopped."""

    def __init__(self, ctx: Context, namespace: str, name: str) -> None:
        """Bind to one task."""
        self.ctx, self.namespace, self.name = ctx, namespace, name
        self.store: TranscriptStore | None = None

    async def write(self, obj: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
        """Write a status patch (and where the transcript is), fenced by resourceVersion."""
        assert self.store is not None
        full = patch | {"transcript": self.store.info().to_api()}
        new = await self.ctx.kube.patch_status(
            self.namespace, self.name, obj["metadata"]["resourceVersion"], full
        )
        return new

    async def run(self, stopped: kopf.DaemonStopped) -> None:
        """Loop: read, decide, act; ride out transient API server errors."""
        wake = self.ctx.wakeup(self.namespace, self.name)
        while not stopped:
            try:
                done = await self._turn(stopped, wake)
            except Exception as e:
                if not is_transient(e):
                    raise
                log.warning("%s/%s: API server: %s; retrying in 1s", self.namespace, self.name, e)
                await sleep(stopped, wake, 1.0)
                continue
            if done:
                return

    async def _turn(self, stopped: kopf.DaemonStopped, wake: asyncio.Event) -> bool:
        """One wake-up: read, decide, act. True when the loop should end."""
        wake.clear()
        obj = await self.ctx.kube.get_task(self.namespace, self.name)
        if obj is None:
            return True
        uid = obj["metadata"]["uid"]
        if self.store is None or self.store.uid != uid:
            store = TranscriptStore(self.ctx.kube, self.namespace, self.name, uid)
            await store.load()  # kept only once loaded: a failed load is retried next turn
            self.store = store
        try:
            state = to_state(obj, self.store, self.ctx)
        except ValidationError as e:
            await self._invalid(obj, e)
            return True
        action = decide(state, now())
        if isinstance(action, Noop):
            log.debug("%s/%s: %s", self.namespace, self.name, action.why)
            return True
        if isinstance(action, Delete):
            log.info("%s/%s: deleting: %s", self.namespace, self.name, action.why)
            await self.ctx.kube.delete_task(self.namespace, self.name, uid)
            return True
        if isinstance(action, WriteStatus):
            log.info("%s/%s: %s", self.namespace, self.name, action.why)
            try:
                await self._record(obj, action.patch, action.event)
            except Conflict:
                return False
        elif isinstance(action, Wait):
            delay = (
                None if action.until is None else max((action.until - now()).total_seconds(), 0.0)
            )
            log.info("%s/%s: %s", self.namespace, self.name, action.why)
            await sleep(stopped, wake, delay)
        elif isinstance(action, Execute):
            await self._execute(obj, state, action, stopped)
        return False

    async def _execute(
        self, obj: dict[str, Any], state: TaskState, action: Execute, stopped: kopf.DaemonStopped
    ) -> None:
        step, attempt = action.step, action.attempt
        await faults.checkpoint(f"before-intent:{step.kind}:{step.iteration}")
        try:
            obj = await self.write(obj, action.intent)
        except Conflict:
            return
        await self._event(obj, action.event)
        log.info("%s/%s: %s, attempt %d", self.namespace, self.name, describe(step), attempt)
        work = asyncio.create_task(self._attempt(state, step, action.timeout))
        stop = asyncio.create_task(_stopped(stopped))
        try:
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not work.done():  # deleted, or the operator is shutting down: stop at once
                work.cancel()
                log.info("%s/%s: %s interrupted", self.namespace, self.name, describe(step))
                with contextlib.suppress(asyncio.CancelledError, StepFailed):
                    await work
        if work.cancelled():
            return
        try:
            entry = work.result()
            await self._append(entry, step)
        except StepFailed as e:
            log.warning(
                "%s/%s: %s, attempt %d failed: %s",
                self.namespace, self.name, describe(step), attempt, e.failure.message,
            )  # fmt: skip
            failed = on_failure(state, step, attempt, e.failure, now(), random.random())  # noqa: S311
            with contextlib.suppress(Conflict):
                await self._record(obj, failed.patch, failed.event)
            return
        await faults.checkpoint(f"after-append:{step.kind}:{step.iteration}")

    async def _attempt(self, state: TaskState, step: Step, limit: float) -> Entry:
        try:
            async with asyncio.timeout(limit):
                if step.kind == "LLM":
                    return await self._llm(state, step)
                return await self._tool(state, step)
        except TimeoutError:
            msg = f"{describe(step)} did not finish within {limit:g}s"
            raise StepFailed(Failure(msg, True, "StepTimeout")) from None

    async def _api_key(self, state: TaskState) -> str:
        ref = state.spec.model.api_key_secret_ref
        if ref is not None:
            try:
                return await self.ctx.kube.read_secret_key(state.namespace, ref.name, ref.key)
            except SecretError as e:
                raise StepFailed(Failure(str(e), True, "SecretUnavailable")) from None
        key = os.environ.get("OPENAI_API_KEY")
        if not key:
            msg = "no API key: set spec.model.apiKeySecretRef or the operator's OPENAI_API_KEY"
            raise StepFailed(Failure(msg, False, "ModelCredentialsMissing"))
        return key

    async def _llm(self, state: TaskState, step: Step) -> Entry:
        spec = state.spec
        reply = await llm.chat(
            spec.model,
            base_url=spec.model.base_url or self.ctx.settings.default_base_url,
            api_key=await self._api_key(state),
            messages=request_messages(spec, state.transcript),
            tools=tools.definitions(spec.tools, self.ctx.builtins),
            timeout_seconds=spec.model.request_timeout_seconds or spec.step_timeout_seconds,
        )
        return Entry(
            kind="LLM",
            iteration=step.iteration,
            message=reply.message,
            usage=reply.usage,
            finish_reason=reply.finish_reason,
            time=now(),
        )

    async def _tool(self, state: TaskState, step: Step) -> Entry:
        call = find_tool_call(state.transcript, step)
        if call is None:  # cannot happen: steps come from stored tool calls
            raise StepFailed(
                Failure(f"{describe(step)} is not in the transcript", False, "Internal")
            )
        assert step.tool_call_id is not None
        ctx = ToolContext(
            idempotency_key=tools.idempotency_key(state.uid, step.tool_call_id),
            namespace=state.namespace,
            task_name=state.name,
            task_uid=state.uid,
            tool_call_id=step.tool_call_id,
            workspace=self.ctx.settings.workspace,
        )
        result = await tools.execute(
            call, state.spec.tools, self.ctx.builtins, ctx, self.ctx.session
        )
        return Entry(
            kind="Tool",
            iteration=step.iteration,
            tool_call_id=step.tool_call_id,
            message={"role": "tool", "tool_call_id": step.tool_call_id, "content": result.content},
            is_error=result.is_error,
            time=now(),
        )

    async def _append(self, entry: Entry, step: Step) -> None:
        """Store the result; after a conflict, re-read and store it unless it is there already."""
        assert self.store is not None
        for _ in range(3):
            try:
                await self.store.append(entry)
                return
            except Conflict:
                if any(e.answers(step) for e in self.store.entries):
                    return
        msg = "could not store the result: the transcript ConfigMaps keep changing"
        raise StepFailed(Failure(msg, True, "TranscriptConflict"))

    async def _event(self, obj: dict[str, Any], event: Event | None) -> None:
        if event is not None:
            await self.ctx.kube.event(obj, event.type, event.reason, event.message, ts(now()))

    async def _record(
        self, obj: dict[str, Any], patch: dict[str, Any], event: Event | None
    ) -> None:
        """Write a status patch and record its Event as one unit.

        Shielded: kopf cancels the daemon as soon as a terminal status shows in its watch, which
        can be before our write's response arrives; the Event of that status must still follow.
        """

        async def both() -> None:
            await self.write(obj, patch)
            await self._event(obj, event)

        await asyncio.shield(asyncio.ensure_future(both()))

    async def _invalid(self, obj: dict[str, Any], err: ValidationError) -> None:
        if (obj.get("status") or {}).get("phase") in TERMINAL_PHASES:
            return
        msg = f"spec is invalid: {err.errors()[0].get('msg', err)}"
        state = TaskState(
            namespace=self.namespace,
            name=self.name,
            uid=obj["metadata"]["uid"],
            generation=int(obj["metadata"].get("generation", 1)),
            spec=AgentTaskSpec(input="-", model=ModelSpec(name="-")),
            status=AgentTaskStatus(),
        )
        patch = finish(state, now(), succeeded=False, reason="InvalidSpec", message=msg)
        try:
            await self.write(obj, patch)
        except Conflict:
            return
