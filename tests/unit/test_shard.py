"""core.shard: assignment by rendezvous hashing, and who may act on a task when."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest

from agenttask_operator.core.shard import (
    Act,
    Idle,
    Observed,
    Owner,
    Release,
    assigned,
    fenced_out,
    live_members,
    owner_wait,
    verdict,
)

UIDS = [str(uuid.UUID(int=i * 7919 + 13)) for i in range(3000)]


def test_assignment_is_deterministic_and_spread() -> None:
    members = {"a", "b", "c"}
    first = [assigned(u, members) for u in UIDS]
    assert first == [assigned(u, ["c", "b", "a"]) for u in UIDS]  # order does not matter
    counts = Counter(first)
    assert set(counts) == members
    assert all(800 < n < 1200 for n in counts.values()), counts  # ~1/3 each
    assert assigned("x", []) is None
    assert assigned("x", ["solo"]) == "solo"


@pytest.mark.parametrize("before", [{"a"}, {"a", "b"}, {"a", "b", "c"}, {"a", "b", "c", "d"}])
def test_a_join_or_a_leave_moves_only_the_tasks_of_that_member(before: set[str]) -> None:
    joined = before | {"new"}
    moved = [u for u in UIDS if assigned(u, before) != assigned(u, joined)]
    assert all(assigned(u, joined) == "new" for u in moved)  # only to the one that joined
    share = len(moved) / len(UIDS)
    assert abs(share - 1 / len(joined)) < 0.05, share
    # and when it leaves again, exactly those move back where they were
    assert [u for u in UIDS if assigned(u, joined) != assigned(u, before)] == moved


def test_leases_are_live_for_their_duration_after_they_were_seen_to_change() -> None:
    leases = {"a": Observed(100.0, 15.0), "b": Observed(90.0, 15.0)}
    assert live_members(leases, 104.9) == {"a", "b"}
    assert live_members(leases, 105.0) == {"a"}
    assert live_members(leases, 115.0) == frozenset()


def mine_and_theirs(me: str, other: str) -> tuple[str, str]:
    """A uid assigned to ``me`` and one assigned to ``other`` when both are members."""
    ours = next(u for u in UIDS if assigned(u, {me, other}) == me)
    theirs = next(u for u in UIDS if assigned(u, {me, other}) == other)
    return ours, theirs


def test_a_free_task_is_taken_with_the_next_write_under_a_new_epoch() -> None:
    assert verdict("t", "a", True, frozenset({"a"}), Owner()) == Act(
        {"owner": {"replica": "a", "epoch": 1}}
    )
    # released by its owner (replica unset, epoch kept): the next epoch
    assert verdict("t", "a", True, frozenset({"a"}), Owner(None, 4)) == Act(
        {"owner": {"replica": "a", "epoch": 5}}
    )


def test_its_own_task_costs_no_write() -> None:
    assert verdict("t", "a", True, frozenset({"a"}), Owner("a", 3)) == Act()


def test_nothing_is_done_without_the_lease() -> None:
    for owner in (Owner(), Owner("a", 1), Owner("b", 1)):
        v = verdict("t", "a", False, frozenset({"a"}), owner)
        assert isinstance(v, Idle) and "does not hold its Lease" in v.why
    assert isinstance(verdict("t", "a", False, frozenset(), Owner(), terminal=True), Idle)


def test_a_task_of_a_live_replica_is_left_alone_until_released_or_expired() -> None:
    ours, _ = mine_and_theirs("a", "b")
    live = frozenset({"a", "b"})
    v = verdict(ours, "a", True, live, Owner("b", 2))  # b still runs it (drains first)
    assert isinstance(v, Idle) and "b runs it" in v.why
    # b's Lease expired: a takes it over, epoch + 1
    assert verdict(ours, "a", True, frozenset({"a"}), Owner("b", 2)) == Act(
        {"owner": {"replica": "a", "epoch": 3}}
    )
    # b released it
    assert verdict(ours, "a", True, live, Owner(None, 2)) == Act(
        {"owner": {"replica": "a", "epoch": 3}}
    )


def test_a_task_assigned_elsewhere_is_released_by_its_owner_and_not_taken_by_others() -> None:
    _, theirs = mine_and_theirs("a", "b")
    live = frozenset({"a", "b"})
    v = verdict(theirs, "a", True, live, Owner("a", 7))
    assert isinstance(v, Release)
    assert v.patch == {"owner": {"replica": None, "epoch": 7}}
    for owner in (Owner(), Owner(None, 7), Owner("b", 8), Owner("gone", 2)):
        v2 = verdict(theirs, "a", True, live, owner)
        assert isinstance(v2, Idle) and "assigned to b" in v2.why


def test_finished_tasks_are_never_taken_only_acted_on_by_their_assigned_replica() -> None:
    ours, theirs = mine_and_theirs("a", "b")
    live = frozenset({"a", "b"})
    assert verdict(ours, "a", True, live, Owner("b", 1), terminal=True) == Act()
    assert isinstance(verdict(theirs, "a", True, live, Owner("a", 1), terminal=True), Idle)


def test_the_holder_counts_as_a_member_even_before_it_sees_its_own_lease() -> None:
    assert verdict("t", "a", True, frozenset(), Owner()) == Act(
        {"owner": {"replica": "a", "epoch": 1}}
    )


def test_owner_is_read_leniently() -> None:
    assert Owner.from_status(None) == Owner()
    assert Owner.from_status({"owner": "x"}) == Owner()
    assert Owner.from_status({"owner": {"replica": "", "epoch": True}}) == Owner()
    assert Owner.from_status({"owner": {"replica": "a", "epoch": 4}}) == Owner("a", 4)


def test_fenced_out_when_the_watch_shows_another_owner() -> None:
    assert fenced_out("a", {"owner": {"replica": "b", "epoch": 2}})
    assert not fenced_out("a", {"owner": {"replica": "a", "epoch": 2}})
    assert not fenced_out("a", {"owner": {"epoch": 2}})
    assert not fenced_out("a", None)


def test_an_owner_whose_lease_was_never_seen_is_presumed_alive_for_a_lease_duration() -> None:
    """A replica that joined after our last look at the Leases may already run a task: its
    missing Lease is no proof of death until we have looked for as long as a Lease lasts.
    """
    # Seen: until its Lease expires, as seen by us.
    assert owner_wait(Observed(10.0, 15.0), False, None, 20.0, 15.0) == 5.0
    assert owner_wait(Observed(10.0, 15.0), False, None, 26.0, 15.0) == 0.0
    # Seen to go (deleted on a clean exit): at once.
    assert owner_wait(None, True, None, 20.0, 15.0) == 0.0
    # Never seen: one duration from when we first met it as an owner.
    assert owner_wait(None, False, None, 20.0, 15.0) == 15.0
    assert owner_wait(None, False, 20.0, 31.0, 15.0) == 4.0
    assert owner_wait(None, False, 20.0, 35.0, 15.0) == 0.0


def test_a_presumed_live_owner_keeps_a_task_from_its_assigned_replica() -> None:
    uid, me = "uid-1", "b"
    owner = Owner("a", 1)  # a's Lease is not among b's members (not seen yet)
    assert verdict(uid, me, True, frozenset({me}), owner) == Act(
        {"owner": {"replica": me, "epoch": 2}}
    )  # the default: not a member, so gone
    found = verdict(uid, me, True, frozenset({me}), owner, owner_live=True)
    assert isinstance(found, Idle)
    assert verdict(uid, me, True, frozenset({me}), owner, owner_live=False) == Act(
        {"owner": {"replica": me, "epoch": 2}}
    )
