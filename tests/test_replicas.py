"""Several replicas share the tasks, one writer per task: Leases, handover, fencing, kills.

Real operator processes (two replicas, short Leases) against the local control plane; the fake
HTTP tool is the ledger: it records every delivery of every call with its idempotency key and
when it arrived, and each delivery takes ``TOOL_SECONDS`` to run. A key delivered again before
its earlier delivery finished would be a step run twice at once.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from localcluster import LocalCluster

from chaos import overlapping
from fakeopenai import HANG, FakeServer, Reply, ToolCall
from kubehelpers import create_task, eventually, get_task, settled, transcript, wait_phase
from operatorproc import OperatorProcess, operator_env, replica_processes
from scenarios import three_step_model
from test_crash_resume import spec_for

pytestmark = pytest.mark.cluster

LEASE_SECONDS = 6  # renewed every 2 s; a replica stops acting 4 s after its last renewal
TOOL_SECONDS = 0.4
LONG_LEASE = 60


def slow_echo(call: ToolCall, n: int) -> Reply:
    return Reply(body=f"echo {call.body['arguments']['x']}", delay=TOOL_SECONDS)


@pytest.fixture
def replicas(
    cluster: LocalCluster,
    crd: Path,
    namespace: str,
    fake: FakeServer,
    workspace: Path,
    tmp_path: Path,
) -> Iterator[dict[str, OperatorProcess]]:
    """Two replicas of one installation (same group, Leases in the test namespace)."""
    env = operator_env(fake.base_url, workspace, tmp_path / "faults")
    env["AGENTTASK_LEASE_SECONDS"] = str(LEASE_SECONDS)
    procs = replica_processes(
        cluster.kubeconfig, namespace, tmp_path, env, ["replica-a", "replica-b"]
    )
    yield procs
    for proc in procs.values():
        proc.stop()


async def all_finished(
    api: client.ApiClient, namespace: str, names: list[str], within: float
) -> list[dict[str, Any]]:
    async def done() -> list[dict[str, Any]] | None:
        objs = [await get_task(api, namespace, n) for n in names]
        phases = [(o.get("status") or {}).get("phase") for o in objs]
        return objs if all(p in ("Succeeded", "Failed") for p in phases) else None

    return await eventually(done, within=within, what=f"{len(names)} tasks to finish")


async def test_two_replicas_share_tasks_and_survive_kills(
    api: client.ApiClient, namespace: str, fake: FakeServer, replicas: dict[str, OperatorProcess]
) -> None:
    """Small chaos: 20 tasks, 2 replicas, 5 SIGKILLs and one clean exit spread over them."""
    fake.llm = three_step_model
    fake.tools["echo"] = slow_echo
    for proc in replicas.values():
        proc.start()
    for proc in replicas.values():
        proc.wait_started()
    names = [f"crash-{i:02d}" for i in range(20)]
    for name in names:
        await create_task(api, namespace, name, spec_for(fake))
    rng = random.Random(13)  # noqa: S311 (the timing of the kills, not a secret)
    kills = Counter[str]()
    for i in range(6):
        await asyncio.sleep(rng.uniform(1.0, 2.5))
        victim = sorted(replicas)[i % 2]  # kills spread over both
        proc = replicas[victim]
        if i == 3:
            proc.stop()  # a clean exit (scaled away): its Lease is deleted, its tasks move at once
        else:
            proc.kill()
            kills[victim] += 1
        await asyncio.sleep(rng.uniform(0.5, 1.5))
        proc.start()
    objs = await all_finished(api, namespace, names, within=240)

    bad = {o["metadata"]["name"]: o["status"] for o in objs if o["status"]["phase"] != "Succeeded"}
    assert bad == {}
    owners = Counter(o["status"]["owner"]["replica"] for o in objs)
    for o in objs:
        uid = o["metadata"]["uid"]
        assert o["status"]["result"] == "all three calls done"
        entries = await transcript(api, namespace, uid)
        assert [e["kind"] for e in entries] == ["LLM", "Tool", "Tool", "LLM", "Tool", "LLM"]
        mine = [d for d in fake.deliveries if (d.idempotency_key or "").startswith(uid)]
        assert {d.idempotency_key for d in mine} == {f"{uid}:call_{c}" for c in "abc"}
    # No key was delivered while an earlier delivery of it still ran: no step ran twice at once.
    assert overlapping(fake.deliveries, TOOL_SECONDS) == []
    # Every redelivery is explained by a kill: at most one per call in flight per kill.
    per_key = Counter(d.idempotency_key for d in fake.deliveries)
    redelivered = sum(n - 1 for n in per_key.values())
    assert redelivered <= sum(kills.values()) * 20 * 2
    # Both replicas ran tasks. (Whether a task changed hands depends on what was in flight at
    # the clean exit; test_a_clean_exit_hands_its_tasks_over_at_once proves the handover.)
    logs = {name: proc.output() for name, proc in replicas.items()}
    for name, text in logs.items():
        assert "taken by {'replica': '" + name in text, f"{name} never took a task"
    print(
        f"\nchaos (small): 20 tasks, kills {dict(kills)}, final owners {dict(owners)}, "
        f"deliveries {len(fake.deliveries)} for {len(per_key)} calls ({redelivered} again), "
        f"LLM requests {len(fake.requests)} for 60 steps"
    )


async def test_a_frozen_replica_is_fenced_out_and_its_task_taken_over(
    api: client.ApiClient, namespace: str, fake: FakeServer, replicas: dict[str, OperatorProcess]
) -> None:
    """SIGSTOP the replica running a task while its tool call hangs (a partitioned node):
    the other replica takes the task once the frozen one's Lease expired and finishes it; the
    frozen one, thawed, stops the step it had in flight and writes nothing more to the task.
    """
    fake.llm = three_step_model

    def hang_once(call: ToolCall, n: int) -> Reply:
        if call.body["toolCallId"] == "call_c" and n == 1:
            return HANG
        return Reply(body=f"echo {call.body['arguments']['x']}")

    fake.tools["echo"] = hang_once
    for proc in replicas.values():
        proc.start()
    for proc in replicas.values():
        proc.wait_started()
    await create_task(api, namespace, "crash", spec_for(fake))

    async def hanging() -> bool:
        return any(d.body["toolCallId"] == "call_c" for d in fake.deliveries)

    await eventually(hanging, within=60, what="call_c to be delivered")
    st = (await get_task(api, namespace, "crash"))["status"]
    holder, epoch = st["owner"]["replica"], st["owner"]["epoch"]
    other = next(n for n in replicas if n != holder)
    frozen = replicas[holder].proc
    assert frozen is not None
    frozen.send_signal(signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        obj = await wait_phase(api, namespace, "crash", within=60)
        taken_after = time.monotonic() - stopped_at
    finally:
        frozen.send_signal(signal.SIGCONT)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    assert obj["status"]["owner"] == {"replica": other, "epoch": epoch + 1}
    # Not before the frozen replica's Lease could have expired.
    assert taken_after >= LEASE_SECONDS - 1
    keys = [d.idempotency_key for d in fake.deliveries if d.body["toolCallId"] == "call_c"]
    assert len(keys) == 2 and len(set(keys)) == 1  # redelivered once, under the same key

    async def thawed_and_fenced() -> bool:
        return any(
            "(call_c)" in line and " interrupted (" in line
            for line in replicas[holder].output().splitlines()
        )

    await eventually(thawed_and_fenced, within=30, what="the thawed replica to stop its step")
    # kopf removes its finalizer from the ended task (a metadata write by either replica, found
    # by CI landing after the phase was read): compare with the task at rest from then on.
    rv = (await settled(api, namespace, "crash"))["metadata"]["resourceVersion"]
    await asyncio.sleep(LEASE_SECONDS / 2)
    after = await get_task(api, namespace, "crash")
    assert after["status"] == obj["status"]  # the thawed replica changed nothing
    assert after["metadata"]["resourceVersion"] == rv  # and nobody wrote anything more
    assert len(fake.deliveries) == 3 + 1


async def test_a_clean_exit_hands_its_tasks_over_at_once(
    api: client.ApiClient, namespace: str, fake: FakeServer, replicas: dict[str, OperatorProcess]
) -> None:
    """SIGTERM (a rollout, a drain): the replica interrupts its steps and deletes its Lease;
    the other replica takes its tasks at once, well before the Lease could have expired.
    """
    fake.llm = three_step_model
    gate = asyncio.Event()

    def held(call: ToolCall, n: int) -> Reply:  # every call waits until the gate opens
        return Reply(body=f"echo {call.body['arguments']['x']}", until=gate.is_set, delay=120)

    fake.tools["echo"] = held
    for proc in replicas.values():  # Leases of a minute: expiry would take that long
        proc.start(AGENTTASK_LEASE_SECONDS=str(LONG_LEASE))
    for proc in replicas.values():
        proc.wait_started()
    # Each must have seen the other's Lease: an owner whose Lease a replica never saw is
    # presumed alive for a whole Lease duration (core.shard.owner_wait), so its clean exit
    # would not be seen as one. (With Leases of a minute, a replica looks every 8 s.)
    for proc in replicas.values():
        proc.wait_replicas(replicas)
    names = [f"t-{i}" for i in range(8)]
    for name in names:
        await create_task(api, namespace, name, spec_for(fake))

    async def owners() -> dict[str, str] | None:
        objs = [await get_task(api, namespace, n) for n in names]
        found = {
            o["metadata"]["name"]: (o.get("status") or {}).get("owner", {}).get("replica")
            for o in objs
        }
        return found if all(found.values()) else None

    before = await eventually(owners, within=60, what="every task to be taken")
    leaving = max(set(before.values()), key=list(before.values()).count)
    staying = next(n for n in replicas if n != leaving)
    moved = sorted(n for n, r in before.items() if r == leaving)
    t0 = time.monotonic()
    await asyncio.to_thread(replicas[leaving].stop)

    async def all_moved() -> bool:
        now = await owners()
        return now is not None and all(now[n] == staying for n in moved)

    # Well within the Lease's duration: the handover did not wait for it to expire.
    await eventually(all_moved, within=LONG_LEASE * 0.75, what="the tasks to move")
    took = time.monotonic() - t0
    assert "released Lease" in replicas[leaving].output()
    gate.set()
    objs = await all_finished(api, namespace, names, within=120)
    assert {o["status"]["phase"] for o in objs} == {"Succeeded"}
    print(f"\nclean exit: {len(moved)} tasks moved in {took:.1f}s (Lease: {LONG_LEASE}s)")
