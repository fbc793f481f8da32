"""Where ``kubectl agenttask`` writes, and in which format (``-o json|yaml``)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

import yaml

from agenttask_operator.models import Entry


def now() -> datetime:
    """The wall clock, in UTC."""
    return datetime.now(UTC)


def dump(data: Any, output: str) -> str:
    """``data`` as ``-o json`` or ``-o yaml`` prints it."""
    if output == "json":
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    return str(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def as_list(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Objects as kubectl prints several: a ``List``."""
    return {"apiVersion": "v1", "kind": "List", "items": items, "metadata": {}}


@dataclass
class Io:
    """Where output goes, and how to ask the user (tests give their own)."""

    out: TextIO = sys.stdout
    err: TextIO = sys.stderr
    stdin: TextIO = sys.stdin

    def print(self, text: str) -> None:
        """Write ``text`` and flush (``logs -f`` is read as it comes)."""
        self.out.write(text)
        self.out.flush()


def raw_entries(entries: tuple[Entry, ...], start: int) -> list[dict[str, Any]]:
    """Entries as stored (camelCase JSON), numbered as steps from ``start``."""
    return [{"step": n, **e.to_api()} for n, e in enumerate(entries, start=start)]
