"""``AgentToolApproval``: wake the task a decision names; read and mark decisions for its loop.

The decision itself is taken by the task's own loop (``core.approval``), the only writer of
the task's status: this module only

- wakes that loop when an approval is created (a watch event; nothing is written), so a
  decision applies at once instead of at the next timer;
- reads the approvals that name a task (one LIST with a field selector on ``spec.task``), only
  while one of its calls waits for a decision;
- marks an approval's ``Accepted`` condition: ``True``/``Applied`` once the task has recorded
  it, ``False`` with the reason when it is refused (e.g. ``ArgumentsDigestMismatch``).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from agenttask_operator.core.approval import Mark
from agenttask_operator.core.status import ts
from agenttask_operator.effects.kube import GROUP, VERSION, Kube
from agenttask_operator.handlers.context import Context
from agenttask_operator.models.approval import (
    ACCEPTED,
    KIND,
    PLURAL,
    AgentToolApprovalSpec,
    Decision,
)

log = logging.getLogger(__name__)


def parse_time(value: str) -> datetime:
    """A Kubernetes timestamp (``2026-11-25T20:01:11Z``) as an aware datetime."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def to_decision(obj: dict[str, Any]) -> Decision | None:
    """What ``core.approval`` reads of one AgentToolApproval (None: not a valid one)."""
    meta = obj.get("metadata") or {}
    try:
        spec = AgentToolApprovalSpec.model_validate(obj.get("spec") or {})
        created = parse_time(meta["creationTimestamp"])
    except (ValidationError, KeyError, ValueError):
        return None
    conditions = (obj.get("status") or {}).get("conditions") or []
    accepted = next((c.get("reason") for c in conditions if c.get("type") == ACCEPTED), None)
    return Decision(meta["name"], meta["uid"], created, spec, accepted)


async def decisions(kube: Kube, namespace: str, task: str) -> tuple[Decision, ...]:
    """The AgentToolApprovals in ``namespace`` that name the task ``task``."""
    found = await kube.list_objects(PLURAL, namespace, f"spec.task={task}")
    parsed = (to_decision(o) for o in found)
    return tuple(d for d in parsed if d is not None)


async def mark(kube: Kube, namespace: str, m: Mark, task: dict[str, Any] | None = None) -> None:
    """Write ``m`` as the approval's ``Accepted`` condition (and an Event on it when refused).

    Best effort: the task has recorded what counts already; a mark that fails is written again
    the next time the approvals are read, or stays missing (it is only information).
    """
    now = ts(datetime.now(UTC))
    condition = {
        "type": ACCEPTED,
        "status": m.status,
        "reason": m.reason,
        "message": m.message[:1024],
        "lastTransitionTime": now,
    }
    try:
        obj = await kube.patch_custom_status(PLURAL, namespace, m.name, {"conditions": [condition]})
        if obj is not None and m.status == "False":
            await kube.object_event(obj, "Warning", m.reason, m.message, now)
            if task is not None:
                msg = f"AgentToolApproval {m.name} refused: {m.message}"
                await kube.object_event(task, "Warning", "ApprovalRefused", msg, now)
    except Exception as e:  # information only: the task's status is what counts
        log.warning("%s/%s: could not mark the approval: %s", namespace, m.name, e)


async def wake_task(
    namespace: str | None, spec: kopf.Spec, event: kopf.RawEvent, memo: Any, **_: Any
) -> None:
    """A new approval (or one found at start): wake the loop of the task it names."""
    ctx: Context | None = memo.get("ctx")
    task = spec.get("task")
    new = event.get("type") in (None, "ADDED")
    if ctx is not None and namespace and isinstance(task, str) and new:
        ctx.notify(namespace, task)


def register() -> None:
    """Register the handlers with kopf's default registry."""
    kopf.on.event(GROUP, VERSION, PLURAL, id=f"{KIND}-wake")(wake_task)
