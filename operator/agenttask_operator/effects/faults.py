"""Fault-injection points for crash tests. Inert unless ``AGENTTASK_FAULT_PAUSE`` is set.

``AGENTTASK_FAULT_PAUSE=point[,point…]`` makes the operator stop at each named point: it
touches ``$AGENTTASK_FAULT_DIR/<point>`` and sleeps forever, so that a test can SIGKILL it
exactly there. Points: ``after-append:<LLM|Tool>:<iteration>`` (a step's result is stored),
``before-intent:<LLM|Tool>:<iteration>`` (the next step is about to be recorded) and
``fork-copy:<step>`` (a fork is about to copy its source's step ``<step>``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


async def checkpoint(point: str) -> None:
    """Pause forever at ``point`` if the environment asks for it."""
    wanted = os.environ.get("AGENTTASK_FAULT_PAUSE", "")
    if not wanted or point not in wanted.split(","):
        return
    log.warning("fault injection: paused at %s", point)
    marker_dir = Path(os.environ.get("AGENTTASK_FAULT_DIR", "."))
    marker_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - test-only, instant
    (marker_dir / point.replace(":", "_")).touch()
    await asyncio.Event().wait()
