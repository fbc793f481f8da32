"""Concurrency limits: which slots a task needs to start, who is ahead of it, and admission.

A *slot* is one limit on running tasks: ``spec.maxConcurrentTasks`` of the AgentModel a task
names, or the operator's cap per namespace. A task holds a place in each of its slots from its
start until it ends. The places are kept in the API server — one Lease per namespace,
``agenttask-slots``, with an annotation per slot listing its holders, changed only with a
resourceVersion precondition (``effects.slots``) — so the count survives restarts and holds
across replicas exactly. (One Lease of a fixed name: the operator's RBAC may then read and
update that Lease only, never another component's.) Tasks over a limit stay ``Pending`` with
reason ``Queued``, naming the limit that holds them, and start in creation order: a task
takes a free place only when no task waiting for the same slot was created before it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agenttask_operator.core import fork
from agenttask_operator.core.status import condition
from agenttask_operator.models import TaskState

LEASE = "agenttask-slots"  # in each namespace whose tasks are under a limit
NAMESPACE_SLOT = "agenttask.dev/slots.namespace"
MODEL_SLOT_PREFIX = "agenttask.dev/slots.model."
_NAME_ROOM = 63 - len("slots.model.")  # an annotation name is at most 63 characters


def model_slot(name: str) -> str:
    """The annotation of an AgentModel's slot (its name, or a digest when that is too long)."""
    if len(name) <= _NAME_ROOM:
        return MODEL_SLOT_PREFIX + name
    return MODEL_SLOT_PREFIX + "h-" + hashlib.sha256(name.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Slot:
    """A limit on running tasks: the annotation that counts it, its size, and whom it covers."""

    key: str
    limit: int
    what: str  # for messages: "AgentModel gpt's maxConcurrentTasks=2"
    model_ref: str | None = None  # None: every task of the namespace


@dataclass(frozen=True)
class Seen:
    """A task as the watch last showed it (every replica sees every task)."""

    uid: str
    namespace: str
    name: str
    created: str  # metadata.creationTimestamp (RFC 3339, sorts as time)
    model_ref: str | None
    waiting: bool  # not started, not ended, not suspended: it waits to start
    ended: bool = False  # Succeeded or Failed (or being deleted): it holds no place any more


def slots_for(
    model_ref: str | None, model_limit: int | None, namespace_limit: int | None
) -> tuple[Slot, ...]:
    """The slots a task needs: its AgentModel's limit, if any, and the namespace's, if any."""
    out = []
    if model_ref is not None and model_limit is not None:
        what = f"AgentModel {model_ref}'s maxConcurrentTasks={model_limit}"
        out.append(Slot(model_slot(model_ref), model_limit, what, model_ref))
    if namespace_limit is not None:
        what = f"the operator's limit of {namespace_limit} running tasks per namespace"
        out.append(Slot(NAMESPACE_SLOT, namespace_limit, what))
    return tuple(out)


def seen(obj: Mapping[str, Any]) -> Seen | None:
    """What the queue needs of a watched task object (None: not readable)."""
    meta = obj.get("metadata") or {}
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    uid, name, namespace = meta.get("uid"), meta.get("name"), meta.get("namespace")
    if not (isinstance(uid, str) and isinstance(name, str) and isinstance(namespace, str)):
        return None
    ref = ((spec.get("model") or {}).get("modelRef") or {}).get("name")
    ended = status.get("phase") in ("Succeeded", "Failed") or "deletionTimestamp" in meta
    waiting = not status.get("startTime") and not ended and not spec.get("suspend")
    waiting = waiting and status.get("reason") != fork.WAITING  # not in a queue yet
    return Seen(
        uid, namespace, name, str(meta.get("creationTimestamp") or ""),
        ref if isinstance(ref, str) else None, waiting, ended,
    )  # fmt: skip


def covers(slot: Slot, task: Seen, namespace: str) -> bool:
    """Whether ``slot`` (in ``namespace``) counts ``task``."""
    return task.namespace == namespace and (
        slot.model_ref is None or slot.model_ref == task.model_ref
    )


def ahead(slot: Slot, me: Seen, tasks: Iterable[Seen]) -> int:
    """How many tasks waiting for ``slot`` were created before ``me`` (by time, then name)."""
    mine = (me.created, me.name)
    return sum(
        1
        for t in tasks
        if t.uid != me.uid and t.waiting and covers(slot, t, me.namespace)
        and (t.created, t.name) < mine
    )  # fmt: skip


@dataclass(frozen=True)
class Admission:
    """The outcome of asking for a place: ``holders`` to write (None: nothing to write)."""

    admitted: bool
    holders: dict[str, str] | None = None
    why: str = ""


GRACE_SECONDS = 60.0  # a holder the watch has not shown yet is kept at least this long


def holder(name: str, now: datetime) -> str:
    """A holder's entry: its task's name and when it took its place."""
    return f"{name} {now.strftime('%Y-%m-%dT%H:%M:%SZ')}"


def _since(entry: str) -> datetime | None:
    try:
        return datetime.strptime(entry.rsplit(" ", 1)[-1], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def kept(holders: Mapping[str, str], running: Mapping[str, bool], now: datetime) -> dict[str, str]:
    """The holders that still hold a place: those the watch shows running (not ended), and
    those it does not show at all that took their place less than ``GRACE_SECONDS`` ago (the
    watch may not have delivered a task another replica just admitted). A holder that ended,
    or is gone for longer, left its place behind.
    """  # noqa: D205
    out = {}
    for uid, entry in holders.items():
        if uid in running:
            if running[uid]:
                out[uid] = entry
            continue
        since = _since(entry)
        if since is not None and (now - since).total_seconds() < GRACE_SECONDS:
            out[uid] = entry
    return out


def admit(
    slot: Slot,
    holders: Mapping[str, str],
    me: Seen,
    before: int,
    running: Mapping[str, bool],
    now: datetime,
) -> Admission:
    """Ask ``slot`` (held by ``holders``: uid → entry) for a place for ``me``, with ``before``
    tasks ahead of it; ``running``: for each task the watch shows, whether it has not ended.
    """  # noqa: D205
    if me.uid in holders:
        return Admission(True)
    still = kept(holders, running, now)
    if slot.limit - len(still) > before:
        return Admission(True, still | {me.uid: holder(me.name, now)})
    return Admission(False, still if still != dict(holders) else None, waiting_for(slot))


def waiting_for(slot: Slot) -> str:
    """The message of a task queued for ``slot`` (the same while it waits: one write)."""
    return f"Queued: waiting for a place under {slot.what}"


def release(holders: Mapping[str, str], uid: str) -> dict[str, str] | None:
    """``holders`` without ``uid`` (None: it held no place)."""
    if uid not in holders:
        return None
    return {k: v for k, v in holders.items() if k != uid}


def queued(state: TaskState, why: str, now: datetime) -> dict[str, Any] | None:
    """The status of a task that waits for a place (None: it says so already)."""
    st = state.status
    if st.reason == "Queued" and st.message == why:
        return None
    return {
        "phase": "Pending",
        "reason": "Queued",
        "message": why,
        "observedGeneration": state.generation,
        "conditions": [condition(state, "Unknown", "Queued", why, now)],
    }
