"""The Argo CD health check of AgentTask (examples/gitops/agenttask-health.lua), run by a real
Lua 5.1 interpreter as Argo CD runs it (tests/argocdlua.py), on hand-made objects of every
phase; tests/test_argocd_health_e2e.py runs it on tasks the operator really ran. The docs show the
same script, byte for byte.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from argocdlua import health

REPO = Path(__file__).resolve().parents[2]
SCRIPT = (REPO / "examples" / "gitops" / "agenttask-health.lua").read_text()


def task(status: dict[str, Any] | None, **spec: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "agenttask.dev/v1alpha1",
        "kind": "AgentTask",
        "metadata": {"name": "t", "namespace": "ns", "generation": 1},
        "spec": {"input": "x", "model": {"name": "m"}, **spec},
    }
    if status is not None:
        obj["status"] = status
    return obj


@pytest.mark.parametrize(
    ("obj", "status", "message"),
    [
        (task(None), "Progressing", "Waiting for the operator to pick up the task"),
        (task({}), "Progressing", "Waiting for the operator to pick up the task"),
        (task({"phase": "Pending"}), "Progressing", "Pending"),
        (
            task({"phase": "Pending", "reason": "Queued", "message": "waits for a place"}),
            "Progressing",
            "Pending: waits for a place",
        ),
        (
            task({"phase": "Running", "message": "LLM request 2", "iterations": 1}),
            "Progressing",
            "Running: LLM request 2",
        ),
        (
            task({"phase": "WaitingForApproval", "reason": "ApprovalPending", "message": "m"}),
            "Progressing",
            "WaitingForApproval: m",
        ),
        (task({"phase": "Suspended", "message": "Suspended."}), "Suspended", "Suspended."),
        (task({"phase": "Suspended"}), "Suspended", "Suspended (spec.suspend is true)"),
        (
            task({"phase": "Running"}, suspend=True),
            "Suspended",
            "Suspending: spec.suspend is true; the step in flight finishes first",
        ),
        (
            task({"phase": "Succeeded", "message": "The model answered."}),
            "Healthy",
            "The model answered.",
        ),
        (task({"phase": "Succeeded"}, suspend=True), "Healthy", "The task succeeded"),
        (
            task({"phase": "Failed", "reason": "ModelAuthFailed", "message": "HTTP 401"}),
            "Degraded",
            "ModelAuthFailed: HTTP 401",
        ),
        (task({"phase": "Failed", "reason": "InvalidSpec"}), "Degraded", "InvalidSpec"),
        (task({"phase": "Failed", "error": "boom"}), "Degraded", "boom"),
        (task({"phase": "Failed"}, suspend=True), "Degraded", "The task failed"),
        (task({"phase": "Exploded"}), "Unknown", "Unknown phase Exploded"),
    ],
)
def test_every_phase(obj: dict[str, Any], status: str, message: str) -> None:
    assert health(SCRIPT, obj) == {"status": status, "message": message}


def test_the_harness_is_as_strict_as_argo_cd() -> None:
    with pytest.raises(Exception, match="string"):
        health('return {status = string.upper("healthy")}', task(None))
    with pytest.raises(Exception, match="index"):
        health('return {status = ("x"):upper()}', task(None))
    assert health('return {status = "Fine"}', task(None)) == {
        "status": "Unknown",
        "message": "Lua returned an invalid health status",
    }


def snippets(path: Path) -> list[str]:
    """The health.lua of every argocd-cm snippet in a Markdown file, de-indented."""
    text = path.read_text()
    out = []
    for block in re.findall(r"```yaml\n(.*?)```", text, re.S):
        if "resource.customizations.health.agenttask.dev_AgentTask: |" not in block:
            continue
        body = block.split("resource.customizations.health.agenttask.dev_AgentTask: |\n", 1)[1]
        lines = body.splitlines()
        indent = len(lines[0]) - len(lines[0].lstrip())
        kept = []
        for line in lines:
            if line.strip() and not line.startswith(" " * indent):
                break
            kept.append(line[indent:])
        out.append("\n".join(kept).rstrip("\n") + "\n")
    return out


@pytest.mark.parametrize("doc", ["docs/gitops.md", "charts/agenttask-operator/README.md"])
def test_the_docs_show_this_script(doc: str) -> None:
    found = snippets(REPO / doc)
    assert found, f"no argocd-cm snippet in {doc}"
    assert all(s == SCRIPT for s in found)
