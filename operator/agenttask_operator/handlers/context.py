"""What every task's loop shares: API client, HTTP session, built-ins, operator settings."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from agenttask_operator.effects.kube import Kube
from agenttask_operator.effects.registry import BuiltinTool


@dataclass(frozen=True)
class Settings:
    """Operator-wide settings, from flags and environment."""

    workspace: Path | None = None
    default_base_url: str | None = None

    @classmethod
    def from_env(cls) -> Settings:
        """``AGENTTASK_WORKSPACE`` and ``OPENAI_BASE_URL``."""
        ws = os.environ.get("AGENTTASK_WORKSPACE")
        return cls(
            workspace=Path(ws).resolve() if ws else None,
            default_base_url=os.environ.get("OPENAI_BASE_URL") or None,
        )


@dataclass
class Context:
    """Shared by all task loops of one operator process."""

    kube: Kube
    session: aiohttp.ClientSession
    builtins: dict[str, BuiltinTool]
    settings: Settings
    wakeups: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)

    def wakeup(self, namespace: str, name: str) -> asyncio.Event:
        """The event set whenever the task changes (so that waits end early)."""
        return self.wakeups.setdefault((namespace, name), asyncio.Event())
