"""The places of concurrency limits, kept in a Lease per namespace (``core.queue``).

The Lease ``agenttask-slots`` lists each slot's holders in an annotation of its own
(``agenttask.dev/slots.namespace``, ``agenttask.dev/slots.model.<name>``; JSON: uid →
"name time"). It is only ever changed with a resourceVersion precondition (a PUT of what was
read), so two replicas admitting tasks at the same moment cannot both take the last place: the
second meets a 409, reads again, and finds the slot full.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from agenttask_operator.core import queue
from agenttask_operator.effects.kube import Conflict, Kube

log = logging.getLogger(__name__)

TRIES = 8
LABEL = "agenttask.dev/slots"


def _holders(lease: Mapping[str, Any] | None, key: str) -> dict[str, str]:
    raw = (((lease or {}).get("metadata") or {}).get("annotations") or {}).get(key)
    try:
        found = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def _body(
    namespace: str, lease: dict[str, Any] | None, key: str, holders: dict[str, str]
) -> dict[str, Any]:
    meta = dict((lease or {}).get("metadata") or {"name": queue.LEASE, "namespace": namespace})
    meta["labels"] = dict(meta.get("labels") or {}) | {LABEL: "true"}
    meta["annotations"] = dict(meta.get("annotations") or {}) | {
        key: json.dumps(holders, sort_keys=True, separators=(",", ":"))
    }
    meta.pop("managedFields", None)
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": meta,
        "spec": (lease or {}).get("spec") or {},
    }


class Slots:
    """Take and give back places in slots."""

    def __init__(self, kube: Kube) -> None:
        """Use ``kube`` for the Leases."""
        self.kube = kube

    async def acquire(
        self,
        namespace: str,
        slot: queue.Slot,
        me: queue.Seen,
        before: int,
        running: Mapping[str, bool],
        now: datetime,
    ) -> queue.Admission:
        """A place in ``slot`` for ``me``, or why not (``core.queue.admit``)."""
        for _ in range(TRIES):
            lease = await self.kube.get_lease(namespace, queue.LEASE)
            answer = queue.admit(slot, _holders(lease, slot.key), me, before, running, now)
            if answer.holders is None:
                return answer
            try:
                await self.kube.write_lease(
                    namespace, _body(namespace, lease, slot.key, answer.holders)
                )
            except Conflict:
                continue  # someone else changed it meanwhile: read again
            return answer
        return queue.Admission(False, None, queue.waiting_for(slot))

    async def release(self, namespace: str, keys: list[str], uid: str) -> None:
        """Give back ``uid``'s places in the slots ``keys`` (those it holds), in one write."""
        for _ in range(TRIES):
            lease = await self.kube.get_lease(namespace, queue.LEASE)
            if lease is None:
                return
            body, changed = lease, False
            for key in keys:
                holders = queue.release(_holders(body, key), uid)
                if holders is not None:
                    body, changed = _body(namespace, body, key, holders), True
            if not changed:
                return
            try:
                await self.kube.write_lease(namespace, body)
            except Conflict:
                continue
            return
        log.warning("%s/%s: could not release %s (it frees itself)", namespace, queue.LEASE, uid)
