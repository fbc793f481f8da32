"""The replicas' membership: each holds a ``coordination.k8s.io/v1`` Lease of its own and renews it.

Every replica of one installation holds the Lease ``agenttask-operator-<identity>`` in its own
namespace, labelled ``agenttask.dev/replicas=<group>``, and renews it every ``duration * 2/15``
seconds. The live Leases of the group are the membership (``core.shard`` assigns the tasks over
it). Timing follows client-go's leader election and keeps its defaults' ratios (15 s lease, 10 s
renew deadline, a try every 2 s): another replica counts a Lease as live for ``duration``
after it last *saw it change* (by its own monotonic clock, so that clock skew between nodes
does not matter); the holder stops acting on tasks when it has not renewed for
``duration * 2/3`` (``holding`` turns False and ``revoked`` is set: every step in flight is
interrupted), which leaves a third of the duration as a margin before anyone may take its
tasks. A renewal may take until that deadline, so an API server that does not answer for up to
``duration * 8/15`` (8 s of 15) interrupts nothing. A replica that exits cleanly deletes its
Lease, so the others take its tasks over at once; one that is killed is waited for until its
Lease expires.

The identity must be unique among the replicas that run at the same time and should survive a
restart of the same replica: the Pod's name (the chart passes it) does both — a container
restarted in the same Pod takes its own Lease and its own tasks back at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from agenttask_operator.core.shard import Observed, live_members, owner_wait
from agenttask_operator.effects.kube import Conflict, Kube

log = logging.getLogger(__name__)

LABEL = "agenttask.dev/replicas"
DEFAULT_DURATION = 15.0  # seconds; client-go's default LeaseDuration


def lease_name(identity: str) -> str:
    """The Lease's name for a replica identity (a DNS subdomain: lower case, at most 253)."""
    safe = re.sub(r"[^a-z0-9.-]+", "-", identity.lower()).strip("-.") or "replica"
    return f"agenttask-operator-{safe}"[:253].rstrip("-.")


def _micro_time(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Membership:
    """This replica's Lease and what it knows of the others'."""

    def __init__(
        self,
        kube: Kube,
        identity: str,
        namespace: str,
        group: str = "agenttask-operator",
        duration: float = DEFAULT_DURATION,
        on_change: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Configure; :meth:`start` acquires the Lease."""
        self.kube, self.identity, self.namespace, self.group = kube, identity, namespace, group
        self.duration = duration
        self.renew_every = duration * 2 / 15  # client-go's RetryPeriod: 2 s of 15 s
        self.deadline = duration * 2 / 3  # act only while the last renewal is younger than this
        self.on_change, self.clock = on_change, clock
        self.name = lease_name(identity)
        self.renewed_at: float | None = None  # monotonic start of the last successful renewal
        self.leases: dict[str, Observed] = {}
        self._seen: dict[str, str] = {}  # member -> resourceVersion of its Lease, last seen
        self._departed: set[str] = set()  # members whose Lease we saw and then saw deleted
        self._unknown: dict[str, float] = {}  # task owners whose Lease we never saw: first met
        self._rv: str | None = None  # of our own Lease, after our last write
        self._transitions = 0
        self._members: frozenset[str] = frozenset()
        self.revoked = asyncio.Event()  # set while we do not hold our Lease with margin
        self.revoked.set()
        self._task: asyncio.Task[None] | None = None

    def holding(self, now: float | None = None) -> bool:
        """Whether this replica holds its Lease with margin: it may start a step."""
        now = self.clock() if now is None else now
        return self.renewed_at is not None and now < self.renewed_at + self.deadline

    def members(self, now: float | None = None) -> frozenset[str]:
        """The live members (this replica included while it holds its Lease)."""
        now = self.clock() if now is None else now
        live = live_members(self.leases, now) - {self.identity}
        return live | {self.identity} if self.holding(now) else live

    def owner_wait(self, replica: str, now: float | None = None) -> float:
        """Seconds for which ``replica``, another replica named as a task's owner, must still
        be presumed to run it (``core.shard.owner_wait``).
        """  # noqa: D205
        now = self.clock() if now is None else now
        observed, departed = self.leases.get(replica), replica in self._departed
        if observed is None and not departed:
            self._unknown.setdefault(replica, now)
        return owner_wait(observed, departed, self._unknown.get(replica), now, self.duration)

    async def start(self, within: float = 30.0) -> None:
        """Acquire the Lease (retrying for up to ``within`` seconds), then keep renewing it."""
        give_up = self.clock() + within
        while True:
            await self._tick()
            if self.holding() or self.clock() > give_up:
                break
            await asyncio.sleep(1.0)
        if not self.holding():
            log.warning("could not acquire Lease %s/%s yet; retrying", self.namespace, self.name)
        self._task = asyncio.create_task(self._run(), name="lease")

    async def stop(self) -> None:
        """Stop renewing and delete the Lease, so that the others take our tasks over at once.
        Call it only once no step of ours runs any more.
        """  # noqa: D205
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.renewed_at = None
        if self._rv is not None:
            try:
                await self.kube.delete_lease(self.namespace, self.name, self._rv)
                log.info("released Lease %s/%s", self.namespace, self.name)
            except Exception as e:  # it expires by itself
                log.warning("could not delete Lease %s/%s: %s", self.namespace, self.name, e)

    async def _run(self) -> None:
        step = min(1.0, self.renew_every / 2)
        next_renewal = self.clock() + self.renew_every
        while True:
            await asyncio.sleep(max(0.0, min(step, next_renewal - self.clock())))
            # First see whether the Lease has gone stale meanwhile (e.g. this process was
            # frozen): then every step in flight stops before the Lease is renewed again.
            self._check()
            if self.clock() >= next_renewal:
                next_renewal = self.clock() + self.renew_every
                await self._tick()

    async def _tick(self) -> None:
        """Renew our Lease, read everyone's, and tell the loops if anything changed."""
        started = self.clock()
        # A renewal may take until the deadline: one that hangs while the API server is frozen
        # for a few seconds still counts (from when it was sent) once the server answers.
        left = self.deadline - (started - self.renewed_at) if self.renewed_at else self.deadline
        try:
            async with asyncio.timeout(max(self.renew_every, left)):
                await self._renew(started)
                await self._refresh()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.warning("Lease %s/%s: %s", self.namespace, self.name, e or type(e).__name__)
        self._check()

    async def _renew(self, started: float) -> None:
        now = datetime.now(UTC)
        body: dict[str, Any] = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": {LABEL: self.group},
            },
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": max(1, round(self.duration)),
                "renewTime": _micro_time(now),
                "leaseTransitions": self._transitions,
            },
        }
        if self.renewed_at is None:
            body["spec"]["acquireTime"] = _micro_time(now)
        if self._rv is not None:
            body["metadata"]["resourceVersion"] = self._rv
        try:
            written = await self.kube.write_lease(self.namespace, body)
        except Conflict:
            # Gone, changed, or there already (a restart of ours): take it as it is now.
            found = [
                x
                for x in await self.kube.list_leases(self.namespace, f"{LABEL}={self.group}")
                if x["metadata"]["name"] == self.name
            ]
            self._rv = found[0]["metadata"]["resourceVersion"] if found else None
            if found:
                spec = found[0].get("spec") or {}
                self._transitions = int(spec.get("leaseTransitions") or 0)
                if spec.get("holderIdentity") != self.identity:
                    self._transitions += 1
                body["spec"]["leaseTransitions"] = self._transitions
                body["metadata"]["resourceVersion"] = self._rv
            else:
                body["metadata"].pop("resourceVersion", None)
            written = await self.kube.write_lease(self.namespace, body)
        self._rv = written["metadata"]["resourceVersion"]
        self.renewed_at = started

    async def _refresh(self) -> None:
        now = self.clock()
        seen: dict[str, str] = {}
        for lease in await self.kube.list_leases(self.namespace, f"{LABEL}={self.group}"):
            spec = lease.get("spec") or {}
            holder = spec.get("holderIdentity")
            if not holder or holder == self.identity:
                continue
            rv = lease["metadata"]["resourceVersion"]
            seen[holder] = rv
            self._unknown.pop(holder, None)
            self._departed.discard(holder)
            if self._seen.get(holder) != rv:  # renewed (or new to us) now
                duration = float(spec.get("leaseDurationSeconds") or self.duration)
                self.leases[holder] = Observed(now, duration)
        for gone in set(self.leases) - set(seen):  # deleted: its holder left cleanly
            del self.leases[gone]
            self._departed.add(gone)
        self._seen = seen

    def _check(self) -> None:
        """Set or clear ``revoked``; call ``on_change`` when the membership or that changed."""
        holding = self.holding()
        if holding and self.revoked.is_set():
            self.revoked.clear()
            log.info("holding Lease %s/%s", self.namespace, self.name)
        elif not holding and not self.revoked.is_set():
            self.revoked.set()
            log.warning(
                "Lease %s/%s not renewed for %.0fs: stopping every step in flight",
                self.namespace, self.name, self.deadline,
            )  # fmt: skip
        members = self.members()
        if members != self._members:
            log.info("replicas: %s", ", ".join(sorted(members)) or "none")
            self._members = members
            self.on_change()
