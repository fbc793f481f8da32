"""``kubectl agenttask``, end to end: the real kubectl binary finds the plugin on PATH and runs it
against the real local control plane, with a real operator and the fake model.

- a finished task: ``list``/``get`` (also through a kubeconfig context's namespace and
  ``--kubeconfig``), ``steps``, ``logs`` (readable and ``-o json``, the stored entries);
- ``logs -f`` prints the steps while the task runs (the model is held back after step 2, and
  those steps are read before it is let go) and exits by itself when the task ends, or with an
  error when the task is deleted meanwhile;
- approval: ``approve --yes --reason`` creates the AgentToolApproval and the call runs once;
  ``deny`` runs nothing; no TTY and no ``--yes`` refuses; a wrong call id refuses; a reviewer
  with only the chart's approver ClusterRole approves in their own name;
- errors: a task that does not exist, no pending call, retry of a running / succeeded task;
  ``retry --dry-run`` of a failed one prints the task it would create;
- ``retry`` of a task whose tool failed makes a fork that runs the call again (under its own
  key) and succeeds; the fork is created with strict field validation;
- the README's ``logs`` and ``steps`` output is what they print after ``make demo``'s run.
"""

from __future__ import annotations

import asyncio
import json
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client
from localcluster import REPO, LocalCluster

from fakeopenai import FakeServer, Reply, completion, error, tool_messages
from kubehelpers import create_task, eventually, get_task, transcript, wait_phase
from operatorproc import OperatorProcess
from packaging_helpers import (
    approver_binding,
    docs,
    helm_template,
    kubectl_apply,
    service_account_token,
    token_kubeconfig,
)
from scenarios import DISK_INPUT, disk_model
from test_agenttask_e2e import make_logs
from test_demo import run_demo

pytestmark = pytest.mark.cluster

APPROVER_TEMPLATE = ("templates/approver-clusterrole.yaml",)

PLUGIN = Path(sys.executable).parent / "kubectl-agenttask"  # installed with the package


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding only the plugin: what a user puts on PATH."""
    assert PLUGIN.exists(), f"{PLUGIN} is missing: pip install -e . installs the console script"
    bin_dir = tmp_path_factory.mktemp("plugin-bin")
    (bin_dir / "kubectl-agenttask").symlink_to(PLUGIN)
    return bin_dir


def env_for(cluster: LocalCluster, plugin_path: Path, **extra: str) -> dict[str, str]:
    return {
        "KUBECONFIG": str(cluster.kubeconfig),
        "PATH": f"{plugin_path}:/usr/bin:/bin",
        "HOME": str(cluster.workdir),
    } | extra


def kubectl(
    cluster: LocalCluster, plugin_path: Path, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """``kubectl <args>`` with the plugin on PATH and no terminal on stdin."""
    return subprocess.run(
        [str(cluster.kubectl), *args],
        env=env_for(cluster, plugin_path, **env),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
        timeout=120,
    )


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    return proc.stdout


def refused(proc: subprocess.CompletedProcess[str], message: str) -> None:
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def rows(text: str) -> list[list[str]]:
    """A kubectl table's cells (columns are three or more spaces apart)."""
    return [re.split(r"\s{3,}", line.strip()) for line in text.splitlines() if line.strip()]


async def test_get_steps_and_logs_of_a_finished_task(
    api: client.ApiClient,
    cluster: LocalCluster,
    plugin_path: Path,
    namespace: str,
    fake: FakeServer,
    operator: OperatorProcess,
    workspace: Path,
    tmp_path: Path,
) -> None:
    make_logs(workspace)
    fake.llm = disk_model
    operator.start()
    tools = [{"name": "check_disk"}, {"name": "clean_logs"}]
    spec = {"input": DISK_INPUT, "model": {"name": "fake-model"}, "tools": tools}
    await create_task(api, namespace, "disk", spec)
    obj = await wait_phase(api, namespace, "disk")
    assert obj["status"]["phase"] == "Succeeded", obj["status"]

    table = rows(ok(kubectl(cluster, plugin_path, "agenttask", "list", "-n", namespace)))
    assert table[0] == ["NAME", "PHASE", "STEP", "TOKENS", "AGE"]
    assert table[1][:4] == ["disk", "Succeeded", "-", "150"]
    # Flags before the subcommand, all namespaces, wide.
    out = ok(kubectl(cluster, plugin_path, "agenttask", "-n", namespace, "get", "-A", "-o", "wide"))
    table = rows(out)
    assert table[0] == ["NAMESPACE", "NAME", "PHASE", "STEP", "TOKENS", "AGE", "REASON", "MODEL"]
    mine = [r for r in table[1:] if r[0] == namespace]
    assert len(mine) == 1 and mine[0][1:5] == ["disk", "Succeeded", "-", "150"]
    assert mine[0][6:] == ["Completed", "fake-model"]
    got = json.loads(ok(kubectl(cluster, plugin_path, "agenttask", "get", "disk", "-n", namespace,
                                "-o", "json")))  # fmt: skip
    assert got["metadata"]["uid"] == obj["metadata"]["uid"]

    # The namespace of the kubeconfig's context, and --kubeconfig.
    cfg = yaml.safe_load(cluster.kubeconfig.read_text())
    cfg["contexts"][0]["context"]["namespace"] = namespace
    other = tmp_path / "kubeconfig"
    other.write_text(yaml.safe_dump(cfg))
    table = rows(ok(kubectl(cluster, plugin_path, "agenttask", "list", KUBECONFIG=str(other))))
    assert [r[0] for r in table[1:]] == ["disk"]
    out = ok(kubectl(cluster, plugin_path, "agenttask", "list", "--kubeconfig", str(other)))
    assert [r[0] for r in rows(out)[1:]] == ["disk"]
    context = cfg["contexts"][0]["name"]  # --context picks it (and its namespace)
    cfg["current-context"] = "elsewhere"
    cfg["contexts"].append(
        {
            "name": "elsewhere",
            "context": {**cfg["contexts"][0]["context"], "namespace": "kube-system"},
        }
    )
    other.write_text(yaml.safe_dump(cfg))
    out = ok(kubectl(cluster, plugin_path, "agenttask", "list", "--context", context,
                     KUBECONFIG=str(other)))  # fmt: skip
    assert [r[0] for r in rows(out)[1:]] == ["disk"]

    steps = rows(ok(kubectl(cluster, plugin_path, "agenttask", "steps", "disk", "-n", namespace)))
    assert steps[0] == [
        "STEP", "ITERATION", "KIND", "TOOL", "ATTEMPTS", "DURATION", "TOKENS", "OUTCOME",
    ]  # fmt: skip
    assert [(r[0], r[1], r[2], r[3], r[4], r[6], r[7]) for r in steps[1:]] == [
        ("1", "1", "LLM", "-", "1", "15", "ToolCalls(1)"),
        ("2", "1", "Tool", "check_disk", "1", "-", "OK"),
        ("3", "2", "LLM", "-", "1", "15", "ToolCalls(1)"),
        ("4", "2", "Tool", "clean_logs", "1", "-", "OK"),
        ("5", "3", "LLM", "-", "1", "120", "Answer"),
    ]

    text = ok(kubectl(cluster, plugin_path, "agenttask", "logs", "disk", "-n", namespace))
    lines = text.splitlines()
    assert lines[0] == f"user: {DISK_INPUT}"
    headers = [line for line in lines if line.startswith("--- step")]
    assert [h.split(" · ")[:2] for h in headers] == [
        ["--- step 1", "LLM request 1"],
        ["--- step 2", "tool check_disk (call_check)"],
        ["--- step 3", "LLM request 2"],
        ["--- step 4", "tool clean_logs (call_clean)"],
        ["--- step 5", "LLM request 3"],
    ]
    assert "call: check_disk({})  [call_check]" in lines
    assert any(line.startswith('result: {"deletedFiles": 3') for line in lines)
    assert "assistant: Deleted 3 log files and freed 600000 bytes." in lines
    assert any(line.endswith("Started: The agent loop has started.") for line in lines)
    assert lines[-1] == "=== Succeeded (Completed)"

    raw = json.loads(ok(kubectl(cluster, plugin_path, "agenttask", "logs", "disk", "-n",
                                namespace, "-o", "json")))  # fmt: skip
    stored = await transcript(api, namespace, obj["metadata"]["uid"])
    assert [{k: v for k, v in e.items() if k != "step"} for e in raw] == stored
    assert [e["step"] for e in raw] == [1, 2, 3, 4, 5]
    assert all(e["attempts"] == 1 and e["startTime"] for e in stored)

    # Nothing to decide, nothing to retry.
    refused(
        kubectl(cluster, plugin_path, "agenttask", "approve", "disk", "--yes", "-n", namespace),
        "error: agenttask disk has no tool call waiting for approval (phase: Succeeded)",
    )
    refused(
        kubectl(cluster, plugin_path, "agenttask", "retry", "disk", "-n", namespace),
        "error: agenttask disk succeeded; there is nothing to retry",
    )


async def test_errors_for_a_task_that_does_not_exist(
    cluster: LocalCluster, plugin_path: Path, crd: Path, namespace: str
) -> None:
    missing = 'Error from server (NotFound): agenttasks.agenttask.dev "nope" not found'
    for args in (
        ("get", "nope"),
        ("steps", "nope"),
        ("logs", "nope"),
        ("logs", "nope", "-f"),
        ("approve", "nope", "--yes"),
        ("deny", "nope", "--yes"),
        ("retry", "nope"),
    ):
        refused(kubectl(cluster, plugin_path, "agenttask", *args, "-n", namespace), missing)
    proc = kubectl(cluster, plugin_path, "agenttask", "list", "-n", namespace)
    assert proc.returncode == 0 and proc.stdout == ""
    assert f"No resources found in {namespace} namespace." in proc.stderr
    refused(
        kubectl(cluster, plugin_path, "agenttask", "list", "--kubeconfig", "/nonexistent"),
        "Error: stat /nonexistent: no such file or directory",
    )
    refused(
        kubectl(cluster, plugin_path, "agenttask", "list", "--context", "nope"),
        'error: context "nope" does not exist',
    )


def held_model(gate: threading.Event) -> Any:
    """check_disk, then (once ``gate`` is set) the answer."""

    def model(request: dict[str, Any]) -> Reply:
        if not tool_messages(request):
            return completion(tool_calls=[("call_check", "check_disk", {})])
        reply = completion("all done")
        reply.until, reply.delay = gate.is_set, 120.0
        return reply

    return model


def start(cluster: LocalCluster, plugin_path: Path, *args: str) -> subprocess.Popen[str]:
    """``kubectl <args>`` in the background, its output read as it comes."""
    return subprocess.Popen(
        [str(cluster.kubectl), *args],
        env=env_for(cluster, plugin_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def reader(stream: Any, lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


def read_until(lines: queue.Queue[str | None], want: str, within: float) -> list[str]:
    """Lines read until one starts with ``want`` (included)."""
    seen: list[str] = []
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            break
        if line is None:
            raise AssertionError(f"the output ended before {want!r}: {seen}")
        seen.append(line)
        if line.startswith(want):
            return seen
    raise AssertionError(f"no {want!r} within {within}s: {seen}")


async def test_logs_follow_prints_steps_as_they_come_and_exits_at_the_end(
    api: client.ApiClient,
    cluster: LocalCluster,
    plugin_path: Path,
    namespace: str,
    fake: FakeServer,
    operator: OperatorProcess,
    workspace: Path,
) -> None:
    make_logs(workspace)
    gate = threading.Event()
    fake.llm = held_model(gate)
    spec = {"input": "Look at the disk.", "model": {"name": "m"}, "tools": [{"name": "check_disk"}]}
    await create_task(api, namespace, "follow", spec)  # before the operator: nothing ran yet
    proc = start(cluster, plugin_path, "agenttask", "logs", "follow", "-f", "-n", namespace)
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=reader, args=(proc.stdout, lines), daemon=True).start()
    try:
        assert read_until(lines, "user: ", 60) == ["user: Look at the disk."]
        operator.start()
        first = read_until(lines, "--- step 2 · tool check_disk (call_check)", 90)
        assert any(line.startswith("--- step 1 · LLM request 1") for line in first)
        assert "call: check_disk({})  [call_check]" in first
        # The model holds its answer: the task is still running, and logs -f is still on.
        assert (await get_task(api, namespace, "follow"))["status"]["phase"] == "Running"
        assert proc.poll() is None
        gate.set()
        rest = read_until(lines, "=== Succeeded (Completed)", 90)
        assert any(line.startswith("--- step 3 · LLM request 2") for line in rest)
        assert "assistant: all done" in rest
        assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else ""
        assert lines.get(timeout=10) is None  # nothing after the end
    finally:
        gate.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def approval_task(fake: FakeServer) -> dict[str, Any]:
    """One HTTP tool whose calls need a person's approval."""
    return {
        "input": "Scale web to 3.",
        "model": {"name": "m"},
        "tools": [
            {
                "name": "apply_change",
                "description": "Apply a change to production.",
                "parameters": {"type": "object", "properties": {"change": {"type": "string"}}},
                "http": {"url": fake.tool_url("apply_change")},
                "approval": "Required",
            }
        ],
    }


def one_call(request: dict[str, Any]) -> Reply:
    done = tool_messages(request)
    if not done:
        return completion(tool_calls=[("call_x1", "apply_change", {"change": "scale web to 3"})])
    return completion("tool said: " + done[0]["content"])


async def waiting(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        st = (await get_task(api, namespace, name)).get("status") or {}
        return st if st.get("phase") == "WaitingForApproval" else None

    st: dict[str, Any] = await eventually(check, within=60, what=f"{name} WaitingForApproval")
    return st


async def test_approve_with_yes_runs_the_call_once(
    api: client.ApiClient,
    cluster: LocalCluster,
    plugin_path: Path,
    namespace: str,
    fake: FakeServer,
    operator: OperatorProcess,
) -> None:
    fake.llm = one_call
    fake.tools["apply_change"] = lambda call, n: Reply(body={"applied": call.body["arguments"]})
    operator.start()
    await create_task(api, namespace, "scale", approval_task(fake))
    st = await waiting(api, namespace, "scale")
    assert st["approval"]["toolCallId"] == "call_x1"

    table = rows(ok(kubectl(cluster, plugin_path, "agenttask", "list", "-n", namespace)))
    assert table[1][:3] == ["scale", "WaitingForApproval", "tool apply_change"]
    steps = rows(ok(kubectl(cluster, plugin_path, "agenttask", "steps", "scale", "-n", namespace)))
    assert steps[-1][:4] == ["-", "1", "Tool", "apply_change"]
    assert steps[-1][-1] == "WaitingForApproval"

    refused(  # no terminal, no --yes
        kubectl(cluster, plugin_path, "agenttask", "approve", "scale", "-n", namespace),
        "error: refusing to approve without confirmation: stdin is not a terminal; pass --yes",
    )
    refused(
        kubectl(cluster, plugin_path, "agenttask", "approve", "scale", "call_zz", "--yes", "-n",
                namespace),
        "error: call call_zz of agenttask scale is not waiting for approval; the pending call "
        "is call_x1 (apply_change)",
    )  # fmt: skip
    refused(
        kubectl(cluster, plugin_path, "agenttask", "retry", "scale", "-n", namespace),
        "error: agenttask scale is still running (phase: WaitingForApproval)",
    )
    assert fake.deliveries == []

    proc = kubectl(cluster, plugin_path, "agenttask", "approve", "scale", "call_x1", "--yes",
                   "--reason", "capacity ticket 42", "-n", namespace)  # fmt: skip
    out = ok(proc)
    assert out.startswith("agenttoolapproval.agenttask.dev/scale-call-x1-")
    assert "created (Approve apply_change call_x1 as admin)" in out
    assert "Tool:      apply_change" in proc.stderr  # the call was shown
    assert '"change": "scale web to 3"' in proc.stderr

    obj = await wait_phase(api, namespace, "scale")
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    assert [d.body["toolCallId"] for d in fake.deliveries] == ["call_x1"]
    entries = await transcript(api, namespace, obj["metadata"]["uid"])
    assert entries[1]["approval"]["decidedBy"] == "admin"
    assert entries[1]["approval"]["reason"] == "capacity ticket 42"
    steps = rows(ok(kubectl(cluster, plugin_path, "agenttask", "steps", "scale", "-n", namespace)))
    assert steps[2][-1] == "OK (approved by admin)"
    text = ok(kubectl(cluster, plugin_path, "agenttask", "logs", "scale", "-n", namespace))
    assert "approved by admin (" in text and "): capacity ticket 42" in text
    # A second decision on the same call: nothing is pending any more.
    refused(
        kubectl(cluster, plugin_path, "agenttask", "deny", "scale", "--yes", "-n", namespace),
        "error: agenttask scale has no tool call waiting for approval (phase: Succeeded)",
    )


async def test_deny_runs_nothing(
    api: client.ApiClient,
    cluster: LocalCluster,
    plugin_path: Path,
    namespace: str,
    fake: FakeServer,
    operator: OperatorProcess,
) -> None:
    fake.llm = one_call
    fake.tools["apply_change"] = lambda call, n: Reply(body="applied")
    operator.start()
    await create_task(api, namespace, "drop", approval_task(fake))
    await waiting(api, namespace, "drop")
    ok(kubectl(cluster, plugin_path, "agenttask", "deny", "drop", "--yes", "--reason",
               "not in prod", "-n", namespace))  # fmt: skip
    st = (await wait_phase(api, namespace, "drop"))["status"]
    assert st["phase"] == "Succeeded", st
    assert "denied by admin: not in prod" in st["result"]
    assert fake.deliveries == []
    steps = rows(ok(kubectl(cluster, plugin_path, "agenttask", "steps", "drop", "-n", namespace)))
    assert steps[2][-1] == "Denied by admin"


async def test_retry_of_a_failed_task(
    api: client.ApiClient,
    cluster: LocalCluster,
    plugin_path: Path,
    namespace: str,
    fake: FakeServer,
    operator: OperatorProcess,
) -> None:
    fake.llm = lambda req: error(400, "bad request")
    operator.start()
    await create_task(api, namespace, "broken", {"input": "x", "model": {"name": "m"}})
    co = client.CustomObjectsApi(api)
    patch = {"metadata": {"labels": {"team": "a", "agenttask.dev/schedule": "s"},
                          "annotations": {"note": "keep"}}}  # fmt: skip
    await co.patch_namespaced_custom_object(
        "agenttask.dev",
        "v1alpha1",
        namespace,
        "agenttasks",
        "broken",
        patch,
        _content_type="application/merge-patch+json",
    )
    st = (await wait_phase(api, namespace, "broken"))["status"]
    assert (st["phase"], st["reason"]) == ("Failed", "ModelRequestInvalid"), st
    await create_task(api, namespace, "broken-retry-1", {"input": "x", "model": {"name": "m"}})

    out = ok(kubectl(cluster, plugin_path, "agenttask", "retry", "broken", "--dry-run", "-o",
                     "json", "-n", namespace))  # fmt: skip
    body = json.loads(out)
    assert body["metadata"] == {
        "name": "broken-retry-2",  # -1 is taken
        "namespace": namespace,
        "labels": {"team": "a"},
        "annotations": {"note": "keep"},
    }
    source = await get_task(api, namespace, "broken")
    assert body["spec"] == source["spec"] | {"forkFrom": {"name": "broken"}}
    refused(
        kubectl(cluster, plugin_path, "agenttask", "retry", "broken", "--from-step", "3",
                "--dry-run", "-n", namespace),
        "error: --from-step 3: step 3 does not exist: the task has no committed step",
    )  # fmt: skip


async def test_a_reviewer_with_only_the_approver_role_approves(
    api: client.ApiClient,
    cluster: LocalCluster,
    plugin_path: Path,
    namespace: str,
    fake: FakeServer,
    operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    """The chart's approver ClusterRole is all ``approve`` needs (it may not read the
    transcript's ConfigMaps: the call shown is status.approval's); ``decidedBy`` is the
    reviewer's own user name, a ServiceAccount here.
    """
    objs = docs(helm_template(tmp_path, "agenttask-system", show_only=APPROVER_TEMPLATE))
    binding = approver_binding(namespace, objs[0]["metadata"]["name"], "reviewer")
    sa = client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="reviewer"))
    await client.CoreV1Api(api).create_namespaced_service_account(namespace, sa)
    kubectl_apply(cluster, tmp_path, [*objs, binding])
    token = await service_account_token(api, namespace, "reviewer")
    kubeconfig = token_kubeconfig(cluster, token, tmp_path / "reviewer.kubeconfig")
    me = f"system:serviceaccount:{namespace}:reviewer"

    fake.llm = one_call
    fake.tools["apply_change"] = lambda call, n: Reply(body="applied")
    operator.start()
    await create_task(api, namespace, "rev", approval_task(fake))
    await waiting(api, namespace, "rev")

    def approve() -> subprocess.CompletedProcess[str]:
        return kubectl(cluster, plugin_path, "agenttask", "approve", "rev", "--yes", "-n",
                       namespace, KUBECONFIG=str(kubeconfig))  # fmt: skip

    async def approved() -> subprocess.CompletedProcess[str] | None:
        proc = await asyncio.to_thread(approve)  # the authorizer learns of the binding late
        return None if proc.returncode != 0 and "Forbidden" in proc.stderr else proc

    out = ok(await eventually(approved, within=30, what="the reviewer's approval"))
    assert f"created (Approve apply_change call_x1 as {me})" in out
    st = (await wait_phase(api, namespace, "rev"))["status"]
    assert st["phase"] == "Succeeded", st
    assert st["approval"]["decidedBy"] == me
    assert len(fake.deliveries) == 1


def shape(line: str) -> str:
    """A transcript line without what changes from run to run (times, sizes, durations)."""
    if line.startswith("--- "):
        return " · ".join(line.split(" · ")[:2])
    if line.startswith(("* ", "! ")):
        return line[:2] + line.split(" ", 2)[2].split(":", 1)[0]
    if line.startswith("result: "):
        return "result"
    return re.sub(r"\d+(\.\d+)?", "N", line)


def steps_shape(row: list[str]) -> list[str]:
    """A row of ``steps`` without its duration (column 6) and with its tokens (column 7) as N:
    the free bytes that check_disk reports vary from run to run, and so does the length of the
    prompts that carry them.
    """
    return [*row[:5], re.sub(r"\d+", "N", row[6]), *row[7:]]


def readme_output(command: str) -> list[str]:
    """The lines the README shows under ``$ <command>``."""
    lines = (REPO / "README.md").read_text().splitlines()
    start = lines.index(f"$ {command}") + 1
    end = next(i for i in range(start, len(lines)) if lines[i].startswith(("$ ", "```")))
    return lines[start:end]


def test_the_readme_shows_what_logs_prints_after_the_demo(
    cluster: LocalCluster, plugin_path: Path, crd: Path, namespace: str
) -> None:
    run_demo(cluster, namespace)
    for command in ("kubectl agenttask logs disk-cleanup", "kubectl agenttask steps disk-cleanup"):
        out = ok(kubectl(cluster, plugin_path, *command.split()[1:], "-n", namespace))
        shown = readme_output(command)
        if "steps" in command:  # durations vary, and so do tokens after check_disk's answer
            assert [steps_shape(r) for r in rows(out)] == [
                steps_shape(r) for r in rows("\n".join(shown))
            ]
        else:
            assert [shape(line) for line in out.splitlines()] == [shape(line) for line in shown]


async def test_retry_creates_the_fork_with_strict_field_validation(
    api: client.ApiClient, cluster: LocalCluster, plugin_path: Path, crd: Path, namespace: str
) -> None:
    """The retry is the new task, with ``spec.forkFrom`` naming the source. It is created with
    strict field validation, so an API server whose CRD lacks ``spec.forkFrom`` would refuse it
    rather than drop the field and run the task from scratch. (No operator here: the source's
    failure is written as the operator would write it.)
    """
    await create_task(api, namespace, "gone-wrong", {"input": "x", "model": {"name": "m"}})
    co = client.CustomObjectsApi(api)
    failed = {"status": {"phase": "Failed", "reason": "RetriesExhausted", "error": "HTTP 503"}}
    await co.patch_namespaced_custom_object_status(
        "agenttask.dev", "v1alpha1", namespace, "agenttasks", "gone-wrong", failed,
        _content_type="application/merge-patch+json",
    )  # fmt: skip
    proc = kubectl(cluster, plugin_path, "agenttask", "retry", "gone-wrong", "-n", namespace)
    assert ok(proc) == "agenttask.agenttask.dev/gone-wrong-retry-1 created\n"
    fork = await get_task(api, namespace, "gone-wrong-retry-1")
    assert fork["spec"]["forkFrom"] == {"name": "gone-wrong"}


async def test_logs_follow_of_a_task_deleted_meanwhile_ends_with_an_error(
    api: client.ApiClient, cluster: LocalCluster, plugin_path: Path, crd: Path, namespace: str
) -> None:
    await create_task(api, namespace, "short-lived", {"input": "hi", "model": {"name": "m"}})
    proc = start(cluster, plugin_path, "agenttask", "logs", "short-lived", "-f", "-n", namespace)
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=reader, args=(proc.stdout, lines), daemon=True).start()
    try:
        assert read_until(lines, "user: ", 60) == ["user: hi"]
        await client.CustomObjectsApi(api).delete_namespaced_custom_object(
            "agenttask.dev", "v1alpha1", namespace, "agenttasks", "short-lived"
        )
        assert await asyncio.to_thread(proc.wait, 60) == 1
        assert proc.stderr is not None
        assert "error: agenttask short-lived was deleted while following its logs" in (
            proc.stderr.read()
        )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_retry_continues_a_failed_task_to_success(
    api: client.ApiClient,
    cluster: LocalCluster,
    plugin_path: Path,
    namespace: str,
    fake: FakeServer,
    operator: OperatorProcess,
) -> None:
    """A tool fails (one attempt allowed); once it works again, ``retry`` makes a fork that
    keeps the model's answer (step 1) and runs the call again under the fork's own key.
    """
    working = threading.Event()

    def flaky(call: Any, n: int) -> Reply:
        return Reply(body="applied") if working.is_set() else Reply(status=503, body="down")

    fake.llm = one_call
    fake.tools["apply_change"] = flaky
    operator.start()
    spec = approval_task(fake) | {"retry": {"maxAttempts": 1}}
    del spec["tools"][0]["approval"]
    await create_task(api, namespace, "flaky", spec)
    source = await wait_phase(api, namespace, "flaky")
    assert (source["status"]["phase"], source["status"]["reason"]) == (
        "Failed",
        "RetriesExhausted",
    ), source["status"]
    working.set()

    out = ok(kubectl(cluster, plugin_path, "agenttask", "retry", "flaky", "-n", namespace))
    assert out == "agenttask.agenttask.dev/flaky-retry-1 created\n"
    fork = await wait_phase(api, namespace, "flaky-retry-1")
    assert fork["status"]["phase"] == "Succeeded", fork["status"]
    assert fork["status"]["result"] == "tool said: applied"
    steps = rows(ok(kubectl(cluster, plugin_path, "agenttask", "steps", "flaky-retry-1", "-n",
                            namespace)))  # fmt: skip
    assert [(r[0], r[2], r[3], r[7]) for r in steps[1:]] == [
        ("1", "LLM", "-", "ToolCalls(1)"),  # copied from the source
        ("2", "Tool", "apply_change", "OK"),
        ("3", "LLM", "-", "Answer"),
    ]
    keys = [d.idempotency_key for d in fake.deliveries]
    assert keys == [
        f"{source['metadata']['uid']}:call_x1",
        f"{fork['metadata']['uid']}:call_x1",
    ]
