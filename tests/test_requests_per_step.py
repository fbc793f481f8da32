"""What a step costs the cluster, counted by the API server itself (its audit log).

A control plane of its own writes every request to an audit log: the operator's (user agent
``agenttask-operator``, and kopf's own), with the objects written. The task runs 21 steps
whose tool results are 20 KiB each, so its transcript grows to over 400 KiB. Exact counts, not
timings: a regression fails here even though CI times nothing.

- **requests per step**: one status PATCH (the intent, carrying the previous step's commit)
  and one ConfigMap create (the result) — no GET of the task per turn, no rewrite, no delete,
  and no read of a transcript that cannot exist yet (the task has not started);
- **bytes written per step**: the new segment holds the step's own line and the task object
  stays small, so what a step writes does not grow with the transcript.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from localcluster import REPO, LocalCluster

from fakeopenai import FakeServer, Reply, ToolCall, completion, tool_messages
from kubehelpers import api_client, create_task, kubectl, new_namespace, wait_phase
from operatorproc import OperatorProcess, operator_env
from otlpreceiver import Receiver

pytestmark = pytest.mark.cluster

ITERATIONS = 10  # each: an LLM request asking for one tool call; then the answer
STEPS = 2 * ITERATIONS + 1
OUTPUT = 20 * 1024  # characters of each tool result
SLACK = 16 * 1024  # what a step may write beyond its own content

POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
- level: RequestResponse
  verbs: [create, update, patch]
  resources:
  - {group: "", resources: [configmaps]}
  - {group: agenttask.dev, resources: [agenttasks, agenttasks/status]}
- level: Metadata
"""


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A control plane whose API server logs every request (JSON lines) to ``audit.log``."""
    work = tmp_path_factory.mktemp("audited-cluster")
    (work / "policy.yaml").write_text(POLICY)
    flags = [
        f"--audit-policy-file={work / 'policy.yaml'}",
        f"--audit-log-path={work / 'audit.log'}",
        "--audit-log-format=json",
        "--audit-log-maxsize=0",
    ]
    with LocalCluster(work, apiserver_args=flags) as lc:
        proc = kubectl(lc, "apply", "-f", str(REPO / "crds"))
        assert proc.returncode == 0, proc.stderr
        proc = kubectl(lc, "wait", "--for=condition=Established", "-f", str(REPO / "crds"))
        assert proc.returncode == 0, proc.stderr
        yield lc


@pytest.fixture
async def admin(audited: LocalCluster) -> AsyncIterator[client.ApiClient]:
    async with api_client(audited.kubeconfig) as c:
        c.user_agent = "agenttask-tests"  # not to be mistaken for the operator
        yield c


def model(request: dict[str, Any]) -> Reply:
    n = len(tool_messages(request))
    if n < ITERATIONS:
        return completion(tool_calls=[(f"call_{n}", "dump", {"n": n})])
    return completion(f"done after {n} tool calls")


def dump(call: ToolCall, attempt: int) -> Reply:
    return Reply(body=str(call.body["arguments"]["n"]) * OUTPUT)


def audit_events(cluster: LocalCluster, namespace: str) -> list[dict[str, Any]]:
    """The audited requests on objects of ``namespace``."""
    events = []
    for line in (cluster.workdir / "audit.log").read_text().splitlines():
        ev = json.loads(line)
        if (ev.get("objectRef") or {}).get("namespace") == namespace:
            events.append(ev)
    return events


def what(ev: dict[str, Any]) -> str:
    ref = ev["objectRef"]
    sub = f"/{ref['subresource']}" if ref.get("subresource") else ""
    return f"{ev['verb']} {ref['resource']}{sub}"


def size(obj: Any) -> int:
    return len(json.dumps(obj, separators=(",", ":")).encode())


@pytest.mark.parametrize("traces", [False, True], ids=["plain", "traces"])
async def test_two_requests_per_step_and_bytes_that_do_not_grow(
    audited: LocalCluster, admin: client.ApiClient, fake: FakeServer, tmp_path: Path, traces: bool
) -> None:
    """With traces on too: the trace's ids ride on a step intent, never a request of their own."""
    namespace = await new_namespace(admin)
    fake.llm = model
    fake.tools["dump"] = dump
    env = operator_env(fake.base_url, tmp_path / "ws", tmp_path / "faults")
    receiver = Receiver().start()
    if traces:
        env |= {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    operator = OperatorProcess(audited.kubeconfig, namespace, tmp_path / "operator.log", env)
    operator.start()
    started = time.monotonic()
    try:
        operator.wait_started()
        spec = {
            "input": "Dump ten times.",
            "model": {"name": "m"},
            "maxIterations": ITERATIONS + 1,
            "tools": [
                {
                    "name": "dump",
                    "parameters": {"type": "object", "properties": {"n": {"type": "integer"}}},
                    "http": {"url": fake.tool_url("dump")},
                }
            ],
        }
        await create_task(admin, namespace, "grow", spec)
        obj = await wait_phase(admin, namespace, "grow", within=120)
    finally:
        operator.stop()
        receiver.stop()
        ran = time.monotonic() - started
    st = obj["status"]
    assert st["phase"] == "Succeeded", st
    assert ("traceContext" in st) is traces
    assert len(receiver.named("execute_tool")) == (ITERATIONS if traces else 0)
    assert st["iterations"] + st["toolCalls"] == STEPS
    assert st["transcript"]["bytes"] > ITERATIONS * OUTPUT

    events = audit_events(audited, namespace)
    ours = [e for e in events if e.get("userAgent") == "agenttask-operator"]
    kopf = [e for e in events if str(e.get("userAgent", "")).startswith("kopf/")]
    by_what = Counter(what(e) for e in ours)
    print(f"\noperator's requests in the namespace for {STEPS} steps: {dict(by_what)}")
    # Its Lease (membership among replicas) costs by time, not by step: created at start, then
    # one update and one list every 2 s (2/15 of the Lease's duration), deleted at a clean exit.
    leases = Counter({k: n for k, n in by_what.items() if k.endswith(" leases")})
    by_what -= leases
    ticks = ran / (15 * 2 / 15)
    assert leases["create leases"] == 1 and leases["delete leases"] == 1, leases
    assert leases["update leases"] <= ticks + 1 and leases["list leases"] <= ticks + 2, leases
    print(f"kopf's: {dict(Counter(what(e) for e in kopf if e['verb'] != 'watch'))}")
    assert by_what == {
        "patch agenttasks/status": STEPS + 1,  # each step's intent, then the end
        "create configmaps": STEPS,  # each step's result, once
        "create events": 2,  # Started, Succeeded
    }
    per_step = sum(by_what.values()) / STEPS
    assert per_step <= 2.2
    # kopf: its finalizer, added and removed; no reads of the task.
    assert Counter(what(e) for e in kopf if e["verb"] not in ("watch", "list")) == {
        "patch agenttasks": 2
    }

    # Bytes: each segment holds the step's own line; the task object stays small.
    creates = [e for e in ours if what(e) == "create configmaps"]
    lines = [e["requestObject"]["data"]["transcript.jsonl"] for e in creates]
    stored = [size(e["responseObject"]) for e in creates]
    for line, written in zip(lines, stored, strict=True):
        assert written <= len(line.encode()) + 2048
    patches = [size(e["responseObject"]) for e in ours if what(e) == "patch agenttasks/status"]
    print(f"segment sizes: {stored}\ntask object sizes after each status write: {patches}")
    assert max(patches) <= SLACK - 2048
    # Flat: the last step's writes are no larger than the first's, give or take its content.
    assert patches[-2] - patches[1] < 1024
