"""Unit tests of the AgentToolServer kind: filter, digest, status patches, refresh plan, CRD."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from agenttask_operator.core import toolserver as core
from agenttask_operator.models.agentmodel import SecretLookup
from agenttask_operator.models.toolserver import (
    MAX_TOOLS,
    AgentToolServerSpec,
    AgentToolServerStatus,
    Discovery,
    HeaderFrom,
    McpTool,
    ToolFilter,
)

REPO = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((REPO / "crds" / "agenttask.dev_agenttoolservers.yaml").read_text())
SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)

ECHO = McpTool(
    name="echo",
    description="Echo it.",
    input_schema={"type": "object", "properties": {"message": {"type": "string"}}},
    read_only_hint=True,
    destructive_hint=False,
    idempotent_hint=True,
    open_world_hint=False,
)
BARE = McpTool(name="bare", input_schema={"type": "object"})
FOUND = Discovery(
    protocol_version="2025-11-25", server_name="s", server_version="1", tools=(ECHO, BARE)
)


def status_after(patch: dict[str, Any]) -> AgentToolServerStatus:
    return AgentToolServerStatus.model_validate({k: v for k, v in patch.items() if v is not None})


def declared(schema: dict[str, Any], value: Any, path: str = "status") -> None:
    """Every field of ``value`` is declared in ``schema`` (else the API server prunes it)."""
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for k, v in value.items():
            assert k in props, f"{path}.{k} is not declared in the CRD"
            if v is not None:
                declared(props[k], v, f"{path}.{k}")
    elif isinstance(value, list):
        for item in value:
            declared(schema["items"], item, f"{path}[]")


def test_the_digest_is_of_the_canonical_schema() -> None:
    a = {"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]}
    b = {"required": ["x"], "properties": {"x": {"type": "string"}}, "type": "object"}
    assert core.schema_digest(a) == core.schema_digest(b)
    assert core.schema_digest(a).startswith("sha256:")
    assert len(core.schema_digest(a)) == len("sha256:") + 64
    assert core.schema_digest(a) != core.schema_digest(a | {"required": []})


def test_the_filter_includes_then_excludes_and_counts_a_name_once() -> None:
    tools = (ECHO, BARE, ECHO.model_copy(update={"description": "again"}))
    assert core.apply_filter(tools, ToolFilter()) == (ECHO, BARE)
    assert core.apply_filter(tools, ToolFilter(include=("bare", "x"))) == (BARE,)
    assert core.apply_filter(tools, ToolFilter(exclude=("echo",))) == (BARE,)
    assert core.apply_filter(tools, ToolFilter(include=("echo",), exclude=("echo",))) == ()


def test_hints_get_mcp_defaults_and_long_descriptions_are_clipped() -> None:
    bare = core.tool_status(BARE.model_copy(update={"description": "d" * 5000}))
    assert (bare.read_only_hint, bare.destructive_hint, bare.idempotent_hint) == (
        False,
        True,
        False,
    )
    assert bare.open_world_hint is True
    assert bare.description is not None
    assert len(bare.description) == 1024
    echo = core.tool_status(ECHO)
    assert (echo.read_only_hint, echo.destructive_hint, echo.open_world_hint) == (
        True,
        False,
        False,
    )


def test_a_discovery_writes_tools_version_and_ready() -> None:
    patch = core.discovered_patch(
        AgentToolServerStatus(), 3, FOUND, ToolFilter(include=("echo", "nope")), T0
    )
    declared(SCHEMA["properties"]["status"], patch)
    assert patch["observedGeneration"] == 3
    assert patch["protocolVersion"] == "2025-11-25"
    assert patch["serverInfo"] == {"name": "s", "version": "1"}
    assert [t["name"] for t in patch["tools"]] == ["echo"]
    assert patch["toolCount"] == 1
    assert patch["lastRefreshTime"] == "2026-01-01T12:00:00Z"
    (cond,) = patch["conditions"]
    assert (cond["type"], cond["status"], cond["reason"]) == ("Ready", "True", "Discovered")
    assert cond["observedGeneration"] == 3
    assert cond["message"] == (
        "1 of 2 tools offered by s 1 (protocol 2025-11-25); toolFilter.include names tools the "
        "server does not offer: nope"
    )


def test_too_many_tools_is_not_ready() -> None:
    many = tuple(McpTool(name=f"t{i}") for i in range(MAX_TOOLS + 1))
    found = FOUND.model_copy(update={"tools": many})
    patch = core.discovered_patch(AgentToolServerStatus(), 1, found, ToolFilter(), T0)
    assert patch["conditions"][0]["reason"] == "TooManyTools"
    ok = core.discovered_patch(AgentToolServerStatus(), 1, found, ToolFilter(exclude=("t0",)), T0)
    assert ok["toolCount"] == MAX_TOOLS


def test_a_failure_keeps_the_tools_of_the_same_generation_only() -> None:
    ready = status_after(core.discovered_patch(AgentToolServerStatus(), 2, FOUND, ToolFilter(), T0))
    down = core.Problem("ServerUnavailable", "connection error")
    later = T0 + timedelta(minutes=5)
    same = core.failed_patch(ready, 2, down, later)
    declared(SCHEMA["properties"]["status"], same)
    assert "tools" not in same
    assert same["conditions"][0]["lastTransitionTime"] == "2026-01-01T12:05:00Z"
    edited = core.failed_patch(ready, 3, down, later)
    assert edited["tools"] is None
    assert edited["protocolVersion"] is None
    assert edited["toolCount"] == 0


def test_the_transition_time_moves_only_when_ready_flips() -> None:
    down = core.Problem("ServerUnavailable", "x")
    first = status_after(core.failed_patch(AgentToolServerStatus(), 1, down, T0))
    again = core.failed_patch(first, 1, core.Problem("ServerRefused", "y"), T0 + timedelta(1))
    assert again["conditions"][0]["lastTransitionTime"] == "2026-01-01T12:00:00Z"
    assert again["conditions"][0]["reason"] == "ServerRefused"


def test_when_the_next_refresh_is_due() -> None:
    ready = status_after(core.discovered_patch(AgentToolServerStatus(), 1, FOUND, ToolFilter(), T0))
    soon = T0 + timedelta(seconds=100)
    assert core.seconds_until_refresh(ready, 1, 300, 0, True, soon) == 200
    assert core.seconds_until_refresh(ready, 2, 300, 0, True, soon) == 0  # spec changed
    assert core.seconds_until_refresh(ready, 1, 300, 0, False, soon) == 0  # allow-list changed
    assert core.seconds_until_refresh(AgentToolServerStatus(), 1, 300, 0, True, T0) == 0
    down = status_after(core.failed_patch(ready, 1, core.Problem("ServerUnavailable", "x"), T0))
    assert core.seconds_until_refresh(down, 1, 300, 1, True, T0) == 1
    assert core.seconds_until_refresh(down, 1, 300, 4, True, T0) == 8
    assert core.seconds_until_refresh(down, 1, 300, 4, True, T0 + timedelta(seconds=9)) == 0
    refused = core.Problem(core.URL_NOT_ALLOWED, "x")
    off = status_after(core.failed_patch(ready, 1, refused, T0))
    assert core.seconds_until_refresh(off, 1, 300, 7, False, T0) == 300  # no retries
    assert core.seconds_until_refresh(off, 1, 300, 7, True, T0) == 0  # now allowed


def test_an_announced_change_makes_a_ready_server_due_at_once() -> None:
    ready = status_after(core.discovered_patch(AgentToolServerStatus(), 1, FOUND, ToolFilter(), T0))
    soon = T0 + timedelta(seconds=100)
    assert core.seconds_until_refresh(ready, 1, 3600, 0, True, soon, announced=True) == 0
    assert core.seconds_until_refresh(ready, 1, 3600, 0, True, soon, announced=False) == 3500
    # A server announcing without end gets one refresh every ANNOUNCED_GAP_SECONDS at most.
    just = T0 + timedelta(seconds=0.5)
    gap = core.ANNOUNCED_GAP_SECONDS - 0.5
    assert core.seconds_until_refresh(ready, 1, 3600, 0, True, just, announced=True) == gap
    assert core.seconds_until_refresh(ready, 1, 1, 0, True, just, announced=True) == 0.5
    down = status_after(core.failed_patch(ready, 1, core.Problem("ServerUnavailable", "x"), T0))
    assert core.seconds_until_refresh(down, 1, 3600, 4, True, T0, announced=True) == 8
    off = status_after(core.failed_patch(ready, 1, core.Problem(core.URL_NOT_ALLOWED, "x"), T0))
    assert core.seconds_until_refresh(off, 1, 3600, 7, False, T0, announced=True) == 3600


def test_retries_grow_and_are_capped() -> None:
    assert [core.retry_delay(n, 300) for n in range(1, 11)] == [
        1, 2, 4, 8, 16, 32, 64, 128, 256, 300,
    ]  # fmt: skip
    assert core.retry_delay(50, 10) == 10
    assert core.retry_delay(1000, 86400) == core.MAX_RETRY_SECONDS


HEADER = HeaderFrom.model_validate(
    {"name": "Authorization", "secretKeyRef": {"name": "s", "key": "k"}, "prefix": "Bearer "}
)


@pytest.mark.parametrize(
    ("lookup", "value", "reason"),
    [
        (SecretLookup.NOT_FOUND, None, "SecretNotFound"),
        (SecretLookup.FORBIDDEN, None, "SecretForbidden"),
        (SecretLookup.NO_KEY, None, "KeyNotFound"),
        (SecretLookup.EMPTY, None, "KeyNotFound"),
        (SecretLookup.FOUND, "ok\r\nX-Evil: 1", "SecretInvalid"),
        (SecretLookup.FOUND, "caf\u00e9", "SecretInvalid"),
        (SecretLookup.FOUND, "tok-123", None),
    ],
)
def test_what_a_header_secret_lookup_means(
    lookup: SecretLookup, value: str | None, reason: str | None
) -> None:
    problem = core.secret_problem("ns", HEADER, lookup, value)
    assert (problem.reason if problem else None) == reason
    if problem is not None:
        assert "Secret ns/s (header Authorization)" in problem.message
        assert value is None or value not in problem.message


def test_tool_changes_are_described() -> None:
    before = (core.tool_status(ECHO), core.tool_status(BARE))
    after = (
        core.tool_status(ECHO.model_copy(update={"input_schema": {"type": "object"}})),
        core.tool_status(McpTool(name="new")),
    )
    assert core.tools_changed(before, before) is None
    assert core.tools_changed(before, after) == "added: new; removed: bare; schema changed: echo"


def test_the_spec_reads_the_crd_defaults_and_clamps() -> None:
    spec_schema = SCHEMA["properties"]["spec"]["properties"]
    spec = AgentToolServerSpec.model_validate({"url": "http://x/mcp"})
    assert spec.timeout_seconds == spec_schema["timeoutSeconds"]["default"]
    assert spec.refresh_seconds == spec_schema["refreshSeconds"]["default"]
    assert spec_schema["refreshSeconds"]["minimum"] == 5
    clamped = AgentToolServerSpec.model_validate(
        {"url": "http://x/mcp", "refreshSeconds": 1, "timeoutSeconds": 10**9}
    )
    assert (clamped.refresh_seconds, clamped.timeout_seconds) == (5, 86400)
    full = AgentToolServerSpec.model_validate(
        {
            "url": "http://x/mcp",
            "headersFrom": [{"name": "A", "secretKeyRef": {"name": "s", "key": "k"}}],
            "tools": [{"name": "t", "approval": "Required", "onUnknownOutcome": "Fail"}],
        }
    )
    assert full.headers_from[0].prefix == ""
    assert full.tools[0].on_unknown_outcome == "Fail"
    assert full.tools[0].idempotent is None
