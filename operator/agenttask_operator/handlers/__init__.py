"""kopf handlers: parse objects into models, call the core, apply effects. Nothing else.

One kopf daemon per non-terminal AgentTask runs :class:`~.runner.TaskLoop`. kopf starts it when
the task appears and again for every non-terminal task when the operator starts, which is how
a task resumes after a crash; terminal tasks get no daemon, so they are never touched again.
The other kinds register their own handlers (``agentmodel``, ``toolserver``, ``approval``,
``schedule``: one module each).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import kopf

from agenttask_operator.effects import logs, tracing
from agenttask_operator.effects.kube import FINALIZER, GROUP, PLURAL, VERSION, Kube, connect
from agenttask_operator.effects.lease import Membership
from agenttask_operator.effects.registry import load_builtins
from agenttask_operator.handlers import agentmodel, approval, schedule, toolserver
from agenttask_operator.handlers.context import Context, Settings, scrub_openai_environment
from agenttask_operator.handlers.runner import TaskLoop, lean
from agenttask_operator.models import TERMINAL_PHASES

log = logging.getLogger(__name__)

STOP_WAIT = 5.0  # seconds a stopped task loop has to return before kopf cancels it


async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Connect to the API, load the built-in tools, configure kopf."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.watching.server_timeout = 300
    # A daemon told to stop (its task ended, was deleted, or the operator exits) finishes its
    # write in flight and returns: kopf waits for that (it returns as soon as the daemon has),
    # instead of cancelling it after a few event-loop cycles and logging a WARNING for what is
    # a normal end. Cancellation stays the fallback (``cancellation_timeout``).
    settings.background.instant_exit_timeout = STOP_WAIT
    builtins = load_builtins()
    tracing.setup()  # only with an OTLP endpoint in the environment
    memo.ctx = Context(
        kube=Kube(await connect()),
        session=aiohttp.ClientSession(),
        builtins=builtins,
        settings=memo.get("settings") or _settings_from_env(),
    )
    s = memo.ctx.settings
    ctx = memo.ctx
    ctx.membership = Membership(
        ctx.kube,
        s.replica,
        s.lease_namespace,
        group=s.replica_group,
        duration=s.lease_seconds,
        on_change=ctx.wake_all,
    )
    await ctx.membership.start()
    log.info(
        "replica %s: Lease %s/%s (%gs), group %s",
        s.replica, s.lease_namespace, ctx.membership.name, s.lease_seconds, s.replica_group,
    )  # fmt: skip
    log.info(
        "agenttask-operator started; watching %s.%s/%s; built-in tools: %s (namespaces: %s); "
        "workspace: %s; default endpoint: %s (%s); allowed hosts: %s",
        PLURAL, GROUP, VERSION, ", ".join(sorted(builtins)) or "none",
        ", ".join(s.builtin_namespaces) or "all", s.workspace, s.policy.default_base_url,
        "with a default key" if s.default_api_key else "no default key",
        ", ".join(s.allowed_hosts) or "all",
    )  # fmt: skip


def _settings_from_env() -> Settings:
    settings = Settings.from_env()
    scrub_openai_environment()
    return settings


async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    """Close connections."""
    ctx: Context | None = memo.get("ctx")
    if ctx is not None:
        if ctx.membership is not None:  # every loop has stopped: let the others take over
            await ctx.membership.stop()
        await ctx.session.close()
        await ctx.kube.api.close()
    await asyncio.to_thread(tracing.shutdown)  # export the spans left


def needs_loop(spec: kopf.Spec, status: kopf.Status, **_: Any) -> bool:
    """Tasks that have not ended get a loop; ended ones only if they wait for their TTL."""
    return (
        status.get("phase") not in TERMINAL_PHASES
        or spec.get("ttlSecondsAfterFinished") is not None
    )


async def wake(
    namespace: str | None, name: str | None, event: kopf.RawEvent, memo: Any, **_: Any
) -> None:
    """Any change of a task ends its loop's wait (e.g. spec.suspend flipped during a backoff)
    and hands the loop the object as watched, so that the loop need not read it again.
    """  # noqa: D205
    ctx: Context | None = memo.get("ctx")
    if ctx is not None and namespace and name:
        raw = event.get("object")
        if isinstance(raw, dict):
            ctx.observe(event.get("type"), raw)
        obj = raw if event.get("type") in ("ADDED", "MODIFIED") else None
        ctx.notify(namespace, name, lean(obj) if isinstance(obj, dict) else None)


async def agent_loop(
    *,
    namespace: str | None,
    name: str,
    uid: str | None,
    body: kopf.Body,
    stopped: kopf.DaemonStopped,
    memo: Any,
    **_: Any,
) -> None:
    """Run the task's loop until it ends, starting from the object as kopf last saw it."""
    assert namespace is not None  # AgentTask is namespaced
    loop = TaskLoop(memo.ctx, namespace, name, uid)
    with logs.about("AgentTask", namespace, name, uid):
        await loop.run(stopped, lean(dict(body)))


def register() -> None:
    """Register the handlers with kopf's default registry."""
    kopf.on.startup()(startup)
    kopf.on.cleanup()(cleanup)
    kopf.on.event(GROUP, VERSION, PLURAL, id="wake")(wake)
    kopf.daemon(
        GROUP,
        VERSION,
        PLURAL,
        id="agent-loop",
        when=needs_loop,
        cancellation_backoff=STOP_WAIT,
        cancellation_timeout=10.0,
        backoff=5.0,
    )(agent_loop)
    agentmodel.register()
    toolserver.register()
    approval.register()
    schedule.register()
