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
import random
from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from agenttask_operator.core import Execute, Failure, Noop, Wait, WriteStatus, decide, shard
from agenttask_operator.core import approval as approvals
from agenttask_operator.core.actions import Delete, Event
from agenttask_operator.core.agentmodel import resolve
from agenttask_operator.core.conversation import find_tool_call, request_messages
from agenttask_operator.core.credentials import Access, model_access
from agenttask_operator.core.decide import describe, on_batch_failure
from agenttask_operator.core.internal import INTERNAL_ERROR_RETRY, internal_error
from agenttask_operator.core.status import apply, finish, ts
from agenttask_operator.effects import faults, llm, logs, metrics, tools, tracing
from agenttask_operator.effects.kube import FINALIZER, Conflict, SecretError, is_transient
from agenttask_operator.effects.llm import StepFailed
from agenttask_operator.effects.registry import ToolContext
from agenttask_operator.effects.transcript import TranscriptStore
from agenttask_operator.handlers import approval
from agenttask_operator.handlers.context import Context, sleep, until_stopped
from agenttask_operator.handlers.fork import Fork
from agenttask_operator.handlers.limits import TaskLimits
from agenttask_operator.handlers.mcptools import McpTools
from agenttask_operator.models import (
    TERMINAL_PHASES,
    AgentTaskSpec,
    AgentTaskStatus,
    Entry,
    ModelSpec,
    Step,
    TaskState,
    TranscriptInfo,
)
from agenttask_operator.models.agentmodel import PLURAL as AGENTMODELS
from agenttask_operator.models.agentmodel import AgentModelSpec
from agenttask_operator.models.approval import Decision
from agenttask_operator.models.task import ToolServer
from agenttask_operator.models.toolserver import PLURAL as TOOLSERVERS
from agenttask_operator.models.toolserver import AgentToolServerSpec, AgentToolServerStatus

log = logging.getLogger(__name__)


FINALIZER_WAIT = 5.0  # seconds the first turn waits at most for kopf's finalizer (in the watch)
OWN_WRITES = 16  # how many of our own writes' resourceVersions to recognise in the watch


def lean(obj: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` as the loop keeps it: without ``metadata.managedFields`` (often a third of the
    object, never read), sharing the rest (never modified). A thousand loops keep one each.
    """  # noqa: D205
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    return {**obj, "metadata": meta}


def newer(seen: dict[str, Any], known: dict[str, Any] | None, own: Collection[str]) -> bool:
    """Whether ``seen`` (delivered by the watch) is newer than ``known`` (what the loop holds).

    Our own writes come back through the watch after their answer did: those are never newer.
    Otherwise resourceVersions are compared as etcd revisions when both are numbers (an event
    delivered late is older); an opaque one is taken as newer, which at worst costs a 409 and
    a read.
    """
    rv = str(seen.get("metadata", {}).get("resourceVersion", ""))
    if rv in own:
        return False
    if known is None:
        return True
    current = str(known["metadata"].get("resourceVersion", ""))
    if rv.isdigit() and current.isdigit():
        return int(rv) > int(current)
    return rv != current


def now() -> datetime:
    """The wall clock, in UTC."""
    return datetime.now(UTC)


async def to_state(obj: dict[str, Any], store: TranscriptStore, ctx: Context) -> TaskState:
    """Parse the object into the models ``decide`` reads; read the AgentModel it names, while
    the task has not stored what that resolved to.
    """  # noqa: D205
    meta = obj["metadata"]
    spec = AgentTaskSpec.model_validate(obj.get("spec") or {})
    status = AgentTaskStatus.model_validate(obj.get("status") or {})
    ref = spec.model.model_ref
    agent_model, model_limit = None, None
    if ref is not None and status.resolved_model is None:
        found = await ctx.kube.get_object(AGENTMODELS, meta["namespace"], ref.name)
        if found is not None:
            am = AgentModelSpec.model_validate(found.get("spec") or {})
            agent_model, model_limit = resolve(am, spec.model), am.max_concurrent_tasks
    servers: dict[str, ToolServer] = {}
    if status.resolved_tools is None and status.start_time is None:
        for t in spec.tools:
            server_ref = t.tool_server_ref
            if server_ref is None or server_ref.name in servers:
                continue
            found = await ctx.kube.get_object(TOOLSERVERS, meta["namespace"], server_ref.name)
            if found is not None:
                servers[server_ref.name] = ToolServer(
                    AgentToolServerSpec.model_validate(found.get("spec") or {}),
                    AgentToolServerStatus.model_validate(found.get("status") or {}),
                    int(found["metadata"].get("generation", 1)),
                )
    pending = status.approval is not None and status.approval.decision is None
    decisions: tuple[Decision, ...] = ()
    if pending and status.phase not in TERMINAL_PHASES:  # the decisions on the waiting call
        decisions = await approval.decisions(ctx.kube, meta["namespace"], meta["name"])
    created = meta.get("creationTimestamp")
    return TaskState(
        namespace=meta["namespace"],
        name=meta["name"],
        uid=meta["uid"],
        generation=int(meta.get("generation", 1)),
        spec=spec,
        status=status,
        agent_model=agent_model,
        model_limit=model_limit,
        tool_servers=servers,
        approvals=decisions,
        created=approval.parse_time(created) if created else None,
        transcript=store.entries,
        stored=store.found(),
        builtin_tools=frozenset(ctx.builtins),
        deleting="deletionTimestamp" in meta,
        policy=ctx.settings.policy,
    )


def minimal_state(obj: dict[str, Any]) -> TaskState:
    """What can be read of a task whatever its spec: identity, generation, status if valid."""
    meta = obj["metadata"]
    try:
        status = AgentTaskStatus.model_validate(obj.get("status") or {})
    except ValidationError:
        status = AgentTaskStatus()
    return TaskState(
        namespace=meta["namespace"],
        name=meta["name"],
        uid=meta["uid"],
        generation=int(meta.get("generation", 1)),
        spec=AgentTaskSpec(input="-", model=ModelSpec(name="-")),
        status=status,
    )


def _starts(action: object) -> bool:
    """Whether ``action`` starts the task (its write sets ``startTime``)."""
    if isinstance(action, Execute):
        return "startTime" in action.intent
    return isinstance(action, WriteStatus) and "startTime" in action.patch


def _with(action: Execute | WriteStatus | Any, extra: dict[str, Any]) -> Any:
    """``action`` with ``extra`` merged into the status it writes."""
    if isinstance(action, Execute):
        return replace(action, intent=action.intent | extra)
    if isinstance(action, WriteStatus):
        return replace(action, patch=action.patch | extra)
    return action


def _outcome_retrieved(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("a shielded status write ended with %r", task.exception())


class TaskLoop:
    """Drives one task until it ends, is deleted, or the daemon is stopped."""

    def __init__(self, ctx: Context, namespace: str, name: str, uid: str | None = None) -> None:
        """Bind to one task (to one incarnation of it, when ``uid`` is given)."""
        self.ctx, self.namespace, self.name, self.uid = ctx, namespace, name, uid
        self.store: TranscriptStore | None = None
        self.mcp = McpTools(ctx, namespace)
        self.obj: dict[str, Any] | None = None  # the task as last written or watched
        self.own: deque[str] = deque(maxlen=OWN_WRITES)  # resourceVersions of our writes
        self.waited = False  # for kopf's finalizer, on the first turn
        self.events: set[asyncio.Future[None]] = set()  # Events being recorded
        self.claim: dict[str, Any] | None = None  # status.owner to take the task with
        self.idle: str | None = None  # why this replica leaves the task alone, if it does
        self.limits = TaskLimits(ctx, namespace, name)  # concurrency limits, request pace
        self.fork = Fork(ctx, namespace, name)  # spec.forkFrom: the copy before the start

    async def write(self, obj: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
        """Write a status patch (and how much of the transcript is committed, when that grew),
        fenced by resourceVersion. The answer is the task as it now is: the next turn starts
        from it, without reading the task again; after a conflict, the next turn reads it.
        """  # noqa: D205
        if self.store is not None:
            info = self.store.info()
            recorded = TranscriptInfo.model_validate(
                (obj.get("status") or {}).get("transcript") or {}
            )
            if info != recorded and info.entries >= recorded.entries:  # never record a loss
                patch = patch | {"transcript": info.to_api()}
        if self.claim is not None:  # take the task in the same fenced write
            patch = patch | self.claim
        try:
            new = await self.ctx.kube.patch_status(
                self.namespace, self.name, obj["metadata"]["resourceVersion"], patch
            )
        except Conflict:
            self.obj = None
            raise
        metrics.status_written(obj.get("status"), new.get("status"))
        ended_now = (new.get("status") or {}).get("phase") in TERMINAL_PHASES and (
            obj.get("status") or {}
        ).get("phase") not in TERMINAL_PHASES
        if ended_now:
            tracing.finished(new)
        if ended_now and (new.get("status") or {}).get("slots"):
            uid = str(new["metadata"]["uid"])
            released = asyncio.ensure_future(self.limits.release(uid, new["status"]))
            self.events.add(released)
            released.add_done_callback(self.events.discard)
        self.obj = new = lean(new)
        self.own.append(new["metadata"]["resourceVersion"])
        if self.claim is not None:
            log.info("%s/%s: taken by %s", self.namespace, self.name, self.claim["owner"])
            self.claim = None
        return new

    def _known(self) -> dict[str, Any] | None:
        """The newest version of the task known without asking: what our last write returned,
        or what the watch delivered since, unless that is the echo of a write of ours.
        """  # noqa: D205
        seen = self.ctx.latest.pop((self.namespace, self.name), None)
        if seen is not None and newer(seen, self.obj, self.own):
            self.obj = seen
        return self.obj

    async def run(self, stopped: kopf.DaemonStopped, initial: dict[str, Any] | None = None) -> None:
        """Loop: read, decide, act. No exception ends it: transient API server errors are
        ridden out; anything else (a bug of ours) is reported on the task and retried with a
        growing backoff, and ends the task ``InternalError`` after a bounded number of tries.
        ``initial``: the task as kopf saw it when it started the loop (else it is read).
        """  # noqa: D205
        self.obj = initial
        wake = self.ctx.hold(self.namespace, self.name)
        try:
            await self._run(stopped, wake)
        finally:
            self.ctx.release(self.namespace, self.name)

    async def _run(self, stopped: kopf.DaemonStopped, wake: asyncio.Event) -> None:
        while not stopped:
            try:
                done = await self._turn(stopped, wake)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.obj = None  # whatever happened, read the task afresh
                if is_transient(e):
                    log.warning("%s/%s: API server: %s; retry in 1s", self.namespace, self.name, e)
                    await sleep(stopped, wake, 1.0)
                    continue
                delay = await self._internal_error(e)
                if delay is None:
                    return
                await sleep(stopped, wake, delay)
                continue
            if done:
                return

    def _before_finalizer(self, obj: dict[str, Any]) -> bool:
        meta = obj["metadata"]
        return FINALIZER not in (meta.get("finalizers") or ()) and "deletionTimestamp" not in meta

    async def _internal_error(self, exc: Exception) -> float | None:
        """Report an unexpected exception of the loop; the delay before the next try, or None
        when the loop should end (the task is finished, gone, or has now failed).
        """  # noqa: D205
        log.error(
            "%s/%s: internal error: %s: %s",
            self.namespace, self.name, type(exc).__name__, exc, exc_info=exc,
        )  # fmt: skip
        try:
            obj = await self.ctx.kube.get_task(self.namespace, self.name)
            if obj is None:
                return None
            report = internal_error(minimal_state(obj), f"{type(exc).__name__}: {exc}", now())
            if report.patch:
                await self._record(obj, report.patch, report.event)
        except Conflict:
            return 0.0
        except Exception as e:  # the API server is unwell too: try again later
            log.warning("%s/%s: could not report the error: %s", self.namespace, self.name, e)
            return INTERNAL_ERROR_RETRY
        return report.delay

    async def _turn(self, stopped: kopf.DaemonStopped, wake: asyncio.Event) -> bool:
        """One wake-up: read, decide, act. True when the loop should end."""
        wake.clear()
        logs.at_step(None)  # lines of this turn are about a step only once one runs
        obj = self._known()
        if obj is None:
            found = await self.ctx.kube.get_task(self.namespace, self.name)
            if found is None:
                return True
            obj = self.obj = lean(found)
        uid = obj["metadata"]["uid"]
        if self.uid is not None and uid != self.uid:
            return True  # deleted and created again: the new one has a loop of its own
        if not await self._owned(obj, stopped, wake):
            return False
        if self.store is None:
            store = TranscriptStore(self.ctx.kube, self.namespace, self.name, uid)
            st = obj.get("status") or {}
            if st.get("startTime") or st.get("forkedFrom"):  # else nothing is stored yet
                items = await self.ctx.loader.items(self.namespace, uid)
                await store.load(items)  # kept once loaded: a failed load is retried next turn
            self.store = store
        if not self.waited and self._before_finalizer(obj):
            # kopf adds its finalizer as the loop starts: a write now would meet a 409. Let
            # the watch bring the object with it first (once; a write after that is fenced).
            self.waited = True
            await sleep(stopped, wake, FINALIZER_WAIT)
            return False
        try:
            state = await to_state(obj, self.store, self.ctx)
        except ValidationError as e:
            await self._invalid(obj, e)
            return True
        action = decide(state, now())
        if state.status.start_time is None and _starts(action):
            if state.spec.fork_from is not None and not await self.fork.ready(
                obj, state, self.store, self._record, stopped, wake
            ):
                return False  # copied, recorded or waited: decide again
            held = await self.limits.admission(obj, state, self._record, stopped, wake)
            if held is None:
                return False  # queued: woken when a place may be free
            if held:
                action = _with(action, {"slots": list(held)})
        if isinstance(action, Execute):  # the trace's ids, written with the intent (if new)
            action = _with(action, tracing.new_context(state.status))
        if isinstance(action, Execute) and action.step.kind == "LLM":
            wait = self.limits.pace(state)
            if wait > 0:  # the model's request rate: this request's turn comes later
                await sleep(stopped, wake, wait)
                return False
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
            await self._mark(apply(state, action.patch), obj)
        elif isinstance(action, Wait):
            await self._mark(state, obj)
            log.info("%s/%s: %s", self.namespace, self.name, action.why)
            await sleep(stopped, wake, action.seconds(now()))
        elif isinstance(action, Execute):
            await self._execute(obj, state, action, stopped)
        return False

    async def _owned(
        self, obj: dict[str, Any], stopped: kopf.DaemonStopped, wake: asyncio.Event
    ) -> bool:
        """Whether this replica may act on the task now (``core.shard``); if it may not, wait
        for a change of the task or of the replicas (releasing the task first if it is ours but
        assigned elsewhere now).
        """  # noqa: D205
        self.claim = None
        verdict = self.ctx.verdict(obj["metadata"]["uid"], obj.get("status"))
        if isinstance(verdict, shard.Act):
            if self.idle is not None or verdict.claim is not None:
                # Another replica may have run steps meanwhile: read the transcript again.
                if self.idle is not None:
                    log.info("%s/%s: this replica runs it now", self.namespace, self.name)
                self.store = None
            self.claim, self.idle = verdict.claim, None
            return True
        if isinstance(verdict, shard.Release):
            log.info("%s/%s: %s", self.namespace, self.name, verdict.why)
            with contextlib.suppress(Conflict):
                await self.write(obj, verdict.patch)
            return False
        if verdict.why != self.idle:
            log.info("%s/%s: left alone: %s", self.namespace, self.name, verdict.why)
            self.idle = verdict.why
        await sleep(stopped, wake, verdict.recheck)
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
        if action.event is not None:  # recorded meanwhile: the step does not wait for it
            sent = asyncio.ensure_future(self._event(obj, action.event))
            self.events.add(sent)
            sent.add_done_callback(self.events.discard)
            sent.add_done_callback(_outcome_retrieved)
        # The attempt sees the task as now stored: started, with what it resolved at start.
        state = apply(state, action.intent)
        await self._mark(state, obj)
        logs.at_step(step, attempt)
        if action.event is not None and action.event.reason == "Interrupted":
            metrics.rerun(step.kind)
        log.info("%s/%s: %s, attempt %d", self.namespace, self.name, describe(step), attempt)
        runs = [(step, action.result), *((x, None) for x in action.extras)]
        work = asyncio.create_task(self._batch(state, runs, action.timeout))
        stop = asyncio.create_task(until_stopped(stopped))
        fence = asyncio.create_task(self.ctx.fenced(self.namespace, self.name))
        try:
            await asyncio.wait({work, stop, fence}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            fence.cancel()
            if not work.done():  # deleted, shutting down, or no longer ours: stop at once
                work.cancel()
                why = fence.result() if fence.done() and not fence.cancelled() else "stopped"
                metrics.interrupted([s.kind for s, _ in runs], why)
                log.info(
                    "%s/%s: %s interrupted (%s)", self.namespace, self.name, describe(step), why
                )
                with contextlib.suppress(asyncio.CancelledError):
                    await work
        if work.cancelled():
            return
        failures = work.result()
        if any(f is not None for f in failures):
            await self._failed(obj, state, action, failures)
            return
        await faults.checkpoint(f"after-append:{step.kind}:{step.iteration}")

    async def _batch(
        self, state: TaskState, runs: list[tuple[Step, str | None]], limit: float
    ) -> list[Failure | None]:
        """Run the step and the calls alongside it at once; each stores its own result. Their
        failures, in order (None: stored). Any other error is raised once all have finished,
        so that nothing keeps running behind the loop's back.
        """  # noqa: D205

        async def one(step: Step, result: str | None) -> Failure | None:
            if step is not runs[0][0]:  # a call alongside: always its first attempt here
                logs.at_step(step)
                log.info("%s/%s: %s, alongside", self.namespace, self.name, describe(step))
            try:
                with tracing.attempt(state, step) as span:
                    entry = await self._attempt(state, step, limit, result)
                    span.done(entry)
                # For people (kubectl agenttask steps): the attempt that produced it (``state``
                # is as stored with the intent; a call alongside is on its first), and since when.
                attempt = state.status.attempts if step is runs[0][0] else 1
                entry = entry.model_copy(
                    update={"attempts": attempt, "start_time": step.start_time}
                )
                await self._append(entry, step)
            except StepFailed as e:
                metrics.step_failed(step.kind, e.failure)
                return e.failure
            metrics.step_stored(step.kind, entry.is_error)
            return None

        outcomes = await asyncio.gather(*(one(s, r) for s, r in runs), return_exceptions=True)
        for o in outcomes:
            if isinstance(o, BaseException):
                raise o
        return [o for o in outcomes if not isinstance(o, BaseException)]

    async def _failed(
        self,
        obj: dict[str, Any],
        state: TaskState,
        action: Execute,
        failures: list[Failure | None],
    ) -> None:
        """Record the failures of a batch in one status write (see ``on_batch_failure``)."""
        for step, failure in zip((action.step, *action.extras), failures, strict=True):
            if failure is not None and step.kind == "LLM" and failure.status == 429:
                self.ctx.cool(self.ctx.pace_key(state)[0], failure.retry_after)
            if failure is not None:
                attempt = action.attempt if step is action.step else 1
                logs.at_step(step, attempt)
                log.warning(
                    "%s/%s: %s, attempt %d failed: %s",
                    self.namespace, self.name, describe(step), attempt, failure.message,
                )  # fmt: skip
        jitters = [random.random() for _ in failures]  # noqa: S311
        failed = on_batch_failure(state, action, failures, now(), jitters)
        metrics.retries([s.kind for s in (action.step, *action.extras)], failures, failed.patch)
        with contextlib.suppress(Conflict):
            await self._record(obj, failed.patch, failed.event)

    async def _mark(self, state: TaskState, obj: dict[str, Any]) -> None:
        """Mark the AgentToolApprovals that ``state`` (as stored now) applied or refused."""
        for m in approvals.marks(state):
            await approval.mark(self.ctx.kube, self.namespace, m, obj)

    async def _attempt(
        self, state: TaskState, step: Step, limit: float, result: str | None = None
    ) -> Entry:
        """One attempt. Whatever goes wrong in it is a failed attempt (StepFailed), never an
        exception that ends the loop: an unexpected one is recorded with its type and message
        and retried like any transient failure. ``result``: a denied call's tool error, stored
        as its result without running it.
        """  # noqa: D205
        if result is not None:
            return self._tool_entry(state, step, tools.ToolResult(result, True))
        try:
            async with asyncio.timeout(limit):
                if step.kind == "LLM":
                    return await self._llm(state, step)
                return await self._tool(state, step)
        except TimeoutError:
            msg = f"{describe(step)} did not finish within {limit:g}s"
            raise StepFailed(Failure(msg, True, "StepTimeout")) from None
        except (StepFailed, asyncio.CancelledError):
            raise
        except Exception as e:
            log.exception("%s/%s: %s raised", self.namespace, self.name, describe(step))
            msg = f"unexpected {type(e).__name__}: {e}"
            raise StepFailed(Failure(msg, True, "InternalError")) from e

    async def _credentials(self, state: TaskState, access: Access) -> llm.Credentials:
        """The key ``access`` names: the task's own Secret (read from the task's namespace,
        nowhere else), the operator's default (only for its own endpoint), or none.
        """  # noqa: D205
        if access.secret is not None:
            ref = access.secret
            try:
                key = await self.ctx.kube.read_secret_key(state.namespace, ref.name, ref.key)
            except SecretError as e:
                raise StepFailed(Failure(str(e), True, "SecretUnavailable")) from None
            return llm.Credentials(key)
        settings = self.ctx.settings
        if access.credential == "OperatorDefault":
            if settings.default_api_key is None:  # decide() refuses such tasks before this
                msg = "no API key: set spec.model.apiKeySecretRef or the operator's OPENAI_API_KEY"
                raise StepFailed(Failure(msg, False, "ModelCredentialsMissing"))
            return llm.Credentials(
                settings.default_api_key, settings.organization, settings.project
            )
        return llm.Credentials()

    async def _llm(self, state: TaskState, step: Step) -> Entry:
        spec = state.spec
        model = state.model
        if model is None:  # decide() fails such tasks before any request
            raise StepFailed(Failure("the model could not be resolved", False, "InternalError"))
        access = model_access(model, state.policy)
        reply = await llm.chat(
            model,
            base_url=access.base_url,
            credentials=await self._credentials(state, access),
            messages=request_messages(spec, state.transcript),
            tools=tools.definitions(spec.tools, self.ctx.builtins)
            + await self.mcp.definitions(state.status.resolved_tools or ()),
            timeout_seconds=model.request_timeout_seconds or spec.step_timeout_seconds,
            iteration=step.iteration,
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
        mcp_tools = {t.name: t for t in state.status.resolved_tools or ()}
        resolved = mcp_tools.get(tools.call_name(call))
        if resolved is not None:
            arguments = tools.call_arguments(call)
            result = (
                arguments
                if isinstance(arguments, tools.ToolResult)
                else await self.mcp.call(resolved, arguments, ctx.idempotency_key)
            )
        else:
            result = await tools.execute(
                call, state.spec.tools, self.ctx.builtins, ctx, self.ctx.session
            )
        return self._tool_entry(state, step, result)

    def _tool_entry(self, state: TaskState, step: Step, result: tools.ToolResult) -> Entry:
        """A tool call's result as stored, with who decided that it ran, if anyone did."""
        return Entry(
            kind="Tool",
            iteration=step.iteration,
            tool_call_id=step.tool_call_id,
            message={"role": "tool", "tool_call_id": step.tool_call_id, "content": result.content},
            is_error=result.is_error,
            time=now(),
            approval=approvals.note(state, step),
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

        task = asyncio.ensure_future(both())
        # If we are cancelled meanwhile, nobody awaits the write any more: retrieve its outcome
        # (e.g. a Conflict) here, so that asyncio never logs "exception was never retrieved".
        task.add_done_callback(_outcome_retrieved)
        await asyncio.shield(task)

    async def _invalid(self, obj: dict[str, Any], err: ValidationError) -> None:
        if (obj.get("status") or {}).get("phase") in TERMINAL_PHASES:
            return
        msg = f"spec is invalid: {err.errors()[0].get('msg', err)}"
        state = minimal_state(obj)
        patch = finish(state, now(), succeeded=False, reason="InvalidSpec", message=msg)
        try:
            await self.write(obj, patch)
        except Conflict:
            return
