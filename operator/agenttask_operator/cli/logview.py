"""What ``kubectl agenttask logs`` prints: the transcript, readable, with the task's Events. Pure.

The system prompt and input first; then each committed step (its number, what it was, attempt,
duration, tokens) with the assistant's text and tool calls or the tool's result, clipped unless
``--full``; Events (``*`` Normal, ``!`` Warning) next to the step they are about; and how the
task stands. Also the pending call ``approve`` and ``deny`` show before asking.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agenttask_operator.cli.render import (
    CLIP,
    TERMINAL,
    calls_of,
    clip,
    human_duration,
    in_flight,
    parse_time,
    took,
    tool_names,
)
from agenttask_operator.core.fork import numbered
from agenttask_operator.models import Entry


@dataclass(frozen=True)
class TaskEvent:
    """A Kubernetes Event of the task, as ``logs`` shows it."""

    time: datetime
    type: str
    reason: str
    message: str

    @staticmethod
    def of(obj: dict[str, Any]) -> TaskEvent | None:
        """From an Event object as JSON (None: it has no time)."""
        when = parse_time(
            obj.get("lastTimestamp") or obj.get("eventTime") or obj.get("firstTimestamp")
        )
        if when is None:
            when = parse_time((obj.get("metadata") or {}).get("creationTimestamp"))
        if when is None:
            return None
        return TaskEvent(
            when, str(obj.get("type", "")), str(obj.get("reason", "")), str(obj.get("message", ""))
        )


def indent(text: str, prefix: str) -> str:
    """``text`` with every line after the first indented to sit under the first."""
    pad = "\n" + " " * len(prefix)
    return prefix + text.replace("\n", pad)


def pretty_arguments(arguments: object) -> str:
    """Tool-call arguments as the model wrote them, compact JSON when they parse."""
    if not isinstance(arguments, str):
        return json.dumps(arguments, ensure_ascii=False)
    try:
        return json.dumps(json.loads(arguments), ensure_ascii=False)
    except ValueError:
        return arguments


def header(n: int, entry: Entry, names: dict[tuple[int, str], str]) -> str:
    """The line that opens a step: number, what it was, attempt, duration, tokens."""
    if entry.kind == "LLM":
        what = f"LLM request {entry.iteration}"
    else:
        name = names.get((entry.iteration, str(entry.tool_call_id)), "?")
        what = f"tool {name} ({entry.tool_call_id})"
    parts = [f"step {n}", what]
    if entry.attempts is not None:
        parts.append(f"attempt {entry.attempts}")
    if took(entry) != "-":
        parts.append(took(entry))
    if entry.usage is not None:
        parts.append(f"{entry.usage.total_tokens} tokens")
    return "--- " + " · ".join(parts)


def entry_lines(
    n: int, entry: Entry, names: dict[tuple[int, str], str], limit: int | None
) -> list[str]:
    """One committed step, readable: the assistant's text and calls, or the tool's result."""
    lines = [header(n, entry, names)]
    content = entry.message.get("content")
    text = content if isinstance(content, str) else ""
    if entry.kind == "LLM":
        if text:
            lines.append(indent(text, "assistant: "))
        for call in calls_of(entry):
            fn = call.get("function") or {}
            args = clip(pretty_arguments(fn.get("arguments", "")), limit)
            lines.append(indent(f"{fn.get('name', '?')}({args})  [{call.get('id')}]", "call: "))
        if entry.finish_reason not in (None, "stop", "tool_calls"):
            lines.append(f"finish: {entry.finish_reason}")
        return lines
    note = entry.approval
    if note is not None:
        by = f"{note.decided_by}" + (f" ({note.approval})" if note.approval else "")
        verb = "approved" if note.decision == "Approve" else "denied"
        lines.append(f"{verb} by {by}" + (f": {note.reason}" if note.reason else ""))
    label = "error: " if entry.is_error else "result: "
    lines.append(indent(clip(text, limit), label))
    return lines


def event_line(ev: TaskEvent) -> str:
    """An Event among the steps: retries, interruptions, approvals, the start and the end."""
    mark = "!" if ev.type == "Warning" else "*"
    return f"{mark} {ev.time.strftime('%H:%M:%S')} {ev.reason}: {ev.message}"


def prologue(spec: dict[str, Any]) -> list[str]:
    """What the model was given before any step: the system prompt and the user's input."""
    lines = []
    if spec.get("systemPrompt"):
        lines.append(indent(str(spec["systemPrompt"]), "system: "))
    lines.append(indent(str(spec.get("input", "")), "user: "))
    return lines


def epilogue(status: dict[str, Any], now: datetime) -> list[str]:
    """How the task stands: its end (reason, error), or the step in flight and its last error."""
    phase = status.get("phase") or "Pending"
    if phase in TERMINAL:
        line = f"=== {phase} ({status.get('reason') or '-'})"
        if phase == "Failed" and status.get("error"):
            line += f": {status['error']}"
        return [line]
    line = f"=== {phase}"
    flight = in_flight(status)
    if flight != "-":
        line += f": {flight} in flight"
    lines = [line]
    if status.get("lastError"):
        lines.append(f"last error: {status['lastError']}")
    retry = parse_time(status.get("nextRetryTime"))
    if retry is not None:
        lines.append(f"next attempt in {human_duration((retry - now).total_seconds())}")
    approval = status.get("approval") or {}
    if phase == "WaitingForApproval" and approval and not approval.get("decision"):
        lines.append(
            f"waiting for approval of {approval.get('toolName')} ({approval.get('toolCallId')}):"
            " kubectl agenttask approve|deny"
        )
    return lines


def _second(when: datetime) -> datetime:
    return when.replace(microsecond=0)


def mentions(message: str, entry: Entry, names: dict[tuple[int, str], str]) -> bool:
    """Whether an Event's message is about ``entry``'s step (the operator's own wording:
    ``LLM request N, …``, ``tool call 'name' (id) …``).
    """  # noqa: D205
    if entry.kind == "LLM":
        return re.match(rf"LLM request {entry.iteration}\b", message) is not None
    name = names.get((entry.iteration, str(entry.tool_call_id)), "?")
    if f"tool call {name!r} ({entry.tool_call_id})" not in message:
        return False
    iteration = re.search(r"of iteration (\d+)", message)
    return iteration is None or int(iteration.group(1)) == entry.iteration


def transcript_lines(
    task: dict[str, Any],
    entries: Sequence[Entry],
    events: Sequence[TaskEvent],
    now: datetime,
    *,
    limit: int | None = CLIP,
    end: bool = True,
) -> list[str]:
    """The whole transcript, readable: input, steps, the Events among them, how it stands.

    ``end``: with the last part, how the task stands (its end, or the step in flight).
    An Event about a committed step (a retry, an interruption, an approval) comes just before
    that step; the others by time. Events carry whole seconds, entries more: in the same second
    an Event comes first, except the task's end, which comes after the steps.
    """
    spec, status = task.get("spec") or {}, task.get("status") or {}
    names = tool_names(entries)
    items: list[tuple[tuple[datetime, int, int], list[str]]] = []
    keys: list[tuple[datetime, int, int]] = []
    for n, e in numbered(entries):
        when = _second(e.time) if e.time is not None else datetime.min.replace(tzinfo=UTC)
        keys.append((when, 1, n))
        items.append((keys[-1], entry_lines(n, e, names, limit)))
    final = (
        {status.get("phase"), status.get("reason")} if status.get("phase") in TERMINAL else set()
    )
    for i, ev in enumerate(sorted(events, key=lambda v: v.time)):
        at = _second(ev.time)
        step = next(
            (
                n
                for n, e in numbered(entries)
                if keys[n - 1][0] >= at and mentions(ev.message, e, names)
            ),
            None,
        )
        if step is not None:  # just before the step it is about
            key = (keys[step - 1][0], 0, step * 10_000 + i)
        else:
            key = (at, 2 if ev.reason in final else 0, i)
        items.append((key, [event_line(ev)]))
    lines = prologue(spec)
    for _, block in sorted(items, key=lambda item: item[0]):
        lines.extend(block)
    return lines + epilogue(status, now) if end else lines


def pending_call(
    task: dict[str, Any], arguments: str, now: datetime, *, full_arguments: bool
) -> str:
    """The call a decision is about, for the reviewer to read before confirming."""
    meta, status = task.get("metadata") or {}, task.get("status") or {}
    rec = status.get("approval") or {}
    try:
        shown = json.dumps(json.loads(arguments), indent=2, ensure_ascii=False)
    except ValueError:
        shown = arguments
    requested = parse_time(rec.get("requestedAt"))
    waited = f" (waiting {human_duration((now - requested).total_seconds())})" if requested else ""
    rows = [
        ("Task", f"{meta.get('namespace')}/{meta.get('name')}{waited}"),
        ("Tool", str(rec.get("toolName"))),
        ("Call", f"{rec.get('toolCallId')} (iteration {rec.get('iteration')})"),
        ("Arguments", shown if full_arguments else shown + "\n[clipped in status.approval]"),
        ("Digest", str(rec.get("argumentsDigest"))),
    ]
    if rec.get("purpose") == "Rerun":
        rows.append(
            ("Purpose", "Rerun: the operator stopped while this call ran; its effect is unknown")
        )
    timeout = parse_time(rec.get("timeoutTime"))
    if timeout is not None:
        rows.append(("Times out", f"in {human_duration((timeout - now).total_seconds())}"))
    return "\n".join(indent(value, f"{key + ':':<11}") for key, value in rows) + "\n"
