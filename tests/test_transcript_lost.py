"""A transcript whose ConfigMaps were deleted while the operator was down: the task stops
``TranscriptLost``, saying what is missing, and never runs a finished step again (no second
question to the model, no tool call delivered again).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from kubernetes_asyncio import client
from localcluster import LocalCluster

from fakeopenai import FakeServer
from kubehelpers import create_task, eventually, kubectl, wait_phase
from operatorproc import OperatorProcess
from scenarios import three_step_model
from test_crash_resume import echo, spec_for, wait_file

pytestmark = pytest.mark.cluster

# The answer and both tool results (the calls ran at once) are stored; status knows of one entry,
# the answer: the results would have been committed with the next request's intent.
POINT = "before-intent:LLM:2"


async def run_until_killed(
    api: client.ApiClient, namespace: str, fake: FakeServer, operator: OperatorProcess, tmp: Path
) -> str:
    """Run the three-step task until both tool results are stored, then SIGKILL; its uid."""
    fake.llm = three_step_model
    fake.tools["echo"] = echo
    operator.start(AGENTTASK_FAULT_PAUSE=POINT)
    task = await create_task(api, namespace, "crash", spec_for(fake))
    await wait_file(tmp / "faults" / POINT.replace(":", "_"))
    operator.kill()
    assert (len(fake.requests), len(fake.deliveries)) == (1, 2)
    return str(task["metadata"]["uid"])


@pytest.mark.parametrize(
    ("deleted", "says"),
    [
        ("all", "recorded 1, 0 are stored (missing: segment(s) 0)"),
        ("middle", "recorded 1, 1 are stored (missing: segment(s) 1)"),
    ],
)
async def test_deleted_transcript_stops_the_task_instead_of_starting_over(
    api: client.ApiClient,
    cluster: LocalCluster,
    namespace: str,
    fake: FakeServer,
    operator: OperatorProcess,
    tmp_path: Path,
    deleted: str,
    says: str,
) -> None:
    uid = await run_until_killed(api, namespace, fake, operator, tmp_path)
    selector = f"agenttask.dev/task-uid={uid}"
    if deleted == "middle":  # the first tool result: one segment between two others
        selector += ",agenttask.dev/transcript-segment=1"
    proc = kubectl(cluster, "delete", "cm", "-n", namespace, "-l", selector)
    assert proc.returncode == 0 and "deleted" in proc.stdout, proc.stderr
    left = kubectl(cluster, "get", "cm", "-n", namespace, "-l", f"agenttask.dev/task-uid={uid}")
    assert left.stdout.count("transcript-s") == (0 if deleted == "all" else 2)

    operator.start()
    obj = await wait_phase(api, namespace, "crash", within=60)
    st = obj["status"]
    assert (st["phase"], st["reason"]) == ("Failed", "TranscriptLost"), st
    assert says in st["message"]
    assert st["transcript"]["entries"] == 1  # the record of what was committed is kept
    assert "currentStep" not in st
    await asyncio.sleep(2)  # anything the operator would do next, it would have done by now
    assert (len(fake.requests), len(fake.deliveries)) == (1, 2)  # nothing ran again

    async def warned() -> bool:
        events = await client.CoreV1Api(api).list_namespaced_event(
            namespace, field_selector=f"involvedObject.uid={uid}"
        )
        return any(e.reason == "TranscriptLost" and e.type == "Warning" for e in events.items)

    await eventually(warned, within=10, what="a TranscriptLost Event")
