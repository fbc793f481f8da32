"""End to end: real API server, real operator subprocess, fake OpenAI server over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kubernetes_asyncio import client

from fakeopenai import FakeServer
from kubehelpers import create_task, transcript, wait_phase
from operatorproc import OperatorProcess
from scenarios import DISK_INPUT, disk_model

pytestmark = pytest.mark.cluster


def make_logs(workspace: Path) -> None:
    logs = workspace / "logs"
    (logs / "nested").mkdir(parents=True)
    (logs / "app.log").write_bytes(b"x" * 300_000)
    (logs / "app.log.1").write_bytes(b"y" * 200_000)
    (logs / "nested" / "worker.log").write_bytes(b"z" * 100_000)
    (logs / "README.txt").write_text("not a log")
    (workspace / "data.bin").write_bytes(b"d" * 50_000)


async def test_disk_space_scenario_succeeds_and_really_cleans(
    api: client.ApiClient,
    namespace: str,
    fake: FakeServer,
    operator: OperatorProcess,
    workspace: Path,
) -> None:
    make_logs(workspace)
    fake.llm = disk_model
    operator.start()
    await create_task(
        api,
        namespace,
        "disk",
        {
            "input": DISK_INPUT,
            "model": {"name": "fake-model"},
            "tools": [{"name": "check_disk"}, {"name": "clean_logs"}],
        },
    )
    obj = await wait_phase(api, namespace, "disk")
    st = obj["status"]
    assert st["phase"] == "Succeeded", st
    assert st["result"] == "Deleted 3 log files and freed 600000 bytes."
    assert st["reason"] == "Completed"
    assert st["iterations"] == 3 and st["toolCalls"] == 2
    assert st["usage"] == {"promptTokens": 120, "completionTokens": 30, "totalTokens": 150}
    cond = st["conditions"][0]
    assert (cond["type"], cond["status"], cond["reason"]) == ("Succeeded", "True", "Completed")
    assert cond["observedGeneration"] == obj["metadata"]["generation"]
    assert "currentStep" not in st and st["startTime"] and st["completionTime"]

    # The world really changed: logs gone, other files kept.
    assert sorted(p.name for p in (workspace / "logs").rglob("*") if p.is_file()) == ["README.txt"]
    assert (workspace / "data.bin").exists()

    # The model saw the real tool output, and exactly three requests were made.
    assert len(fake.requests) == 3
    check = json.loads(fake.requests[1]["messages"][-1]["content"])
    assert check["logsBytes"] == 600_009 and check["filesystem"]["totalBytes"] > 0
    assert [t["function"]["name"] for t in fake.requests[0]["tools"]] == [
        "check_disk",
        "clean_logs",
    ]

    # Transcript in ConfigMaps: LLM, tool, LLM, tool, LLM.
    entries = await transcript(api, namespace, obj["metadata"]["uid"])
    assert [e["kind"] for e in entries] == ["LLM", "Tool", "LLM", "Tool", "LLM"]
    assert st["transcript"]["entries"] == 5

    # The API key went nowhere.
    assert "sk-test-secret-key" not in operator.output()
    assert "sk-test-secret-key" not in json.dumps(obj)
