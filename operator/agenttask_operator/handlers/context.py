"""What every task's loop shares: API client, HTTP session, built-ins, operator settings."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import kopf

from agenttask_operator.core import pace, queue, shard
from agenttask_operator.effects.kube import Kube, service_account_namespace
from agenttask_operator.effects.lease import DEFAULT_DURATION, Membership
from agenttask_operator.effects.registry import BuiltinTool
from agenttask_operator.effects.slots import Slots
from agenttask_operator.effects.transcript import Loader
from agenttask_operator.models import (
    SDK_DEFAULT_BASE_URL,
    TERMINAL_PHASES,
    OperatorPolicy,
    TaskState,
)


def _list(value: str | None) -> tuple[str, ...]:
    return tuple(x.strip() for x in (value or "").split(",") if x.strip())


@dataclass(frozen=True)
class Settings:
    """Operator-wide settings, from flags and environment. The key is never printed."""

    workspace: Path | None = None
    default_base_url: str | None = None
    default_api_key: str | None = field(default=None, repr=False)
    organization: str | None = None
    project: str | None = None
    allowed_hosts: tuple[str, ...] = ()
    builtin_namespaces: tuple[str, ...] = ()
    replica: str = "operator"  # this replica's identity (its Pod's name), unique among replicas
    lease_namespace: str = "default"  # where the replicas' Leases are
    replica_group: str = "agenttask-operator"  # the replicas that share the tasks
    lease_seconds: float = DEFAULT_DURATION
    max_tasks_per_namespace: int | None = None  # running tasks per namespace; None: no limit
    max_requests_per_minute: int | None = None  # per endpoint and model, for inline models
    metrics_port: int | None = None  # where /metrics is served; None: nowhere

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """``AGENTTASK_WORKSPACE``, ``OPENAI_BASE_URL``, ``OPENAI_API_KEY``, ``OPENAI_ORG_ID``,
        ``OPENAI_PROJECT_ID``, ``AGENTTASK_ALLOWED_HOSTS``, ``AGENTTASK_BUILTIN_NAMESPACES``;
        the replica: ``AGENTTASK_REPLICA_ID`` (else ``POD_NAME``, else the host name),
        ``POD_NAMESPACE`` (else the service account's namespace, else ``default``),
        ``AGENTTASK_REPLICA_GROUP``, ``AGENTTASK_LEASE_SECONDS``; the limit of running tasks
        per namespace: ``AGENTTASK_MAX_TASKS_PER_NAMESPACE``; LLM requests per minute per
        endpoint and model, for tasks with inline models: ``AGENTTASK_MAX_REQUESTS_PER_MINUTE``;
        the port of ``/metrics``: ``AGENTTASK_METRICS_PORT`` (unset or 0: none).
        """  # noqa: D205
        ws = environ.get("AGENTTASK_WORKSPACE")
        lease = float(environ.get("AGENTTASK_LEASE_SECONDS") or DEFAULT_DURATION)
        if lease < 3:
            raise ValueError(f"AGENTTASK_LEASE_SECONDS must be at least 3, not {lease:g}")
        per_ns = _count(environ, "AGENTTASK_MAX_TASKS_PER_NAMESPACE")
        rpm = _count(environ, "AGENTTASK_MAX_REQUESTS_PER_MINUTE")
        metrics_port = (environ.get("AGENTTASK_METRICS_PORT") or "0").strip() or "0"
        if not metrics_port.isdigit() or int(metrics_port) > 65535:
            raise ValueError(f"AGENTTASK_METRICS_PORT={metrics_port!r}: not a port number")
        return cls(
            workspace=Path(ws).resolve() if ws else None,
            default_base_url=environ.get("OPENAI_BASE_URL") or None,
            default_api_key=(environ.get("OPENAI_API_KEY") or "").strip() or None,
            organization=environ.get("OPENAI_ORG_ID") or None,
            project=environ.get("OPENAI_PROJECT_ID") or None,
            allowed_hosts=_list(environ.get("AGENTTASK_ALLOWED_HOSTS")),
            builtin_namespaces=_list(environ.get("AGENTTASK_BUILTIN_NAMESPACES")),
            replica=(environ.get("AGENTTASK_REPLICA_ID") or environ.get("POD_NAME"))
            or socket.gethostname(),
            lease_namespace=environ.get("POD_NAMESPACE") or _own_namespace(),
            replica_group=environ.get("AGENTTASK_REPLICA_GROUP") or "agenttask-operator",
            lease_seconds=lease,
            max_tasks_per_namespace=per_ns,
            max_requests_per_minute=rpm,
            metrics_port=int(metrics_port) or None,
        )

    @property
    def policy(self) -> OperatorPolicy:
        """What ``decide`` needs to know of these settings (never the key itself)."""
        return OperatorPolicy(
            default_base_url=self.default_base_url or SDK_DEFAULT_BASE_URL,
            default_key=self.default_api_key is not None,
            allowed_hosts=self.allowed_hosts,
            builtin_namespaces=self.builtin_namespaces,
        )


def _count(environ: Mapping[str, str], name: str) -> int | None:
    """A positive whole number from the environment (unset or empty: None)."""
    raw = (environ.get(name) or "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{name}={raw!r}: must be a whole number, at least 1")
    return int(raw)


def _own_namespace() -> str:
    return service_account_namespace() or "default"


def scrub_openai_environment(environ: MutableMapping[str, str] = os.environ) -> list[str]:
    """Remove every ``OPENAI_*`` variable once :class:`Settings` has read them.

    The openai SDK reads ``OPENAI_API_KEY``, ``OPENAI_ORG_ID``, ``OPENAI_CUSTOM_HEADERS`` … at
    every client construction and sends them to whatever base URL the client has. The operator
    hands each request its credential explicitly, so nothing may be picked up from the
    environment behind its back. Returns the names removed.
    """
    names: Iterable[str] = [k for k in environ if k.startswith("OPENAI_")]
    removed = sorted(names)
    for name in removed:
        del environ[name]
    return removed


@dataclass
class Context:
    """Shared by all task loops of one operator process."""

    kube: Kube
    session: aiohttp.ClientSession
    builtins: dict[str, BuiltinTool]
    settings: Settings
    wakeups: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)
    loader: Loader = field(init=False)  # transcripts of loops that start together, one LIST
    # For each task with a loop: how many loops hold its wake-up event, and the newest object
    # the watch delivered since the loop last looked (so that a loop never GETs per turn).
    holders: dict[tuple[str, str], int] = field(default_factory=dict)
    latest: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    # The replicas (None: this replica acts alone, as in unit tests) and, per task whose step
    # runs, the event set when the watch shows that another replica has taken the task.
    membership: Membership | None = None
    fences: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)
    # Every task the watch showed (uid → what the queue needs), and the loops waiting for a
    # place in a concurrency limit, per namespace: woken when a task there ends or goes.
    tasks: dict[str, queue.Seen] = field(default_factory=dict)
    # namespace → (namespace, name) → (creationTimestamp, name, the largest limit it waits on)
    queued: dict[str, dict[tuple[str, str], tuple[str, str, int]]] = field(default_factory=dict)
    slots: Slots = field(init=False)
    # Request pacing per model (``core.pace``) and the AgentModels' maxRequestsPerMinute, as
    # the watch shows them (namespace, name) → limit.
    paces: dict[tuple[str, str, str], pace.Pace] = field(default_factory=dict)
    model_rpm: dict[tuple[str, str], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Share one transcript loader."""
        self.loader = Loader(self.kube)
        self.slots = Slots(self.kube)

    def pace_key(self, state: TaskState) -> tuple[tuple[str, str, str], int | None]:
        """The model a task's requests are paced under, and its requests per minute."""
        ref = state.spec.model.model_ref
        if ref is not None:
            return ("AgentModel", state.namespace, ref.name), self.model_rpm.get(
                (state.namespace, ref.name)
            )
        base = state.spec.model.base_url or self.settings.policy.default_base_url
        return ("endpoint", base, state.spec.model.name), self.settings.max_requests_per_minute

    def reserve(self, key: tuple[str, str, str], per_minute: int | None) -> float:
        """Book a request of model ``key``: the monotonic time at which it may go."""
        replicas = len(self.membership.members()) if self.membership is not None else 1
        now = time.monotonic()
        self.paces[key], at = pace.reserve(
            self.paces.get(key, pace.Pace()), now, pace.share(per_minute, replicas)
        )
        return at

    def cool(self, key: tuple[str, str, str], retry_after: float | None) -> None:
        """A request of model ``key`` met a 429: its next requests wait (``core.pace``)."""
        self.paces[key] = pace.cool(self.paces.get(key, pace.Pace()), time.monotonic(), retry_after)

    def observe(self, kind: str | None, obj: Mapping[str, Any]) -> None:
        """Keep the index of tasks up to date with a watch event; when a task ends or goes,
        wake the loops queued in its namespace (a place may have become free).
        """  # noqa: D205
        found = queue.seen(obj)
        if found is None:
            return
        before = self.tasks.get(found.uid)
        if kind == "DELETED":
            self.tasks.pop(found.uid, None)
            freed = True
        else:
            self.tasks[found.uid] = found
            freed = found.ended and (before is None or not before.ended)
        waiting = self.queued.get(found.namespace)
        if freed and waiting:
            # Only the oldest can take a free place: as many as the largest limit, not all.
            first = sorted(waiting.items(), key=lambda kv: kv[1])
            for key, _ in first[: max(limit for _, _, limit in waiting.values())]:
                event = self.wakeups.get(key)
                if event is not None:
                    event.set()

    def wakeup(self, namespace: str, name: str) -> asyncio.Event:
        """The event set whenever the object changes (so that waits end early)."""
        return self.wakeups.setdefault((namespace, name), asyncio.Event())

    def hold(self, namespace: str, name: str) -> asyncio.Event:
        """A task's loop starts: its wake-up event, kept until :meth:`release`."""
        key = (namespace, name)
        self.holders[key] = self.holders.get(key, 0) + 1
        return self.wakeup(namespace, name)

    def release(self, namespace: str, name: str) -> None:
        """A task's loop ended: forget its event and what was left for it, if no loop is left."""
        key = (namespace, name)
        left = self.holders.pop(key, 1) - 1
        if left > 0:
            self.holders[key] = left
        else:
            self.wakeups.pop(key, None)
            self.latest.pop(key, None)

    def notify(self, namespace: str, name: str, obj: dict[str, Any] | None = None) -> None:
        """A task changed (``obj``: as the watch delivered it): wake its loop, if it has one."""
        key = (namespace, name)
        event = self.wakeups.get(key)
        if event is None or key not in self.holders:
            return
        if obj is not None:
            self.latest[key] = obj
            fence = self.fences.get(key)
            if fence is not None and shard.fenced_out(self.settings.replica, obj.get("status")):
                fence.set()
        event.set()

    def wake_all(self) -> None:
        """Wake every loop (the membership changed: who runs which object may have too)."""
        for event in self.wakeups.values():
            event.set()

    def assigned_here(self, uid: str) -> bool:
        """Whether this replica is the one that should look after the object ``uid`` (for
        objects that need no fence, e.g. the readiness checks of AgentModels and
        AgentToolServers: at worst two replicas check one at the same moment).
        """  # noqa: D205
        m = self.membership
        if m is None:
            return True
        now = m.clock()
        return m.holding(now) and shard.assigned(uid, m.members(now)) == self.settings.replica

    def verdict(self, uid: str, status: Mapping[str, Any] | None) -> shard.Verdict:
        """What this replica may do with the task ``uid`` whose status is ``status``."""
        if self.membership is None:
            return shard.Act()
        m = self.membership
        now = m.clock()
        owner = shard.Owner.from_status(status)
        wait = None
        if owner.replica is not None and owner.replica != self.settings.replica:
            wait = m.owner_wait(owner.replica, now)
        found = shard.verdict(
            uid,
            self.settings.replica,
            m.holding(now),
            m.members(now),
            owner,
            terminal=(status or {}).get("phase") in TERMINAL_PHASES,
            owner_live=None if wait is None else wait > 0,
        )
        if isinstance(found, shard.Idle) and wait:  # look again once it counts as gone
            return replace(found, recheck=wait)
        return found

    async def fenced(self, namespace: str, name: str) -> str:
        """Return (why) once this replica must stop the task's step in flight: another replica
        took the task, or this one no longer holds its Lease with margin.
        """  # noqa: D205
        key = (namespace, name)
        fence = self.fences[key] = asyncio.Event()
        waits = {asyncio.create_task(fence.wait())}
        if self.membership is not None:
            waits.add(asyncio.create_task(self.membership.revoked.wait()))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
            if self.fences.get(key) is fence:
                del self.fences[key]
        return "another replica took the task" if fence.is_set() else "the Lease was not renewed"


MCP_IMPORT = """``effects.mcp`` (the MCP SDK) is imported where it is first used, not at start:
it costs about 26 MiB of memory, which an operator whose tasks use no MCP server never needs."""


async def until_stopped(stopped: kopf.DaemonStopped) -> None:
    """Return once the daemon is told to stop."""
    await stopped.wait()


async def sleep(stopped: kopf.DaemonStopped, wake: asyncio.Event, seconds: float | None) -> None:
    """Sleep for ``seconds`` (None: forever) or until stopped or woken by a change of the object."""
    waiters = {asyncio.create_task(until_stopped(stopped)), asyncio.create_task(wake.wait())}
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
