"""The bundled built-in tools: ``check_disk`` and ``clean_logs``.

Both work on the operator's workspace directory (``--workspace`` / ``AGENTTASK_WORKSPACE``):
``check_disk`` reports the filesystem's usage and the largest files under the workspace;
``clean_logs`` deletes log files under ``<workspace>/logs``. ``clean_logs`` is idempotent: the
result of a call is recorded under its idempotency key in ``<workspace>/.agenttask/``, so a
redelivered call (same key) answers the same without deleting anything else.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

from agenttask_operator.effects.registry import ToolContext, ToolError, builtin_tool

LOG_PATTERNS = ("*.log", "*.log.*", "*.out", "*.gz")


def _workspace(ctx: ToolContext) -> Path:
    if ctx.workspace is None:
        raise ToolError("this operator has no workspace configured (--workspace)")
    if not ctx.workspace.is_dir():
        raise ToolError(f"workspace {ctx.workspace} does not exist")
    return ctx.workspace


def _largest(root: Path, limit: int = 10) -> list[dict[str, Any]]:
    files: list[tuple[int, str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".agenttask"]
        for f in filenames:
            p = Path(dirpath, f)
            try:
                files.append((p.stat().st_size, str(p.relative_to(root))))
            except OSError:
                continue
    files.sort(reverse=True)
    return [{"path": path, "bytes": size} for size, path in files[:limit]]


def _check_disk(root: Path) -> str:
    usage = shutil.disk_usage(root)
    largest = _largest(root)
    logs = root / "logs"
    log_bytes = (
        sum(p.stat().st_size for p in logs.rglob("*") if p.is_file()) if logs.is_dir() else 0
    )
    return json.dumps(
        {
            "workspace": str(root),
            "filesystem": {
                "totalBytes": usage.total,
                "usedBytes": usage.used,
                "freeBytes": usage.free,
                "usedPercent": round(100 * usage.used / usage.total, 1) if usage.total else 0,
            },
            "logsBytes": log_bytes,
            "largestFiles": largest,
        }
    )


@builtin_tool(
    "check_disk",
    "Report disk usage of the workspace: filesystem totals, bytes in logs/, largest files.",
    {"type": "object", "properties": {}, "additionalProperties": False},
)
async def check_disk(arguments: dict[str, Any], ctx: ToolContext) -> str:
    """Disk usage of the workspace's filesystem and its largest files."""
    return await asyncio.to_thread(_check_disk, _workspace(ctx))


def _clean_logs(root: Path, key: str, older_than_days: float) -> str:
    record_dir = root / ".agenttask" / "idempotency"
    record = record_dir / (hashlib.sha256(key.encode()).hexdigest() + ".json")
    if record.exists():
        return record.read_text()
    logs = root / "logs"
    cutoff = time.time() - older_than_days * 86400
    deleted: list[dict[str, Any]] = []
    if logs.is_dir():
        for p in sorted(logs.rglob("*")):
            if not p.is_file() or not any(fnmatch.fnmatch(p.name, pat) for pat in LOG_PATTERNS):
                continue
            st = p.stat()
            if st.st_mtime > cutoff:
                continue
            p.unlink(missing_ok=True)
            deleted.append({"path": str(p.relative_to(root)), "bytes": st.st_size})
    result = json.dumps(
        {
            "deletedFiles": len(deleted),
            "freedBytes": sum(d["bytes"] for d in deleted),
            "deleted": deleted[:50],
            "freeBytesNow": shutil.disk_usage(root).free,
        }
    )
    record_dir.mkdir(parents=True, exist_ok=True)
    tmp = record.with_suffix(".tmp")
    tmp.write_text(result)
    tmp.replace(record)  # atomic: a redelivery sees the whole record or none
    return result


@builtin_tool(
    "clean_logs",
    "Delete log files (*.log, *.log.N, *.out, *.gz) under the workspace's logs/ directory.",
    {
        "type": "object",
        "properties": {
            "olderThanDays": {
                "type": "number",
                "minimum": 0,
                "description": "only delete files last modified at least this many days ago",
            }
        },
        "additionalProperties": False,
    },
)
async def clean_logs(arguments: dict[str, Any], ctx: ToolContext) -> str:
    """Delete log files; idempotent per idempotency key."""
    days = arguments.get("olderThanDays", 0)
    valid = isinstance(days, int | float) and not isinstance(days, bool)
    if not valid or not math.isfinite(days) or days < 0:
        raise ToolError("olderThanDays must be a non-negative number")
    return await asyncio.to_thread(_clean_logs, _workspace(ctx), ctx.idempotency_key, float(days))
