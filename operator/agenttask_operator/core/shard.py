"""Which replica runs which task, and when it may act: pure maths, no clock, no I/O.

Replicas are the holders of live Leases (``effects.lease``). A task is *assigned* by rendezvous
hashing of its uid over the live members: each member scores ``sha256(member/uid)`` and the
highest wins, so when a member joins or leaves only the tasks it wins or held move (~1/N of
them), and every replica computes the same answer from the same membership without talking to
the others.

Assignment only says who *should* run a task. Who *does* is recorded in the task's status
(``status.owner``: the replica and an epoch that grows with every change of owner), and that
record is the fence: a replica acts on a task only if it is the assigned replica, it holds its
own Lease with margin, and the task is its own already, or free — never owned, released by its
owner, or owned by a replica whose Lease has expired. It takes a free task in the same
resourceVersion-fenced write as its next step's intent, so a single replica pays no extra write,
and two replicas that disagree about the membership for a moment cannot both take a task: the
second write meets a 409, and the re-read shows the other owner. A replica that is no longer the
assigned one releases the task between two steps (drains), and only then may the next one take it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Observed:
    """A member's Lease as this replica last saw it change: at ``seen`` (seconds on this
    replica's monotonic clock; the Lease's own timestamps come from another machine's clock and
    are only compared for change, as client-go's leader election does), for ``duration``.
    """  # noqa: D205

    seen: float
    duration: float

    def live(self, now: float) -> bool:
        """Whether the Lease may still be held: it changed less than its duration ago."""
        return now < self.seen + self.duration


def live_members(leases: Mapping[str, Observed], now: float) -> frozenset[str]:
    """The members whose Leases may still be held at ``now``."""
    return frozenset(m for m, o in leases.items() if o.live(now))


def owner_wait(
    observed: Observed | None,
    departed: bool,
    unknown_since: float | None,
    now: float,
    duration: float,
) -> float:
    """Seconds for which another replica that owns a task must still be presumed to run it.

    Its Lease seen: until that Lease expires. Seen to go (deleted: a clean exit): none. Never
    seen: one Lease duration from ``unknown_since``, when this replica first met that owner —
    a replica that has just joined takes tasks as soon as its Lease exists, possibly after our
    last look at the Leases, so "no Lease" is not proof of death until we have looked for as
    long as a Lease lasts.
    """
    if observed is not None:
        return max(0.0, observed.seen + observed.duration - now)
    if departed:
        return 0.0
    since = now if unknown_since is None else unknown_since
    return max(0.0, since + duration - now)


def score(member: str, uid: str) -> int:
    """``member``'s rendezvous score for task ``uid``."""
    return int.from_bytes(hashlib.sha256(f"{member}/{uid}".encode()).digest()[:8], "big")


def assigned(uid: str, members: Iterable[str]) -> str | None:
    """The member that should run task ``uid`` (None when there are none)."""
    return max(members, key=lambda m: (score(m, uid), m), default=None)


@dataclass(frozen=True)
class Owner:
    """``status.owner``: the replica that runs the task (None: released or never taken) and the
    epoch of that ownership, which grows by one whenever a replica takes the task.
    """  # noqa: D205

    replica: str | None = None
    epoch: int = 0

    @classmethod
    def from_status(cls, status: Mapping[str, Any] | None) -> Owner:
        """Read ``status.owner`` of a task object (absent or malformed: free, epoch 0)."""
        raw = (status or {}).get("owner")
        if not isinstance(raw, Mapping):
            return cls()
        replica, epoch = raw.get("replica"), raw.get("epoch")
        return cls(
            replica if isinstance(replica, str) and replica else None,
            epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else 0,
        )


@dataclass(frozen=True)
class Act:
    """Run the task. ``claim``: merge into the next status write, which takes the task."""

    claim: dict[str, Any] | None = None


@dataclass(frozen=True)
class Release:
    """Write ``patch`` (the task is ours but assigned elsewhere now), then leave it alone."""

    patch: dict[str, Any]
    why: str


@dataclass(frozen=True)
class Idle:
    """Leave the task alone until it or the membership changes (or ``recheck`` seconds pass)."""

    why: str
    recheck: float | None = None


Verdict = Act | Release | Idle


def verdict(
    uid: str,
    me: str,
    holding: bool,
    members: frozenset[str],
    owner: Owner,
    terminal: bool = False,
    owner_live: bool | None = None,
) -> Verdict:
    """What replica ``me`` may do with task ``uid`` now.

    ``holding``: whether ``me`` holds its own Lease with margin (renewed recently enough that
    it cannot have expired for anyone else); ``members``: the replicas whose Leases are live;
    ``owner``: the task's ``status.owner``. A finished task is never taken (nothing is written
    to it any more): only its assigned replica acts on it (deletes it once its TTL is over).
    ``owner_live``: whether another owner must be presumed alive (see :func:`owner_wait`);
    default: whether it is a member.
    """
    if not holding:
        return Idle(f"{me} does not hold its Lease")
    target = assigned(uid, members | {me})
    if terminal:
        return Act() if target == me else Idle(f"assigned to {target}")
    if owner.replica == me:
        if target == me:
            return Act()
        return Release(
            {"owner": {"replica": None, "epoch": owner.epoch}},
            f"released to {target} (assigned to it now), epoch {owner.epoch}",
        )
    if target != me:
        return Idle(f"assigned to {target}")
    live = owner.replica in members if owner_live is None else owner_live
    if owner.replica is not None and live:
        return Idle(f"{owner.replica} runs it until it releases it or its Lease expires")
    return Act({"owner": {"replica": me, "epoch": owner.epoch + 1}})


def fenced_out(me: str, status: Mapping[str, Any] | None) -> bool:
    """Whether the task (its ``status`` as the watch delivered it) is now another replica's."""
    replica = Owner.from_status(status).replica
    return replica is not None and replica != me
