"""The objects ``kubectl agenttask`` creates: an AgentToolApproval, a retry's AgentTask. Pure.

- **approve / deny**: one ``AgentToolApproval`` for the call in ``status.approval``, named after
  the task, the call and a digest of what is decided on (the task's uid, the call, its
  arguments' digest, and the run it authorises), so a second ``approve`` or ``deny`` of the
  same pending call collides with the first (409) instead of stacking decisions.
- **retry**: a new AgentTask ``<name>-retry-<n>`` (``n``: the first number free) with the
  source's spec and ``spec.forkFrom: {name, step}``; the source's own labels and annotations
  come along, except those of kopf, of the operator (``agenttask.dev/…``) and kubectl's
  last-applied configuration, which describe the source, not the copy.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Collection
from typing import Any

GROUP, VERSION = "agenttask.dev", "v1alpha1"
MAX_NAME = 253
# Labels and annotations that belong to the source object, not to a copy of it.
NOT_COPIED = ("kopf.zalando.org/", "agenttask.dev/", "kubectl.kubernetes.io/last-applied")


def dns_label(text: str) -> str:
    """``text`` as lowercase letters, digits and ``-`` (a tool call id such as ``call_X1``)."""
    return re.sub("-+", "-", re.sub("[^a-z0-9-]", "-", text.lower())).strip("-") or "call"


def _fit(base: str, suffix: str) -> str:
    return base[: MAX_NAME - len(suffix)].rstrip(".-") + suffix


def approval_name(task: dict[str, Any]) -> str:
    """The name of the decision on the call ``task`` waits for: one per call and run."""
    meta, rec = task["metadata"], task["status"]["approval"]
    run = "/".join(
        str(v)
        for v in (
            meta.get("uid"),
            rec.get("toolCallId"),
            rec.get("argumentsDigest"),
            rec.get("purpose", "Run"),
            rec.get("forInterruptions", 0),
        )
    )
    digest = hashlib.sha256(run.encode()).hexdigest()[:8]
    call = dns_label(str(rec.get("toolCallId")))[:40].strip("-")
    return _fit(meta["name"], f"-{call}-{digest}")


def approval_body(
    task: dict[str, Any], decision: str, decided_by: str, reason: str
) -> dict[str, Any]:
    """The AgentToolApproval deciding the call in ``task``'s ``status.approval``."""
    meta, rec = task["metadata"], task["status"]["approval"]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AgentToolApproval",
        "metadata": {"name": approval_name(task), "namespace": meta["namespace"]},
        "spec": {
            "task": meta["name"],
            "toolCallId": rec["toolCallId"],
            "argumentsDigest": rec["argumentsDigest"],
            "decision": decision,
            "reason": reason,
            "decidedBy": decided_by,
        },
    }


def valid_step(step: int, committed: int) -> str | None:
    """Why ``--from-step step`` cannot fork a task of ``committed`` steps (numbered as
    ``core.fork.numbered`` does, from 1; 0 copies none); None if it can.
    """  # noqa: D205
    if 0 <= step <= committed:
        return None
    if committed == 0:
        return f"step {step} does not exist: the task has no committed step (0: copy none)"
    return f"step {step} does not exist: the task has steps 1 to {committed} (0: copy none)"


def retry_name(source: str, taken: Collection[str]) -> str:
    """``<source>-retry-<n>`` with the smallest ``n`` ≥ 1 not in ``taken``."""
    n = 1
    while (name := _fit(source, f"-retry-{n}")) in taken:
        n += 1
    return name


def _kept(values: dict[str, str] | None) -> dict[str, str]:
    return {k: v for k, v in (values or {}).items() if not k.startswith(NOT_COPIED)}


def retry_body(source: dict[str, Any], name: str, step: int | None) -> dict[str, Any]:
    """The AgentTask that retries ``source``: its spec, forked from its transcript (up to and
    including ``step``; None: the operator's default, the last step before the failure).
    """  # noqa: D205
    meta = source["metadata"]
    spec = copy.deepcopy(source.get("spec") or {})
    spec["forkFrom"] = {"name": meta["name"]} | ({"step": step} if step is not None else {})
    out_meta: dict[str, Any] = {"name": name, "namespace": meta["namespace"]}
    labels, annotations = _kept(meta.get("labels")), _kept(meta.get("annotations"))
    if labels:
        out_meta["labels"] = labels
    if annotations:
        out_meta["annotations"] = annotations
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AgentTask",
        "metadata": out_meta,
        "spec": spec,
    }
