"""``AgentToolApproval`` (agenttask.dev/v1alpha1): a person's decision on one pending tool call.

The CRD schema (crds/agenttask.dev_agenttoolapprovals.yaml) is the contract: the spec is
immutable, and an admission policy admits an approval only when ``decidedBy`` is the requester's
own user name. :class:`Decision` is what ``core.approval`` reads of one such object.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from agenttask_operator.models.base import Model

KIND, PLURAL = "AgentToolApproval", "agenttoolapprovals"
ACCEPTED = "Accepted"  # the type of the one condition the operator writes on an approval


class AgentToolApprovalSpec(Model):
    """What the reviewer decided, about which call."""

    task: str
    tool_call_id: str
    arguments_digest: str
    decision: Literal["Approve", "Deny"]
    reason: str = ""
    decided_by: str


@dataclass(frozen=True)
class Decision:
    """One AgentToolApproval as read: identity, creation time, spec, and what we marked on it."""

    name: str
    uid: str
    created: datetime
    spec: AgentToolApprovalSpec
    accepted: str | None = None  # the reason of its Accepted condition, if marked already


class ApprovalNote(Model):
    """Stored with a tool call's result in the transcript: who decided that it ran (or not)."""

    decision: Literal["Approve", "Deny"]
    decided_by: str
    reason: str | None = None
    approval: str | None = None  # the AgentToolApproval's name (none: the timeout decided)
