"""``AgentToolServer`` (agenttask.dev/v1alpha1): an MCP server reached over streamable HTTP.

The CRD schema (crds/agenttask.dev_agenttoolservers.yaml) is the contract. Numbers are clamped
on parse to the CRD's bounds, like ``AgentTask.spec`` (see ``models.spec``). Also here: what one
discovery found (:class:`Discovery`, built by ``effects.mcp``, read by ``core.toolserver``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from agenttask_operator.models.base import Model, Time
from agenttask_operator.models.limits import DAY, Range
from agenttask_operator.models.spec import OnUnknownOutcome, SecretKeyRef, TimeoutSeconds
from agenttask_operator.models.status import Condition

KIND, PLURAL = "AgentToolServer", "agenttoolservers"
READY = "Ready"  # the type of the one condition the operator writes

REFRESH_SECONDS = Range(5, DAY)  # spec.refreshSeconds
MAX_TOOLS = 500  # tools written to status at most (a server offering more must be filtered)
DESCRIPTION_LIMIT = 1024  # characters of a tool's description kept in status


def _clamp_refresh(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return REFRESH_SECONDS.clamp(float(value))
    return value


RefreshSeconds = Annotated[float, BeforeValidator(_clamp_refresh)]
Approval = Literal["Required", "Never", "Auto"]


class HeaderFrom(Model):
    """An HTTP header sent on every request, its value read from a Secret of this namespace."""

    name: str
    secret_key_ref: SecretKeyRef
    prefix: str = ""


class ToolFilter(Model):
    """Which of the server's tools are offered: ``include`` (unset: all), minus ``exclude``."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


class ToolOverride(Model):
    """Per-tool settings that win over the server's hints (see ``core.approval``)."""

    name: str
    approval: Approval | None = None
    idempotent: bool | None = None
    on_unknown_outcome: OnUnknownOutcome | None = None


class AgentToolServerSpec(Model):
    """Where the MCP server is, how to authenticate, which tools, how often to look again."""

    url: str
    headers_from: tuple[HeaderFrom, ...] = ()
    timeout_seconds: TimeoutSeconds = 30.0
    tool_filter: ToolFilter = ToolFilter()
    refresh_seconds: RefreshSeconds = 300.0
    tools: tuple[ToolOverride, ...] = ()
    approval: Approval = "Auto"

    def override(self, name: str) -> ToolOverride | None:
        """The per-tool settings for ``name``, if any."""
        return next((t for t in self.tools if t.name == name), None)


class ServerInfo(Model):
    """The server's name and version, as it announced them."""

    name: str | None = None
    version: str | None = None


class ToolStatus(Model):
    """One discovered tool in ``status.tools``: hints with the MCP defaults filled in."""

    name: str
    description: str | None = None
    input_schema_digest: str
    read_only_hint: bool = False
    destructive_hint: bool = True
    idempotent_hint: bool = False
    open_world_hint: bool = True


class AgentToolServerStatus(Model):
    """What the operator found when it last looked."""

    observed_generation: int | None = None
    protocol_version: str | None = None
    server_info: ServerInfo | None = None
    tools: tuple[ToolStatus, ...] = ()
    tool_count: int = 0
    last_refresh_time: Time | None = None
    conditions: tuple[Condition, ...] = ()

    def condition(self, type_: str = READY) -> Condition | None:
        """The condition of that type, if any."""
        return next((c for c in self.conditions if c.type == type_), None)


class McpTool(Model):
    """A tool as the server listed it; a hint is None when the server did not give it."""

    name: str
    description: str | None = None
    input_schema: dict[str, Any] = Field(default_factory=dict)
    read_only_hint: bool | None = None
    destructive_hint: bool | None = None
    idempotent_hint: bool | None = None
    open_world_hint: bool | None = None


class Discovery(Model):
    """What one ``tools/list`` (all pages) found, and the session it ran in."""

    protocol_version: str
    server_name: str | None = None
    server_version: str | None = None
    tools: tuple[McpTool, ...] = ()
