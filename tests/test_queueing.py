"""Concurrency limits and queueing: AgentModel maxConcurrentTasks and the per-namespace limit.

Real operator processes (two replicas for the AgentModel limit) against the local control
plane. Each task's model answer waits until the test lets it go, so the test decides when a
task ends and watches which tasks run meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from localcluster import LocalCluster

from agenttask_operator.core.shard import assigned
from fakeopenai import FakeServer, Reply, completion, error
from kubehelpers import create_object, create_task, eventually, get_task, task_gone, wait_phase
from operatorproc import OperatorProcess, operator_env, replica_processes

pytestmark = pytest.mark.cluster

REPLICAS = ["r0", "r1"]


async def delete_and_wait(api: client.ApiClient, namespace: str, name: str) -> None:
    """Delete AgentTask ``name`` and wait until it is gone."""
    co = client.CustomObjectsApi(api)
    await co.delete_namespaced_custom_object(
        "agenttask.dev", "v1alpha1", namespace, "agenttasks", name
    )
    await eventually(
        lambda: task_gone(api, namespace, name), within=30, what=f"{name} to be deleted"
    )


class Gated:
    """A model whose answer to task N waits until ``open(N)``."""

    def __init__(self) -> None:
        self.opened: set[str] = set()
        self.lock = threading.Lock()

    def open(self, name: str) -> None:
        with self.lock:
            self.opened.add(name)

    def __call__(self, request: dict[str, Any]) -> Reply:
        task = request["messages"][-1]["content"]  # the task's input: its name
        reply = completion(f"{task} done")
        reply.until = lambda: task in self.opened
        reply.delay = 600
        return reply


@pytest.fixture
def two_replicas(
    cluster: LocalCluster,
    crd: Path,
    namespace: str,
    fake: FakeServer,
    workspace: Path,
    tmp_path: Path,
) -> Iterator[list[OperatorProcess]]:
    env = operator_env(fake.base_url, workspace, tmp_path / "faults") | {
        "AGENTTASK_LEASE_SECONDS": "6"
    }
    procs = list(replica_processes(cluster.kubeconfig, namespace, tmp_path, env, REPLICAS).values())
    yield procs
    for proc in procs:
        proc.stop()


async def states(
    api: client.ApiClient, namespace: str, names: list[str]
) -> dict[str, dict[str, Any]]:
    return {n: (await get_task(api, namespace, n)).get("status") or {} for n in names}


def running(sts: dict[str, dict[str, Any]]) -> list[str]:
    return sorted(
        n
        for n, s in sts.items()
        if s.get("startTime") and s.get("phase") not in ("Succeeded", "Failed")
    )


async def holders(api: client.ApiClient, namespace: str, slot: str) -> dict[str, str]:
    obj = await client.CoordinationV1Api(api).read_namespaced_lease("agenttask-slots", namespace)
    found: dict[str, str] = json.loads((obj.metadata.annotations or {}).get(slot) or "{}")
    return found


async def test_an_agent_models_limit_holds_across_replicas_and_queues_in_creation_order(
    api: client.ApiClient, namespace: str, fake: FakeServer, two_replicas: list[OperatorProcess]
) -> None:
    model = Gated()
    fake.llm = model
    spec = {"model": "fake-model", "baseURL": fake.base_url, "maxConcurrentTasks": 2}
    await create_object(api, namespace, "agentmodels", "AgentModel", "gpt", spec)
    for proc in two_replicas:
        proc.start()
    for proc in two_replicas:
        proc.wait_started()
    for proc in two_replicas:  # each knows the other, so each task goes where its uid hashes
        proc.wait_replicas(REPLICAS)
    names = [f"t{i}" for i in range(6)]
    homes: dict[str, str | None] = {}
    for name in names:
        spec = {"input": name, "model": {"modelRef": {"name": "gpt"}}}
        homes[name] = assigned(
            (await create_task(api, namespace, name, spec))["metadata"]["uid"], REPLICAS
        )
        while name == names[-1] and len(set(homes.values())) < 2:
            # The uids are random: should all six hash to one replica (p = 1/32), the last one
            # is made again until it hashes to the other, so that both replicas run tasks.
            await delete_and_wait(api, namespace, name)
            obj = await create_task(api, namespace, name, spec)
            homes[name] = assigned(obj["metadata"]["uid"], REPLICAS)
        await asyncio.sleep(0.3)

    async def two_running_four_queued() -> dict[str, dict[str, Any]] | None:
        sts = await states(api, namespace, names)
        queued = [n for n, s in sts.items() if s.get("reason") == "Queued"]
        return sts if len(running(sts)) == 2 and len(queued) == 4 else None

    sts = await eventually(two_running_four_queued, within=60, what="2 running, 4 queued")
    assert running(sts) == ["t0", "t1"]  # the oldest
    msg = sts["t5"]["message"]
    assert sts["t5"]["phase"] == "Pending" and "AgentModel gpt's maxConcurrentTasks=2" in msg
    assert len(await holders(api, namespace, "agenttask.dev/slots.model.gpt")) == 2
    started_order: list[str] = []
    peak = 0
    for name in names:  # let the oldest running one finish, then the next must start
        for n in running(await states(api, namespace, names)):
            if n not in started_order:
                started_order.append(n)
        model.open(name)
        await wait_phase(api, namespace, name, within=60)

        async def settled(done: str = name) -> bool:
            nonlocal peak
            sts = await states(api, namespace, names)
            now_running = running(sts)
            peak = max(peak, len(now_running))
            waiting = [n for n, s in sts.items() if not s.get("startTime")]
            return len(now_running) == min(2, len(waiting) + len(now_running))

        await eventually(settled, within=30, what=f"the next task to start after {name}")
    sts = await states(api, namespace, names)
    assert [s["phase"] for s in sts.values()] == ["Succeeded"] * 6
    assert started_order == names  # started in creation order
    assert peak <= 2
    owners = {s["owner"]["replica"] for s in sts.values()}
    assert owners == {"r0", "r1"}, owners  # both replicas ran tasks under the one limit
    assert {n: s["owner"]["replica"] for n, s in sts.items()} == homes  # each on its own
    assert all(s.get("slots") == ["agenttask.dev/slots.model.gpt"] for s in sts.values())

    async def released() -> bool:
        return await holders(api, namespace, "agenttask.dev/slots.model.gpt") == {}

    await eventually(released, within=30, what="every place to be given back")


async def test_the_per_namespace_limit_runs_tasks_one_by_one(
    api: client.ApiClient, namespace: str, fake: FakeServer, operator: OperatorProcess
) -> None:
    model = Gated()
    fake.llm = model
    operator.start(AGENTTASK_MAX_TASKS_PER_NAMESPACE="1")
    names = ["a", "b", "c"]
    for name in names:
        await create_task(api, namespace, name, {"input": name, "model": {"name": "fake-model"}})
        await asyncio.sleep(0.3)
    for name in names:

        async def only(n: str = name) -> bool:
            sts = await states(api, namespace, names)
            return running(sts) == [n]

        await eventually(only, within=30, what=f"{name} alone to run")
        later = names[names.index(name) + 1 :]

        async def others_queued(rest: list[str] = later) -> bool:
            sts = await states(api, namespace, names)
            return all(sts[n].get("reason") == "Queued" for n in rest)

        await eventually(others_queued, within=30, what="the others to be Queued")
        assert running(await states(api, namespace, names)) == [name]
        if name == "a":  # a restart forgets nothing: the place is in the API server

            async def queued_events() -> bool:
                events = await client.CoreV1Api(api).list_namespaced_event(namespace)
                found = {e.involved_object.name for e in events.items if e.reason == "Queued"}
                return found == {"b", "c"}

            await eventually(queued_events, within=30, what="a Queued Event for b and c")
            operator.kill()
            operator.start(AGENTTASK_MAX_TASKS_PER_NAMESPACE="1")
            operator.wait_started()
            await asyncio.sleep(3)
            assert running(await states(api, namespace, names)) == ["a"]
            await eventually(others_queued, within=30, what="the others to stay Queued")
        model.open(name)
        obj = await wait_phase(api, namespace, name, within=30)
        assert obj["status"]["phase"] == "Succeeded"
    events = await client.CoreV1Api(api).list_namespaced_event(namespace)
    queued = [e for e in events.items if e.reason == "Queued"]
    assert sorted(e.involved_object.name for e in queued) == ["b", "c"]  # once each


async def test_an_agent_models_request_rate_paces_its_tasks(
    api: client.ApiClient, namespace: str, fake: FakeServer, operator: OperatorProcess
) -> None:
    """maxRequestsPerMinute=60: five tasks created at once send their requests a second apart."""
    fake.llm = lambda request: completion("done")
    spec = {"model": "fake-model", "baseURL": fake.base_url, "maxRequestsPerMinute": 60}
    await create_object(api, namespace, "agentmodels", "AgentModel", "slow", spec)
    operator.start()
    operator.wait_started()
    names = [f"p{i}" for i in range(5)]
    for name in names:
        await create_task(
            api, namespace, name, {"input": name, "model": {"modelRef": {"name": "slow"}}}
        )
    for name in names:
        assert (await wait_phase(api, namespace, name, within=60))["status"]["phase"] == "Succeeded"
    times = sorted(fake.request_times)
    assert len(times) == 5
    # One a second: booked at 0, 1, 2, 3, 4 s; each then writes its intent before it sends,
    # so the first may go late by the length of a write. Unpaced, all five go within a second.
    assert times[-1] - times[0] >= 3.0, [t - times[0] for t in times]


async def test_a_429_pauses_the_other_tasks_of_the_model(
    api: client.ApiClient, namespace: str, fake: FakeServer, operator: OperatorProcess
) -> None:
    """One task meets a 429 with Retry-After: 8; the tasks of the same model created right
    after it send nothing until those 8 seconds have passed.
    """
    answered: list[int] = []

    def model(request: dict[str, Any]) -> Reply:
        answered.append(1)
        if len(answered) == 1:
            return error(429, "slow down", {"retry-after": "8"})
        return completion("done")

    fake.llm = model
    operator.start()
    operator.wait_started()
    spec = {"input": "x", "model": {"name": "fake-model"}}
    await create_task(api, namespace, "first", spec)

    async def limited() -> bool:
        return len(fake.requests) >= 1

    await eventually(limited, within=30, what="the first request")
    for name in ("second", "third"):
        await create_task(api, namespace, name, spec)
    for name in ("first", "second", "third"):
        assert (await wait_phase(api, namespace, name, within=60))["status"]["phase"] == "Succeeded"
    t429, *others = fake.request_times
    assert len(others) == 3
    assert min(others) - t429 >= 7.0, [t - t429 for t in others]
