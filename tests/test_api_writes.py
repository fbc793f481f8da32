"""How many API writes a task costs, counted from the API server's side with watches."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client, watch

from fakeopenai import FakeServer
from kubehelpers import GROUP, PLURAL, VERSION, create_task, settled, wait_phase
from operatorproc import OperatorProcess
from scenarios import DISK_INPUT, disk_model

pytestmark = pytest.mark.cluster


async def count_writes(api: client.ApiClient, namespace: str, counts: dict[str, int]) -> None:
    """Count AgentTask writes (status vs metadata-only) and ConfigMap writes until cancelled."""

    async def tasks() -> None:
        last: dict[str, Any] = {}
        async with watch.Watch().stream(
            client.CustomObjectsApi(api).list_namespaced_custom_object,
            GROUP, VERSION, namespace, PLURAL, timeout_seconds=120,
        ) as stream:  # fmt: skip
            async for ev in stream:
                obj = ev["object"]
                if ev["type"] == "MODIFIED":
                    kind = "status" if obj.get("status") != last.get("status") else "metadata"
                    counts[f"task {kind} writes"] += 1
                last = obj

    async def config_maps() -> None:
        async with watch.Watch().stream(
            client.CoreV1Api(api).list_namespaced_config_map, namespace, timeout_seconds=120
        ) as stream:
            async for ev in stream:
                if ev["type"] in ("ADDED", "MODIFIED"):
                    counts["transcript writes"] += 1

    await asyncio.gather(tasks(), config_maps())


async def test_one_status_write_and_one_transcript_write_per_step(
    api: client.ApiClient,
    namespace: str,
    fake: FakeServer,
    operator: OperatorProcess,
    workspace: Path,
) -> None:
    (workspace / "logs").mkdir()
    (workspace / "logs" / "a.log").write_text("x" * 1000)
    fake.llm = disk_model
    counts = {"task status writes": 0, "task metadata writes": 0, "transcript writes": 0}
    counter = asyncio.create_task(count_writes(api, namespace, counts))
    await asyncio.sleep(0.5)
    operator.start()
    spec = {
        "input": DISK_INPUT,
        "model": {"name": "m"},
        "tools": [{"name": "check_disk"}, {"name": "clean_logs"}],
    }
    await create_task(api, namespace, "w", spec)
    st = (await wait_phase(api, namespace, "w"))["status"]
    assert st["phase"] == "Succeeded"
    await settled(api, namespace, "w")  # kopf removes its finalizer after the end
    await asyncio.sleep(1)  # the counting watch has seen that write, and anything after it
    counter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await counter
    steps = st["iterations"] + st["toolCalls"]  # 3 LLM requests + 2 tool calls
    print(f"\n{steps} steps: {counts}")
    # Each step: its intent (carrying the previous step's commit) + the end: steps + 1.
    assert counts["task status writes"] == steps + 1
    # Each step's result is appended to the transcript once.
    assert counts["transcript writes"] == steps
    # kopf: add its finalizer at the start, remove it at the end.
    assert counts["task metadata writes"] == 2
