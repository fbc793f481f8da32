"""``AgentToolServer``: filter discovered tools, build the status patch, plan the next refresh.

Pure: what discovery found (or why it failed) and ``now`` are passed in. The status is written
as a merge patch; these functions return it as a dict (``None`` values delete a field).

- A successful discovery writes the filtered tools, their count, the protocol version and the
  server's name and version, with ``Ready=True`` (reason ``Discovered``).
- A failure writes ``Ready=False`` with its reason. The tools found before are kept if they were
  found for this same generation of the spec (a server that is briefly down keeps its list);
  after a spec change they are removed, as they may belong to another URL.
- Every attempt sets ``lastRefreshTime`` and ``observedGeneration``. The next one is due after
  ``refreshSeconds`` when Ready, after a growing delay (1 s, 2 s, 4 s …, at most
  ``refreshSeconds`` and 300 s) while failing, and at once after a spec change or when the
  operator's allow-list changed its verdict on the URL. A URL the allow-list refuses is not
  retried (only looked at again every ``refreshSeconds``): nothing but a change can help.
  A server that announced a change of its tools (``announced``) is refreshed at once while
  Ready, but at most once every ``ANNOUNCED_GAP_SECONDS``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agenttask_operator.core.status import ts
from agenttask_operator.models import Condition
from agenttask_operator.models.agentmodel import SecretLookup
from agenttask_operator.models.toolserver import (
    DESCRIPTION_LIMIT,
    MAX_TOOLS,
    READY,
    AgentToolServerStatus,
    Discovery,
    HeaderFrom,
    McpTool,
    ToolFilter,
    ToolStatus,
)

DISCOVERED = "Discovered"
URL_NOT_ALLOWED = "URLNotAllowed"
MAX_RETRY_SECONDS = 300.0


@dataclass(frozen=True)
class Problem:
    """Why a refresh found no usable tool list: a CamelCase reason and a message."""

    reason: str
    message: str


def secret_problem(
    namespace: str, header: HeaderFrom, lookup: SecretLookup, value: str | None
) -> Problem | None:
    """Why a header's Secret cannot be used (None: it can). The value itself is never quoted."""
    ref = header.secret_key_ref
    secret = f"Secret {namespace}/{ref.name} (header {header.name})"
    match lookup:
        case SecretLookup.NOT_FOUND:
            return Problem("SecretNotFound", f"{secret} not found")
        case SecretLookup.FORBIDDEN:
            return Problem("SecretForbidden", f"the operator is not allowed to read {secret}")
        case SecretLookup.NO_KEY:
            return Problem("KeyNotFound", f"{secret} has no key {ref.key!r}")
        case SecretLookup.EMPTY:
            return Problem("KeyNotFound", f"{secret} has an empty key {ref.key!r}")
    if value is None or not valid_header_value(header.prefix + value):
        return Problem(
            "SecretInvalid",
            f"key {ref.key!r} of {secret} is not a valid HTTP header value (printable ASCII)",
        )
    return None


def valid_header_value(value: str) -> bool:
    """Printable ASCII and tabs only: nothing that could end a header or start another."""
    return all(c == "\t" or " " <= c <= "~" for c in value)


def schema_digest(schema: dict[str, Any]) -> str:
    """``sha256:<hex>`` of the canonical JSON of a schema (sorted keys, no spaces)."""
    canonical = json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def apply_filter(tools: tuple[McpTool, ...], tool_filter: ToolFilter) -> tuple[McpTool, ...]:
    """The tools ``include`` names (all when it is empty), minus those ``exclude`` names; a
    name listed twice by the server counts once (the first).
    """  # noqa: D205
    include, exclude = set(tool_filter.include), set(tool_filter.exclude)
    seen: set[str] = set()
    kept = []
    for t in tools:
        if (not include or t.name in include) and t.name not in exclude and t.name not in seen:
            kept.append(t)
        seen.add(t.name)
    return tuple(kept)


def tools_changed(before: tuple[ToolStatus, ...], after: tuple[ToolStatus, ...]) -> str | None:
    """What changed between two tool lists (names added or removed, schemas changed), or None."""
    old = {t.name: t.input_schema_digest for t in before}
    new = {t.name: t.input_schema_digest for t in after}
    parts = [
        f"{label}: {', '.join(names)}"
        for label, names in (
            ("added", sorted(new.keys() - old.keys())),
            ("removed", sorted(old.keys() - new.keys())),
            ("schema changed", sorted(n for n in new.keys() & old.keys() if new[n] != old[n])),
        )
        if names
    ]
    return "; ".join(parts) or None


def tool_status(tool: McpTool) -> ToolStatus:
    """A tool as ``status.tools`` shows it: the schema's digest, hints with MCP's defaults."""
    description = tool.description
    if description is not None and len(description) > DESCRIPTION_LIMIT:
        description = description[: DESCRIPTION_LIMIT - 1] + "…"
    return ToolStatus(
        name=tool.name,
        description=description,
        input_schema_digest=schema_digest(tool.input_schema),
        read_only_hint=_hint(tool.read_only_hint, False),
        destructive_hint=_hint(tool.destructive_hint, True),
        idempotent_hint=_hint(tool.idempotent_hint, False),
        open_world_hint=_hint(tool.open_world_hint, True),
    )


def _hint(value: bool | None, default: bool) -> bool:
    return default if value is None else value


def ready_condition(
    current: AgentToolServerStatus,
    generation: int | None,
    ready: bool,
    reason: str,
    message: str,
    now: datetime,
) -> Condition:
    """The ``Ready`` condition; ``lastTransitionTime`` moves only when its status flips."""
    status = "True" if ready else "False"
    previous = current.condition(READY)
    since = previous.last_transition_time if previous and previous.status == status else now
    return Condition(
        type=READY,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )


def _conditions(current: AgentToolServerStatus, cond: Condition) -> list[dict[str, Any]]:
    others = [c for c in current.conditions if c.type != cond.type]
    return [_api(c) for c in [*others, cond]]


def _api(cond: Condition) -> dict[str, Any]:
    return cond.to_api() | {"lastTransitionTime": ts(cond.last_transition_time)}


def discovered_patch(
    current: AgentToolServerStatus,
    generation: int | None,
    discovery: Discovery,
    tool_filter: ToolFilter,
    now: datetime,
) -> dict[str, Any]:
    """The status merge patch after a successful discovery (Ready, or too many tools)."""
    offered = apply_filter(discovery.tools, tool_filter)
    if len(offered) > MAX_TOOLS:
        problem = Problem(
            "TooManyTools",
            f"the server offers {len(offered)} tools after toolFilter; at most {MAX_TOOLS} are "
            "supported: narrow spec.toolFilter",
        )
        return failed_patch(current, generation, problem, now)
    tools = [tool_status(t).to_api() for t in offered]
    server = " ".join(x for x in (discovery.server_name, discovery.server_version) if x)
    message = (
        f"{len(tools)} of {len(discovery.tools)} tools offered by {server or 'the server'} "
        f"(protocol {discovery.protocol_version})"
    )
    missing = sorted(set(tool_filter.include) - {t.name for t in discovery.tools})
    if missing:
        message += "; toolFilter.include names tools the server does not offer: " + ", ".join(
            missing
        )
    cond = ready_condition(current, generation, True, DISCOVERED, message, now)
    return {
        "observedGeneration": generation,
        "protocolVersion": discovery.protocol_version,
        "serverInfo": {"name": discovery.server_name, "version": discovery.server_version},
        "tools": tools,
        "toolCount": len(tools),
        "lastRefreshTime": ts(now),
        "conditions": _conditions(current, cond),
    }


def failed_patch(
    current: AgentToolServerStatus, generation: int | None, problem: Problem, now: datetime
) -> dict[str, Any]:
    """The status merge patch after a failed refresh: Ready=False with the problem's reason."""
    cond = ready_condition(current, generation, False, problem.reason, problem.message, now)
    patch: dict[str, Any] = {
        "observedGeneration": generation,
        "lastRefreshTime": ts(now),
        "conditions": _conditions(current, cond),
    }
    if current.observed_generation != generation:  # the tools known are of another spec
        patch |= {"protocolVersion": None, "serverInfo": None, "tools": None, "toolCount": 0}
    return patch


def retry_delay(failures: int, refresh_seconds: float) -> float:
    """Seconds before the next try after ``failures`` failed refreshes in a row (≥ 1)."""
    exponent = min(max(failures, 1) - 1, 30)
    return min(2.0**exponent, refresh_seconds, MAX_RETRY_SECONDS)


ANNOUNCED_GAP_SECONDS = 2.0  # least time between two refreshes that announcements asked for


def seconds_until_refresh(
    current: AgentToolServerStatus,
    generation: int | None,
    refresh_seconds: float,
    failures: int,
    url_allowed: bool,
    now: datetime,
    announced: bool = False,
) -> float:
    """How long until the next refresh is due (0: now).

    ``failures`` is the number of failed refreshes in a row (kept by the caller, in memory):
    after a restart the first retry of a failing server simply comes sooner. ``announced``:
    the server said its tools changed since the last refresh (a Ready one is refreshed now, or
    ``ANNOUNCED_GAP_SECONDS`` after the last refresh: a server announcing changes without end
    does not get a refresh storm; otherwise the retry schedule stands).
    """
    if current.observed_generation != generation or current.last_refresh_time is None:
        return 0.0
    cond = current.condition(READY)
    if cond is None:
        return 0.0
    refused = cond.reason == URL_NOT_ALLOWED
    if refused == url_allowed:
        return 0.0  # the allow-list changed (the operator restarted with another one)
    elapsed = (now - current.last_refresh_time).total_seconds()
    if announced and cond.status == "True":  # at most one refresh per ANNOUNCED_GAP_SECONDS
        return max(min(ANNOUNCED_GAP_SECONDS, refresh_seconds) - elapsed, 0.0)
    settled = cond.status == "True" or refused  # a refused URL waits for a change, not a retry
    wait = refresh_seconds if settled else retry_delay(failures, refresh_seconds)
    return max(wait - elapsed, 0.0)
