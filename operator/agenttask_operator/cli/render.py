"""What ``kubectl agenttask`` prints in tables: tasks, steps, ages. Pure.

Everything here takes what was read (objects as JSON, transcript entries, Events) and the
current time, and returns text; nothing reads the clock or the API. Tables look like kubectl's:
upper-case headers, columns three spaces apart, ``<none>``/``-`` for what is not there.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from agenttask_operator.core.fork import numbered
from agenttask_operator.models import Entry

CLIP = 500  # characters of a tool result or arguments shown without --full
TERMINAL = ("Succeeded", "Failed")


def parse_time(value: object) -> datetime | None:
    """A Kubernetes timestamp (``2026-11-25T20:01:11Z``, fractions allowed) as an aware datetime."""
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def human_duration(seconds: float) -> str:
    """kubectl's AGE: apimachinery's ``duration.HumanDuration`` (``5s``, ``2m10s``, ``3h``, …)."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def step_duration(seconds: float) -> str:
    """How long a step took: ``<1s`` under a second, else like :func:`human_duration`."""
    return "<1s" if 0 <= seconds < 1 else human_duration(seconds)


def age(obj: dict[str, Any], now: datetime) -> str:
    """The AGE column of an object."""
    created = parse_time((obj.get("metadata") or {}).get("creationTimestamp"))
    return "<unknown>" if created is None else human_duration((now - created).total_seconds())


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A kubectl table: upper-case headers, left-aligned columns three spaces apart."""
    cells = [[h.upper() for h in headers], *([str(c) for c in row] for row in rows)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for r in cells:
        padded = [c.ljust(w) for c, w in zip(r[:-1], widths[:-1], strict=True)] + [r[-1]]
        lines.append("   ".join(padded).rstrip())
    return "\n".join(lines) + "\n"


def clip(text: str, limit: int | None) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out (None: all of it)."""
    if limit is None or len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit} more characters; --full shows all]"


# --- tasks -------------------------------------------------------------------------------


def in_flight(status: dict[str, Any]) -> str:
    """The STEP column: the step in flight (``LLM request 2``, ``tool clean_logs``), its
    attempt when it is not the first, and how many calls run alongside; ``-`` if none.
    """  # noqa: D205
    step = status.get("currentStep") or {}
    if status.get("phase") in TERMINAL or not step.get("kind"):
        return "-"
    if step["kind"] == "LLM":
        text = f"LLM request {step.get('iteration', '?')}"
    else:
        text = f"tool {step.get('toolName') or step.get('toolCallId') or '?'}"
    attempts = status.get("attempts") or 0
    if attempts > 1:
        text += f", attempt {attempts}"
    alongside = len(status.get("parallelCalls") or ())
    if alongside:
        text += f" (+{alongside} call{'s' if alongside > 1 else ''})"
    return text


def model_name(spec: dict[str, Any]) -> str:
    """The model a task names: inline, or the AgentModel of its ``modelRef``."""
    model = spec.get("model") or {}
    if model.get("modelRef"):
        return f"agentmodel/{model['modelRef'].get('name', '?')}"
    return str(model.get("name") or "<none>")


TASK_HEADERS = ("name", "phase", "step", "tokens", "age")
WIDE_HEADERS = ("reason", "model")


def task_rows(
    tasks: Sequence[dict[str, Any]], now: datetime, *, wide: bool = False, namespaces: bool = False
) -> str:
    """The table of ``get`` / ``list``: NAME, PHASE, STEP (in flight), TOKENS, AGE."""
    headers = (("namespace",) if namespaces else ()) + TASK_HEADERS + (WIDE_HEADERS if wide else ())
    rows = []
    for obj in tasks:
        meta, st = obj.get("metadata") or {}, obj.get("status") or {}
        row = [str(meta.get("namespace", ""))] if namespaces else []
        row += [
            str(meta.get("name", "")),
            str(st.get("phase") or "Pending"),
            in_flight(st),
            str((st.get("usage") or {}).get("totalTokens", 0)),
            age(obj, now),
        ]
        if wide:
            row += [str(st.get("reason") or "<none>"), model_name(obj.get("spec") or {})]
        rows.append(row)
    return table(headers, rows)


# --- steps -------------------------------------------------------------------------------


def tool_names(entries: Sequence[Entry]) -> dict[tuple[int, str], str]:
    """``(iteration, tool_call_id)`` → the tool's name, from the assistant's tool calls."""
    names: dict[tuple[int, str], str] = {}
    for e in entries:
        if e.kind != "LLM":
            continue
        for call in e.message.get("tool_calls") or ():
            if isinstance(call, dict):
                fn = call.get("function") or {}
                names[(e.iteration, str(call.get("id")))] = str(fn.get("name", "?"))
    return names


def calls_of(entry: Entry) -> list[dict[str, Any]]:
    """The tool calls an assistant entry asked for."""
    calls = entry.message.get("tool_calls") or []
    return [c for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []


FINISH = {"stop": "Answer", "length": "Truncated", "content_filter": "ContentFilter"}


def outcome(entry: Entry) -> str:
    """The OUTCOME column of a committed step."""
    if entry.kind == "LLM":
        calls = calls_of(entry)
        if calls:
            return f"ToolCalls({len(calls)})"
        return FINISH.get(entry.finish_reason or "stop", entry.finish_reason or "Answer")
    note = entry.approval
    if note is not None and note.decision == "Deny":
        return f"Denied by {note.decided_by}"
    text = "Error" if entry.is_error else "OK"
    if note is not None:
        text += f" (approved by {note.decided_by})"
    return text


def took(entry: Entry) -> str:
    """The DURATION of a committed step: from its first attempt's start to its commit."""
    if entry.start_time is None or entry.time is None:
        return "-"
    return step_duration((entry.time - entry.start_time).total_seconds())


STEP_HEADERS = ("step", "iteration", "kind", "tool", "attempts", "duration", "tokens", "outcome")


def step_rows(entries: Sequence[Entry], status: dict[str, Any], now: datetime) -> str:
    """The table of ``steps``: one row per committed step, then the step(s) in flight."""
    names = tool_names(entries)
    rows = []
    for n, e in numbered(entries):
        tool = "-" if e.kind == "LLM" else names.get((e.iteration, str(e.tool_call_id)), "?")
        tokens = str(e.usage.total_tokens) if e.usage is not None else "-"
        attempts = str(e.attempts) if e.attempts is not None else "-"
        rows.append([str(n), str(e.iteration), e.kind, tool, attempts, took(e), tokens, outcome(e)])
    rows.extend(flight_rows(status, now))
    return table(STEP_HEADERS, rows)


def flight_state(status: dict[str, Any], next_retry: object) -> str:
    """The OUTCOME of a step in flight: what it is doing now."""
    phase = status.get("phase")
    if phase in ("WaitingForApproval", "Suspended"):
        return str(phase)
    if next_retry:
        return "BackOff"
    return "Running"


def flight_rows(status: dict[str, Any], now: datetime) -> list[list[str]]:
    """Rows for the step in flight and the calls alongside it (no step number yet: ``-``)."""
    step = status.get("currentStep") or {}
    if status.get("phase") in TERMINAL or not step.get("kind"):
        return []
    current = {
        **step,
        "attempts": status.get("attempts") or 1,
        "nextRetryTime": status.get("nextRetryTime"),
    }
    rows = []
    for s in (current, *(status.get("parallelCalls") or ())):
        started = parse_time(s.get("startTime"))
        since = step_duration((now - started).total_seconds()) if started else "-"
        kind = s.get("kind", "Tool")
        tool = "-" if kind == "LLM" else str(s.get("toolName") or "?")
        state = flight_state(status, s.get("nextRetryTime"))
        rows.append(
            ["-", str(s.get("iteration", "?")), kind, tool, str(s.get("attempts", 1)), since, "-",
             state]
        )  # fmt: skip
    return rows
